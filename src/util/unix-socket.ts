/**
 * Claiming a unix socket path before bind(2) or listen(): create the parent
 * directory, remove a stale socket file (one nobody answers on any more),
 * refuse a live socket or a file that is not a socket. Then creating the
 * socket with the mode, owner and group it should have whatever the umask
 * ({@link createUnixSocket}). Used by the ports, the control API and the NBD
 * server, each of which words the refusal its own way.
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { lstat, readFile, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { describeError } from '../errors.js';
import { mkdirp } from './fs.js';

/** What a probe of an existing socket file found. */
export type Probe = 'live' | 'stale' | { error: string };

/** Finds out whether something still answers on a socket file. */
export type SocketProbe = (path: string) => Promise<Probe>;

/** How long a probe of an existing socket file may take before it counts as stale, ms. */
const PROBE_MS = 1000;

/** Probes a stream socket file with a connect: refused or absent means stale. */
export function probeStreamSocket(path: string): Promise<Probe> {
  return new Promise((resolve) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      resolve('stale');
    }, PROBE_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve('live');
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve('stale');
      else resolve({ error: describeError(err) });
    });
  });
}

/**
 * Why a path cannot be claimed. `live` is true when another process answers
 * on it (callers name who that might be); otherwise `reason` says what is wrong.
 */
export class UnixPathError extends Error {
  constructor(
    readonly reason: string,
    readonly live = false,
    options?: ErrorOptions,
  ) {
    super(reason, options);
    this.name = 'UnixPathError';
  }
}

/**
 * Makes `path` ready for bind(2): creates its directory (with `dirMode`),
 * removes a stale socket file. Returns true when a stale file was removed;
 * throws {@link UnixPathError} when a live socket, a file that is not a
 * socket, or an error is in the way.
 */
export async function claimUnixPath(
  path: string,
  probe: SocketProbe = probeStreamSocket,
  dirMode = 0o755,
): Promise<boolean> {
  try {
    await mkdirp(dirname(path), dirMode);
  } catch (err) {
    throw new UnixPathError(`cannot create directory ${dirname(path)}: ${describeError(err)}`, false, { cause: err });
  }
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new UnixPathError(describeError(err), false, { cause: err });
  }
  if (!isSocket) throw new UnixPathError('a file that is not a socket is in the way; move it or choose another path');
  const p = await probe(path);
  if (p === 'live') throw new UnixPathError('another process answers on this socket', true);
  if (p !== 'stale') throw new UnixPathError(`cannot probe the existing socket: ${p.error}`);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new UnixPathError(`cannot remove the stale socket: ${describeError(err)}`, false, { cause: err });
  }
  return true;
}

/** Removes a socket file we created; a missing file is fine. */
export async function removeUnixPath(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // Already gone (Node removes a pipe server's path on close), or not ours to care about.
  }
}

/**
 * Who may use a unix socket vmlink creates, as written in the config
 * (`socket:` of a port, `storage.socket`, `host.control_socket`).
 */
export interface SocketAccessSpec {
  /** Permission bits as an octal string, e.g. "0660"; default "0600" (the daemon's user only). */
  mode?: string | undefined;
  /** Owner: a user name or a numeric uid; default the daemon's user. */
  owner?: string | number | undefined;
  /** Group: a group name or a numeric gid; default the daemon's group. */
  group?: string | number | undefined;
}

/** {@link SocketAccessSpec} resolved: mode bits and numeric ids (-1: leave as created). */
export interface SocketAccess {
  /** Permission bits (0-0o777). */
  mode: number;
  /** uid to chown to, or -1. */
  uid: number;
  /** gid to chown to, or -1. */
  gid: number;
}

/** The mode of every socket vmlink creates unless configured otherwise. */
export const DEFAULT_SOCKET_MODE = 0o600;

