/**
 * Claiming a unix socket path before bind(2) or listen(): create the parent
 * directory, remove a stale socket file (one nobody answers on any more),
 * refuse a live socket or a file that is not a socket. Used by the ports, the
 * control API and the NBD server, each of which words the refusal its own way.
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
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
