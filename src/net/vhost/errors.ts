/**
 * Errors of the vhost-user back-end. Each names what the front-end (QEMU or
 * a guest driver) did wrong; the session that hits one is disconnected alone,
 * with one log line, and the daemon carries on.
 */
import { NetError } from '../errors.js';

/** Base of every vhost-user error; `code` is stable. */
export class VhostError extends NetError {}

/** The front-end broke the message protocol (bad header, size, version, unknown request). */
export class VhostProtocolError extends VhostError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_VHOST_PROTOCOL', message);
  }
}

/** A message carried the wrong number of fds. */
export class VhostFdError extends VhostError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_VHOST_FDS', message);
  }
}

/** The memory table is invalid (overlap, too many regions, mmap failed). */
export class VhostMemoryError extends VhostError {
  override readonly status = 400;
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_VHOST_MEMORY', message, options);
  }
}

/**
 * The front-end's memory faulted under an access (its file is shorter than a
 * region: shrunk after SET_MEM_TABLE). The access read zeros; the front-end
 * is disconnected.
 */
export class VhostMemoryFaultError extends VhostError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_VHOST_MEMORY_FAULT', message);
  }
}

/** A ring set-up message is invalid (index, size, address outside memory). */
export class VhostRingError extends VhostError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_VHOST_RING', message);
  }
}

/** The guest put something invalid in a ring (loop, address outside memory, bad length, index jump). */
export class VirtqueueError extends VhostError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_VIRTQUEUE', message);
  }
}
