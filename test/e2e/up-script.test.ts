/**
 * The README's first command: `scripts/up.sh --once` starts a daemon, boots
 * two VMs that ping each other through it, shows status and ports, and
 * cleans up. Run with a temp control socket, state and run dir so a real
 * installation is not disturbed, and without set-up (the test run did it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runCli } from '../helpers/daemon.js';
import { REPO_ROOT } from '../helpers/vm.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function upOnce(dir: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [join(REPO_ROOT, 'scripts', 'up.sh'), '--once'],
      {
        timeout: 240_000,
        maxBuffer: 16 * 1024 * 1024,
        env: {
          ...process.env,
          VMLINK_DEMO_SKIP_SETUP: '1',
          VMLINK_DEMO_CONTROL: join(dir, 'vmlink.sock'),
          VMLINK_DEMO_STATE_DIR: join(dir, 'state'),
          VMLINK_DEMO_RUN_DIR: join(dir, 'run'),
        },
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

describe('scripts/up.sh', { timeout: 300_000 }, () => {
  let dir: string | undefined;

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('--once shows two VMs pinging through the daemon, its status and ports, then stops everything', async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-up-'));
    const r = await upOnce(dir);
    const why = async () =>
      `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}\n--- daemon log ---\n${await readFile(
        join(dir!, 'run', 'demo-daemon.log'),
        'utf8',
      ).catch(() => '(none)')}`;
    assert.equal(r.code, 0, await why());
    assert.equal(r.stdout.match(/3 packets transmitted, 3 packets received/g)?.length, 2, await why());
    assert.match(r.stdout, /host\s+demo/);
    assert.match(r.stdout, /^vm1\s+stream\s+demo\s+up/m);
    assert.match(r.stdout, /^vm2\s+stream\s+demo\s+up/m);
    // It ends by saying how to get a guest of one's own.
    assert.match(r.stdout, /guest-image --out \S+ --port vm1/);
    const config = await readFile(join(dir, 'run', 'demo.yaml'), 'utf8');
    assert.match(config, /vni: 100/);
    // The script stopped its daemon on the way out.
    const status = await runCli(['status'], { control: join(dir, 'vmlink.sock') });
    assert.notEqual(status.code, 0, status.stdout);
  });

  test('refuses an unknown argument with exit status 2', async () => {
    const r = await new Promise<Run>((resolve) => {
      execFile('bash', [join(REPO_ROOT, 'scripts', 'up.sh'), '--bogus'], (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown argument "--bogus"/);
  });

  test('--help prints a usage text with the options and the environment, not lines of the script', async () => {
    const r = await new Promise<Run>((resolve) => {
      execFile('bash', [join(REPO_ROOT, 'scripts', 'up.sh'), '--help'], (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: \.\/scripts\/up\.sh \[--once\] \[--help\]$/m);
    assert.match(r.stdout, /^ {2}--once {6}exit after the pings/m);
    assert.match(r.stdout, /VMLINK_DEMO_CONTROL/);
    assert.doesNotMatch(r.stdout, /set -euo|^#/m);
  });
});