/** Only the daemon's user: what a socket gets without a `socket:` setting. */
export const PRIVATE_SOCKET: SocketAccess = { mode: DEFAULT_SOCKET_MODE, uid: -1, gid: -1 };

/** Parses an octal mode string ("0660", "660"); undefined when it is not one. */
export function parseSocketMode(text: string): number | undefined {
  return /^0?[0-7]{3}$/.test(text) ? Number.parseInt(text, 8) : undefined;
}

/**
 * Resolves a {@link SocketAccessSpec}: user and group names through the
 * system's databases (`getent`, so NSS sources count too). `field` names
 * the setting in errors (e.g. `ports[vm1].socket`). Throws
 * {@link UnixPathError} for an unknown user or group or a bad mode.
 */
export async function resolveSocketAccess(spec: SocketAccessSpec | undefined, field: string): Promise<SocketAccess> {
  if (!spec) return PRIVATE_SOCKET;
  const mode = spec.mode === undefined ? DEFAULT_SOCKET_MODE : parseSocketMode(spec.mode);
  if (mode === undefined)
    throw new UnixPathError(
      `${field}.mode "${spec.mode}" is not an octal mode like "0660"; write it as a quoted string`,
    );
  const uid = spec.owner === undefined ? -1 : await lookupId('passwd', spec.owner, `${field}.owner`);
  const gid = spec.group === undefined ? -1 : await lookupId('group', spec.group, `${field}.group`);
  return { mode, uid, gid };
}

/** A numeric id as given, or the id of a user (`passwd`) or group name. */
async function lookupId(db: 'passwd' | 'group', value: string | number, field: string): Promise<number> {
  const what = db === 'passwd' ? 'user' : 'group';
  if (typeof value === 'number' || /^\d+$/.test(value)) {
    const n = Number(value);
    if (Number.isSafeInteger(n) && n >= 0 && n < 2 ** 32 - 1) return n;
    throw new UnixPathError(`${field} ${value} is not a valid ${what} id (0-4294967294)`);
  }
  const line = await getent(db, value);
  const id = line === undefined ? Number.NaN : Number(line.split(':')[2]);
  if (!Number.isSafeInteger(id))
    throw new UnixPathError(
      `${field} "${value}" is not a ${what} on this host (getent ${db} ${value} found nothing); give an existing ${what} name or a numeric id`,
    );
  return id;
}

/** The `getent DB KEY` line, or undefined when there is none (/etc/DB read directly where getent is missing). */
function getent(db: 'passwd' | 'group', key: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    execFile('getent', [db, key], { timeout: 10_000, encoding: 'utf8' }, (err, stdout) => {
      if (!err) return resolve(stdout.split('\n')[0]);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return resolve(undefined);
      readFile(`/etc/${db}`, 'utf8').then(
        (text) => resolve(text.split('\n').find((l) => l.split(':')[0] === key)),
        (e: unknown) => reject(new UnixPathError(`cannot look up ${key}: ${describeError(e)}`, false, { cause: e })),
      );
    });
  });
}

/** Longest path bind(2) takes: sun_path is 108 bytes with the terminating NUL. */
const SUN_PATH_MAX = 107;

/**
 * Creates the unix socket at `path` with exactly `access` (mode, owner,
 * group) whatever the process umask, with no moment at which it exists at
 * `path` with wider permissions. Call {@link claimUnixPath} first.
 *
 * `bind(at)` binds (and for a stream socket listens) at the path it is
 * given; `unbind()` closes that socket again when the socket cannot be
 * given its permissions. The socket is bound in a fresh private directory
 * beside `path` (mkdtemp: mode 0700, our own), given its owner, then its
 * mode, and renamed into place: rename(2) is atomic, so the path appears
 * with its final permissions, and nobody can connect before (the directory
 * keeps them out). Not a umask around bind: the umask is per process, and
 * while it is narrowed, files and directories that the libuv thread pool
 * creates at the same moment for other requests would get it too; and not
 * bind-chmod-listen: Node's net.Server binds and listens in one call, and a
 * datagram socket receives as soon as it is bound.
 *
 * Fallback: when the temporary path would be longer than sun_path allows
 * (the directory of `path` is longer than 90 bytes), the socket is bound at `path` itself with the
 * umask narrowed to 077 for the synchronous part of `bind` (which must bind
 * before its first await: Node's `listen(path)` and the addon's `bind` do),
 * then chowned and chmodded: it is never wider than its final mode, only
 * other files created in that instant may come out narrower.
 *
 * Rejects with {@link UnixPathError} when a step fails (after `unbind`).
 */
