import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { mkdirp } from '../../src/util/fs.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function temp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'vmlink-fs-'));
  dirs.push(d);
  return d;
}

test('creates every missing parent with the mode and returns the first one it created', async () => {
  const base = await temp();
  const first = await mkdirp(join(base, 'a', 'b', 'c'), 0o700);
  assert.equal(first, join(base, 'a'));
  const st = await stat(join(base, 'a', 'b', 'c'));
  assert.ok(st.isDirectory());
  assert.equal(st.mode & 0o777, 0o700);
});

test('returns undefined for a directory that already exists', async () => {
  const base = await temp();
  assert.equal(await mkdirp(base), undefined);
});

test('refuses when a file is in the way', async () => {
  const base = await temp();
  await writeFile(join(base, 'f'), 'x');
  await assert.rejects(mkdirp(join(base, 'f', 'sub')), { code: 'ENOTDIR' });
  await assert.rejects(mkdirp(join(base, 'f')), { code: 'EEXIST' });
});

test('settles with an error for a path under /proc instead of hanging', async () => {
  await assert.rejects(
    mkdirp('/proc/vmlink-no-such-dir/sub'),
    (err: NodeJS.ErrnoException) => typeof err.code === 'string',
  );
});
