/**
 * Preparing a unix socket path for listening: create the parent directory,
 * remove a stale socket file (one nobody answers on), refuse a live one.
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { describeError } from '../../errors.js';
import { mkdirp } from '../../util/fs.js';
import { PortAddressError } from '../errors.js';

/** How long a probe of an existing socket file may take before it counts as stale, ms. */
const PROBE_MS = 1000;

/** Result of probing a socket path: someone accepted, nobody is there, or the probe failed otherwise. */
type Probe = 'live' | 'stale' | { error: string };

function probe(path: string): Promise<Probe> {
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
 * Makes `path` ready for `listen()`. Throws {@link PortAddressError} when a
 * live socket or a file that is not a socket is in the way.
 * Returns true when a stale socket file was removed.
 */
export async function prepareUnixPath(port: string, path: string): Promise<boolean> {
  const where = `unix:${path}`;
  try {
    await mkdirp(dirname(path));
  } catch (err) {
    throw new PortAddressError(port, where, `cannot create directory ${dirname(path)}: ${describeError(err)}`, {
      cause: err,
    });
  }
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new PortAddressError(port, where, describeError(err), { cause: err });
  }
  if (!isSocket) {
    throw new PortAddressError(
      port,
      where,
      'a file that is not a socket is in the way; move it or choose another path',
    );
  }
  const p = await probe(path);
  if (p === 'live') {
    throw new PortAddressError(
      port,
      where,
      'another process is listening on this socket (a second vmlink, or a QEMU with server=on?); stop it or choose another path',
    );
  }
  if (p !== 'stale') throw new PortAddressError(port, where, `cannot probe the existing socket: ${p.error}`);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new PortAddressError(port, where, `cannot remove the stale socket: ${describeError(err)}`, { cause: err });
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
