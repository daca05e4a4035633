/**
 * Preparing a port's unix socket path for listening (see util/unix-socket.ts),
 * with the port's own error.
 */
import { claimUnixPath, probeStreamSocket, type SocketProbe, UnixPathError } from '../../util/unix-socket.js';
import { PortAddressError } from '../errors.js';

export { removeUnixPath } from '../../util/unix-socket.js';

/**
 * Makes `path` ready for `listen()` or bind(2). Throws {@link PortAddressError}
 * when a live socket or a file that is not a socket is in the way.
 * Returns true when a stale socket file was removed.
 */
export async function prepareUnixPath(
  port: string,
  path: string,
  probe: SocketProbe = probeStreamSocket,
): Promise<boolean> {
  try {
    return await claimUnixPath(path, probe);
  } catch (err) {
    if (!(err instanceof UnixPathError)) throw err;
    const reason = err.live
      ? 'another process is listening on this socket (a second vmlink, or a QEMU with server=on or whose local.path it is?); stop it or choose another path'
      : err.reason;
    throw new PortAddressError(port, `unix:${path}`, reason, { cause: err });
  }
}
