/**
 * The systemd unit (packaging/vmlink.service) and `vmlink install-service`:
 * the shipped file is what the command writes with the default paths,
 * `systemd-analyze verify` finds nothing wrong with the unit and `systemd-analyze
 * security` rates its sandbox, the command writes the unit and a default config
 * (and never replaces a config), adds ReadWritePaths= for what the config
 * writes, and the ExecStart line it writes starts a daemon that reports ready.
 * Installs go under `--prefix` (a temp root): nothing of this machine changes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_CONFIG, DEFAULT_EXEC, renderUnit } from '../../src/cli/service-unit.js';
import { parseConfig } from '../../src/config/load.js';
import { run, runTool } from '../helpers/cli-daemon.js';
import { NotifySocket } from '../helpers/notify-socket.js';
import { REPO_ROOT } from '../helpers/vm.js';

const UNIT = 'etc/systemd/system/vmlink.service';
const hasAnalyze = existsSync('/usr/bin/systemd-analyze') || existsSync('/bin/systemd-analyze');

describe('the systemd unit and vmlink install-service', { timeout: 120_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-unit-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  let n = 0;
  const root = async () => {
    const r = join(dir, `root${n++}`);
    await mkdir(r);
    return r;
  };

  test('the shipped packaging/vmlink.service is the unit install-service writes with the default paths', async () => {
    const shipped = await readFile(join(REPO_ROOT, 'packaging', 'vmlink.service'), 'utf8');
    assert.equal(
      shipped,
      renderUnit({ exec: DEFAULT_EXEC, config: DEFAULT_CONFIG, readWritePaths: [], protectHome: 'yes' }),
      'regenerate packaging/vmlink.service from src/cli/service-unit.ts',
    );
  });

  test('writes the unit and a default config that validates, then keeps that config on a second run', async () => {
    const r = await root();
    const first = await run(['install-service', '--prefix', r]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`wrote ${r}/${UNIT}\n`));
    assert.match(first.stdout, /a default config \(host "[^"]+", no networks or ports yet\)/);
    assert.match(first.stdout, /skipped systemctl daemon-reload \(--prefix/);
    const unit = await readFile(join(r, UNIT), 'utf8');
    // ExecStart runs this node with this checkout's command.
    const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
    assert.equal(exec, `${process.execPath} ${join(REPO_ROOT, 'bin', 'vmlink.js')} daemon --config ${DEFAULT_CONFIG}`);
    const cfg = await readFile(join(r, DEFAULT_CONFIG), 'utf8');
    assert.deepEqual(parseConfig(cfg).ports, []);

    await writeFile(join(r, DEFAULT_CONFIG), `${cfg}# edited\n`);
    const second = await run(['install-service', '--prefix', r]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /kept .*vmlink\.yaml \(it exists and is valid\)/);
    assert.match(await readFile(join(r, DEFAULT_CONFIG), 'utf8'), /# edited\n$/);
  });

  test('--dry-run prints the unit and writes nothing', async () => {
    const r = await root();
    const res = await run(['install-service', '--prefix', r, '--dry-run']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^Type=notify$/m);
    assert.match(res.stderr, /would write .*vmlink\.service/);
    assert.equal(existsSync(join(r, 'etc')), false);
  });

  test('adds ReadWritePaths= for the socket directories and export roots the config writes, and warns of /tmp', async () => {
    const r = await root();
    const cfg = join(r, 'etc/vmlink/custom.yaml');
    await mkdir(join(r, 'etc/vmlink'), { recursive: true });
    await writeFile(
      cfg,
      [
        'host: { id: a, control: /run/vmlink/a.sock, state_dir: /var/lib/vmlink/a }',
        'networks: [{ name: lab, vni: 100 }]',
        'ports:',
        '  - { name: vm1, network: lab, kind: stream, listen: "unix:/srv/vmlink/sockets/vm1.sock" }',
        '  - { name: vm2, network: lab, kind: vhost-user, listen: "unix:/srv/vmlink/vm2.sock" }',
        '  - { name: vm3, network: lab, kind: stream, connect: "unix:/opt/qemu/vm3.sock" }',
        '  - { name: vm4, network: lab, kind: dgram, local: "unix:/tmp/vm4-in.sock", remote: "unix:/tmp/vm4.sock" }',
        '  - { name: sw, network: lab, kind: vde, dir: /srv/vde/sw1 }',
        'storage: { listen: ["unix:/run/vmlink/nbd.sock"], roots: [/srv/images, /var/lib/vmlink/exports] }',
        '',
      ].join('\n'),
    );
    const res = await run(['install-service', '--prefix', r, '--config', '/etc/vmlink/custom.yaml']);
    assert.equal(res.code, 0, res.stderr);
    const unit = await readFile(join(r, UNIT), 'utf8');
    // Sorted, nested ones folded into their parent, /run/vmlink and /var/lib/vmlink left to the unit itself.
    assert.deepEqual(
      unit.split('\n').filter((l) => l.startsWith('ReadWritePaths=')),
      [
        'ReadWritePaths=-/srv/images',
        'ReadWritePaths=-/srv/vde',
        'ReadWritePaths=-/srv/vmlink',
        'ReadWritePaths=-/tmp',
      ],
    );
    assert.match(unit, /^ExecStart=.* daemon --config \/etc\/vmlink\/custom\.yaml$/m);
    assert.match(res.stdout, /note: \/tmp is in \/tmp: the service has its own \(PrivateTmp=yes\)/);
  });

  test('refuses a relative --config and an --exec that is not absolute (status 2), and an invalid config', async () => {
    const rel = await run(['install-service', '--config', 'vmlink.yaml', '--dry-run']);
    assert.equal(rel.code, 2);
    assert.match(rel.stderr, /--config "vmlink\.yaml" is not an absolute path/);
    const ex = await run(['install-service', '--exec', 'vmlink', '--dry-run']);
    assert.equal(ex.code, 2);
    assert.match(ex.stderr, /--exec "vmlink" does not start with an absolute path/);
    const r = await root();
    await mkdir(join(r, 'etc/vmlink'), { recursive: true });
    await writeFile(join(r, DEFAULT_CONFIG), 'host: { id: a }\nnetworks: [{ name: lab, vni: 0 }]\n');
    const bad = await run(['install-service', '--prefix', r]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /networks\[0\]\.vni/);
    assert.equal(existsSync(join(r, UNIT)), false, 'no unit for a config that cannot start');
  });

  test('systemd-analyze verify finds nothing wrong with the unit', {
    skip: !hasAnalyze && 'no systemd-analyze',
  }, async () => {
    const r = await root();
    assert.equal((await run(['install-service', '--prefix', r])).code, 0);
    // verify checks ExecStart's program exists: the installed unit names this checkout's.
    const res = await runTool('systemd-analyze', ['verify', join(r, UNIT)]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr.trim(), '', 'no warning about any option');
  });

  test('systemd-analyze security rates the sandbox OK or better', {
    skip: !hasAnalyze && 'no systemd-analyze',
  }, async () => {
    const r = await root();
    assert.equal((await run(['install-service', '--prefix', r])).code, 0);
    const res = await runTool('systemd-analyze', ['security', '--offline=yes', join(r, UNIT)]);
    const m = /Overall exposure level for vmlink\.service: ([\d.]+) (\w+)/.exec(res.stdout);
    assert.ok(m, res.stdout + res.stderr);
    assert.ok(['SAFE', 'OK'].includes(m[2] as string), `exposure ${m[1]} ${m[2]}`);
  });

  test('the ExecStart line it writes starts the daemon, which reports READY=1 and stops at SIGTERM', async () => {
    const r = await root();
    const cfg = join(r, 'real.yaml');
    await writeFile(
      cfg,
      [
        `host: { id: unit, control: ${join(r, 'ctl.sock')}, state_dir: ${join(r, 'state')} }`,
        'networks: [{ name: lab, vni: 100 }]',
        `ports: [{ name: vm1, network: lab, kind: stream, listen: "unix:${join(r, 'vm1.sock')}" }]`,
        '',
      ].join('\n'),
    );
    assert.equal((await run(['install-service', '--prefix', r, '--config', cfg])).code, 0);
    const unit = await readFile(join(r, UNIT), 'utf8');
    const words = (/^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '').split(' ');
    assert.deepEqual(words.slice(-3), ['daemon', '--config', cfg]);
    const notify = await NotifySocket.open();
    const child = spawn(words[0] as string, words.slice(1), {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NOTIFY_SOCKET: notify.path },
    });
    let err = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err += s;
    });
    try {
      const ready = await notify.next('READY', { value: '1' });
      assert.match(ready.fields.get('STATUS') ?? '', /1 port: 1 listening/);
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      assert.equal((await exited)[0], 0, err);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await notify.close();
    }
  });
});
