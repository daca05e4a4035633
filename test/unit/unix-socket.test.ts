import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { claimUnixPath, type Probe, UnixPathError } from '../../src/util/unix-socket.js';

const dirs: string[] = [];
const servers: Server[] = [];
after(async () => {
  for (const s of servers) s.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function temp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'vmlink-us-'));
  dirs.push(d);
  return d;
}

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    servers.push(s);
    s.once('error', reject);
    s.listen(path, () => resolve(s));
  });
}

test('a free path in a missing directory: the directory is made, nothing was removed', async () => {
  const path = join(await temp(), 'a', 'b', 'x.sock');
  assert.equal(await claimUnixPath(path), false);
  assert.ok((await lstat(join(path, '..'))).isDirectory());
});

test('a socket file nobody answers on is removed', async () => {
  const path = join(await temp(), 'stale.sock');
  // A process that bound the path and went away without removing it.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
  assert.ok((await lstat(path)).isSocket());
  assert.equal(await claimUnixPath(path), true);
  await assert.rejects(lstat(path), /ENOENT/);
});

test('a live socket is refused with live set, and left in place', async () => {
  const path = join(await temp(), 'live.sock');
  await listen(path);
  await assert.rejects(claimUnixPath(path), (err: unknown) => {
    assert.ok(err instanceof UnixPathError);
    assert.equal(err.live, true);
    return true;
  });
  assert.ok((await lstat(path)).isSocket());
});

test('a regular file in the way is refused and left alone', async () => {
  const path = join(await temp(), 'file');
  await writeFile(path, 'keep me');
  await assert.rejects(claimUnixPath(path), (err: unknown) => {
    assert.ok(err instanceof UnixPathError);
    assert.equal(err.live, false);
    assert.match(err.reason, /not a socket is in the way/);
    return true;
  });
  assert.ok((await lstat(path)).isFile());
});

test('a probe that fails otherwise is reported, and the file stays', async () => {
  const path = join(await temp(), 'odd.sock');
  await listen(path);
  const odd = async (): Promise<Probe> => ({ error: 'EACCES' });
  await assert.rejects(claimUnixPath(path, odd), /cannot probe the existing socket: EACCES/);
  assert.ok((await lstat(path)).isSocket());
});
