import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import {
  claimUnixPath,
  createUnixSocket,
  PRIVATE_SOCKET,
  type Probe,
  resolveSocketAccess,
  UnixPathError,
} from '../../src/util/unix-socket.js';

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

/** Expects claimUnixPath(path) to refuse with a UnixPathError; resolves with it. */
async function refusal(path: string): Promise<UnixPathError> {
  let got: unknown;
  await assert.rejects(claimUnixPath(path), (err: unknown) => {
    got = err;
    return err instanceof UnixPathError;
  });
  return got as UnixPathError;
}

/** Runs `fn` with a new server (closed in after()) under umask 000, then restores the umask. */
async function underUmask000(fn: (server: Server) => Promise<void>): Promise<void> {
  const server = createServer();
  servers.push(server);
  const old = process.umask(0);
  try {
    await fn(server);
  } finally {
    process.umask(old);
  }
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
  assert.equal((await refusal(path)).live, true);
  assert.ok((await lstat(path)).isSocket());
});

test('a regular file in the way is refused and left alone', async () => {
  const path = join(await temp(), 'file');
  await writeFile(path, 'keep me');
  const err = await refusal(path);
  assert.equal(err.live, false);
  assert.match(err.reason, /not a socket is in the way/);
  assert.ok((await lstat(path)).isFile());
});

test('a probe that fails otherwise is reported, and the file stays', async () => {
  const path = join(await temp(), 'odd.sock');
  await listen(path);
  const odd = async (): Promise<Probe> => ({ error: 'EACCES' });
  await assert.rejects(claimUnixPath(path, odd), /cannot probe the existing socket: EACCES/);
  assert.ok((await lstat(path)).isSocket());
});

test('a socket made under umask 000 is 0600, and its path does not exist until it has its mode', async () => {
  const dir = await temp();
  const path = join(dir, 'm.sock');
  await underUmask000((server) =>
    createUnixSocket(
      path,
      PRIVATE_SOCKET,
      async (at) => {
        // Bound elsewhere: in a private directory of ours, mode 0700, beside the final path.
        await assert.rejects(lstat(path), /ENOENT/);
        const d = await stat(dirname(at));
        assert.equal(d.mode & 0o777, 0o700);
        assert.equal(dirname(dirname(at)), dir);
        await new Promise<void>((resolve) => server.listen(at, resolve));
      },
      () => void server.close(),
    ),
  );
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(dir), ['m.sock']);
  // It answers at its final path.
  const c = connect(path);
  await once(c, 'connect');
  c.destroy();
});

test('a path too long for a private directory beside it is bound in place, still 0600 under umask 000', async () => {
  const top = await temp();
  // A directory of 95 bytes: the final path fits sun_path (107 bytes), the private one
  // (dir/.vmlink-XXXXXX/s, 17 bytes more) would not.
  const dir = join(top, 'd'.repeat(95 - top.length - 1));
  await mkdir(dir);
  const path = join(dir, 'a.sock');
  assert.ok(Buffer.byteLength(path) <= 107);
  await underUmask000(async (server) => {
    await createUnixSocket(
      path,
      { mode: 0o640, uid: -1, gid: 1 },
      (at) => {
        assert.equal(at, path);
        return new Promise<void>((resolve) => server.listen(at, resolve));
      },
      () => void server.close(),
    );
    // The umask is restored.
    assert.equal(process.umask(), 0);
  });
  const st = await stat(path);
  assert.equal(st.mode & 0o777, 0o640);
  assert.equal(st.gid, 1);
});

test('the mode, owner and group of a socket: spec resolve to numbers; bad values name the field', async () => {
  assert.deepEqual(await resolveSocketAccess(undefined, 'socket'), PRIVATE_SOCKET);
  assert.deepEqual(await resolveSocketAccess({ mode: '0660', owner: 'root', group: '1' }, 'socket'), {
    mode: 0o660,
    uid: 0,
    gid: 1,
  });
  await assert.rejects(resolveSocketAccess({ mode: '66' }, 'x.socket'), /x\.socket\.mode "66" is not an octal mode/);
  await assert.rejects(
    resolveSocketAccess({ group: 'vmlink-no-such-group' }, 'storage.socket'),
    /storage\.socket\.group "vmlink-no-such-group" is not a group on this host/,
  );
  await assert.rejects(
    resolveSocketAccess({ owner: 'vmlink-no-such-user' }, 'socket'),
    /socket\.owner "vmlink-no-such-user" is not a user on this host/,
  );
});

test('a bind that fails leaves no private directory behind', async () => {
  const dir = await temp();
  await assert.rejects(
    createUnixSocket(
      join(dir, 'f.sock'),
      PRIVATE_SOCKET,
      () => {
        throw new Error('bind failed');
      },
      () => undefined,
    ),
    /bind failed/,
  );
  assert.deepEqual(await readdir(dir), []);
});