export async function createUnixSocket(
  path: string,
  access: SocketAccess,
  bind: (at: string) => void | Promise<void>,
  unbind: () => void | Promise<void>,
): Promise<void> {
  const tmp = privateDir(path);
  if (tmp === undefined) {
    await bindNarrowed(path, bind);
    await publishOrUnbind(path, path, undefined, access, unbind);
    return;
  }
  const at = join(tmp, 's');
  try {
    await bind(at);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  await publishOrUnbind(at, path, tmp, access, unbind);
}

/**
 * {@link createUnixSocket} for callers that must stay synchronous (a VDE
 * plug's datagram socket, made while its request is answered). The steps
 * are metadata syscalls of microseconds each.
 */
export function createUnixSocketSync(
  path: string,
  access: SocketAccess,
  bind: (at: string) => void,
  unbind: () => void,
): void {
  const tmp = privateDir(path);
  const at = tmp === undefined ? path : join(tmp, 's');
  try {
    if (tmp === undefined) withNarrowUmask(() => bind(path));
    else bind(at);
  } catch (err) {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  try {
    publish(at, path, tmp, access);
  } catch (err) {
    unbind();
    throw err;
  }
}

/** A fresh 0700 directory beside `path` for binding, or undefined when its socket path would be too long. */
function privateDir(path: string): string | undefined {
  const prefix = join(dirname(path), '.vmlink-');
  // mkdtemp adds six characters; the socket inside is "/s".
  if (Buffer.byteLength(prefix) + 6 + 2 > SUN_PATH_MAX) return undefined;
  try {
    return mkdtempSync(prefix);
  } catch (err) {
    throw new UnixPathError(`cannot create a private directory in ${dirname(path)}: ${describeError(err)}`, false, {
      cause: err,
    });
  }
}

/** Runs `fn` with the umask at 077 (see {@link createUnixSocket}, fallback). */
function withNarrowUmask<T>(fn: () => T): T {
  const old = process.umask(0o077);
  try {
    return fn();
  } finally {
    process.umask(old);
  }
}

/** Calls `bind(path)` with its synchronous part under the narrowed umask. */
async function bindNarrowed(path: string, bind: (at: string) => void | Promise<void>): Promise<void> {
  await withNarrowUmask(() => bind(path));
}

async function publishOrUnbind(
  at: string,
  path: string,
  tmp: string | undefined,
  access: SocketAccess,
  unbind: () => void | Promise<void>,
): Promise<void> {
  try {
    publish(at, path, tmp, access);
  } catch (err) {
    await unbind();
    throw err;
  }
}

/**
 * Owner first, then mode (so a group never holds the mode meant for
 * another group), then the rename into place. Synchronous: these are
 * metadata calls, and the socket must not be reachable in between.
 */
function publish(at: string, path: string, tmp: string | undefined, access: SocketAccess): void {
  try {
    if (access.uid !== -1 || access.gid !== -1) chownSync(at, access.uid, access.gid);
    chmodSync(at, access.mode);
    if (tmp !== undefined) renameSync(at, path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EPERM' ? ' (changing the owner or group needs root, or membership of the group)' : '';
    throw new UnixPathError(`cannot set the socket's owner, group or mode: ${describeError(err)}${hint}`, false, {
      cause: err,
    });
  } finally {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }
}
