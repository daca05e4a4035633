/**
 * Preparing a port's unix socket path for listening and creating the socket
 * with its mode, owner and group (see util/unix-socket.ts), with the port's
 * own error.
 */
import {
  claimUnixPath,
  createUnixSocket,
  probeStreamSocket,
  resolveSocketAccess,
  type SocketAccess,
  type SocketAccessSpec,
  type SocketProbe,
  UnixPathError,
} from '../util/unix-socket.js';
import { PortAddressError } from './errors.js';

export { removeUnixPath, type SocketAccess, type SocketAccessSpec } from '../util/unix-socket.js';

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

/** The port's `socket:` setting resolved (user and group names looked up); {@link PortAddressError} naming the field. */
export async function portSocketAccess(
  port: string,
  where: string,
  spec: SocketAccessSpec | undefined,
): Promise<SocketAccess> {
  try {
    return await resolveSocketAccess(spec, 'socket');
  } catch (err) {
    if (!(err instanceof UnixPathError)) throw err;
    throw new PortAddressError(port, where, err.reason, { cause: err });
  }
}

/**
 * Creates the port's unix socket at `path` with the port's `socket:` mode,
 * owner and group whatever the umask (util/unix-socket.ts createUnixSocket).
 * Errors of `bind` pass through; failures to set the permissions become
 * {@link PortAddressError}.
 */
export async function createPortSocket(
  port: string,
  path: string,
  spec: SocketAccessSpec | undefined,
  bind: (at: string) => void | Promise<void>,
  unbind: () => void | Promise<void>,
): Promise<void> {
  const access = await portSocketAccess(port, `unix:${path}`, spec);
  try {
    await createUnixSocket(path, access, bind, unbind);
  } catch (err) {
    if (!(err instanceof UnixPathError)) throw err;
    throw new PortAddressError(port, `unix:${path}`, err.reason, { cause: err });
  }
}
