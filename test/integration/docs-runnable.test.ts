/**
 * The docs' examples run: every block marked `runnable` in README.md and
 * docs/*.md (test/helpers/runnable-docs.ts) is run in order, one document per
 * scratch directory, with a real daemon the examples start themselves and the
 * real `vmlink` command. An example that no longer works fails here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VMLINK_BIN } from '../helpers/daemon.js';
import { runnableBlocks, scriptOf } from '../helpers/runnable-docs.js';
import { REPO_ROOT } from '../helpers/vm.js';

const DOCS = [
  'README.md',
  ...(await readdir(join(REPO_ROOT, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`),
];

/** Runs a bash script; resolves with its status and output. */
function bash(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', script], { env, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('runnable examples in the docs', { timeout: 600_000 }, () => {
  const scratches: string[] = [];
  let bin: string;
  before(async () => {
    bin = await mkdtemp(join(tmpdir(), 'vmlink-docs-bin-'));
    await writeFile(join(bin, 'vmlink'), `#!/bin/sh\nexec "${process.execPath}" "${VMLINK_BIN}" "$@"\n`);
    await chmod(join(bin, 'vmlink'), 0o755);
  });
  after(async () => {
    for (const d of [bin, ...scratches]) await rm(d, { recursive: true, force: true });
  });

  test('README.md and docs/cli.md have runnable examples (quick start; daemon, network, port, fdb, qemu-args)', async () => {
    const count = async (f: string) => runnableBlocks(await readFile(join(REPO_ROOT, f), 'utf8')).length;
    assert.ok((await count('README.md')) >= 2);
    assert.ok((await count('docs/cli.md')) >= 6);
  });

  for (const doc of DOCS) {
    test(`the runnable examples of ${doc} work, in order`, async (t) => {
      const blocks = runnableBlocks(await readFile(join(REPO_ROOT, doc), 'utf8'));
      if (blocks.length === 0) {
        t.skip('no runnable examples');
        return;
      }
      const scratch = await mkdtemp(join(tmpdir(), 'vmlink-docs-'));
      scratches.push(scratch);
      const env = {
        ...process.env,
        PATH: `${bin}:${process.env['PATH'] ?? ''}`,
        NO_COLOR: '1',
        // The default control socket, moved into the scratch directory like the other system paths.
        VMLINK_CONTROL: `${scratch}/run/vmlink/vmlink.sock`,
        VMLINK_LOG_LEVEL: 'warn',
      };
      const r = await bash(scriptOf(doc, blocks, scratch), env);
      assert.equal(
        r.code,
        0,
        `an example of ${doc} failed (the last "== FILE:LINE" names its block):\n${r.stderr}\n--- stdout ---\n${r.stdout}`,
      );
    });
  }
});
