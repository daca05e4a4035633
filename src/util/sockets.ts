/** Helpers for the net.Socket connections of the ports and the NBD server. */
import { Socket } from 'node:net';
import { native } from '../native/index.js';

/**
 * The `onread` option of a net.Socket: reads land in `buffer`, `callback`
 * gets each. `buffer` may be a function: Node then asks it for the buffer
 * of each next read.
 */
export interface OnRead {
  buffer: Buffer | (() => Buffer);
  callback: (nread: number, buf: Buffer) => boolean;
}

/**
 * Re-wraps an accepted socket (accepted with pauseOnConnect, so nothing was
 * read yet) around the same handle with the `onread` option, which
 * net.Server cannot pass to the sockets it accepts. The original socket
 * object is destroyed without its handle, which only releases the server's
 * connection count.
 */
export function adoptWithReader(accepted: Socket, onread: OnRead): Socket {
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  holder._handle = null;
  accepted.destroy();
  return new Socket({ handle, onread } as ConstructorParameters<typeof Socket>[0]);
}

/**
 * A gathered write straight to the socket's fd: a[aOff, +aLen) then
 * b[bOff, +bLen). Returns the bytes written, 0 when it would block, < 0 for
 * another error (the socket's queue then meets the same error and reports it).
 */
export type DirectWrite = (a: Buffer, aOff: number, aLen: number, b: Buffer, bOff: number, bLen: number) => number;

/**
 * A writer straight to a connected socket's fd (the native addon's
 * streamWrite), or undefined when there is no fd (e.g. TLS) or no addon:
 * the caller then writes through the socket alone. Write directly only
 * while nothing of the caller's waits in the socket's queue
 * (`writableLength === 0`) and the socket is still `writable`: after end()
 * or destroy() its fd may be closed and the number reused.
 */
export function directWriter(socket: Socket): DirectWrite | undefined {
  const fd = socketFd(socket);
  if (fd === undefined) return undefined;
  try {
    const n = native();
    return (a, aOff, aLen, b, bOff, bLen) => n.streamWrite(fd, a, aOff, aLen, b, bOff, bLen);
  } catch {
    return undefined;
  }
}

/** The fd of a connected socket's handle, or undefined (no handle yet, or not an fd-backed one such as TLS). */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Sets a connected socket's kernel send and receive buffers to `bytes` each
 * (SO_SNDBUFFORCE/SO_RCVBUFFORCE through the native addon, as root). Best
 * effort: returns the error when the addon or the privilege is missing, and
 * the kernel defaults stay.
 */
export function enlargeSocketBuffers(socket: Socket, bytes: number): unknown {
  const fd = socketFd(socket);
  if (fd === undefined) return undefined;
  try {
    native().setBuffers(fd, bytes, bytes);
    return undefined;
  } catch (err) {
    return err;
  }
}
