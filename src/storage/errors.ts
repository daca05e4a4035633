/**
 * Storage errors. Each has a stable code; backend errors carry the NBD errno
 * the server sends back (the wire consequence travels with the error).
 */
import { VmlinkError } from '../errors.js';
import { NBD_ERR } from './nbd/constants.js';

/**
 * Base of storage errors; thrown as it is (with its own code) when a backend
 * cannot be set up as asked (`ERR_FILE_BACKEND`, `ERR_COW_INVALID`,
 * `ERR_FILE_OUTSIDE_ROOTS`): the request is refused, 422.
 */
export class StorageError extends VmlinkError {
  override readonly status: number = 422;
}

/** A backend operation failed; `errno` is what the NBD reply carries. */
export class BackendError extends StorageError {
  /** A backend that failed under an operation is a failure of the server: 500 unless a subclass says otherwise. */
  override readonly status: number = 500;
  /** NBD error value for the reply (proto.md "Error values"). */
  readonly errno: number;

  constructor(code: string, errno: number, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.errno = errno;
  }
}

/** Offset/length outside the device. */
export class OutOfRangeError extends BackendError {
  override readonly status = 400;
  constructor(what: string, offset: number, length: number, size: number, errno: number = NBD_ERR.EINVAL) {
    super(
      'ERR_NBD_OUT_OF_RANGE',
      errno,
      `${what} of ${length} bytes at offset ${offset} goes beyond the end of the ${size}-byte device`,
    );
  }
}

/** A write-type operation on a read-only backend. */
export class ReadOnlyError extends BackendError {
  override readonly status = 403;
  constructor(what: string) {
    super('ERR_NBD_READ_ONLY', NBD_ERR.EPERM, `${what} refused: the export is read-only`);
  }
}

/** Write-zeroes with FAST_ZERO where zeroing is not faster than writing. */
export class NotFastError extends BackendError {
  override readonly status = 422;
  constructor() {
    super('ERR_NBD_NOT_FAST', NBD_ERR.ENOTSUP, 'fast zero is not supported by this backend');
  }
}

/** An I/O error from the OS or a remote peer; maps errno names to NBD errors. */
export class IoError extends BackendError {
  constructor(what: string, cause: unknown) {
    const sys = (cause as { code?: unknown })?.code;
    const errno =
      sys === 'ENOSPC' || sys === 'EDQUOT' || sys === 'EFBIG'
        ? NBD_ERR.ENOSPC
        : sys === 'EPERM' || sys === 'EACCES' || sys === 'EROFS'
          ? NBD_ERR.EPERM
          : NBD_ERR.EIO;
    super('ERR_NBD_IO', errno, `${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
  }
}

/**
 * An export name is unknown (`ERR_EXPORT_NOT_FOUND`, 404), taken
 * (`ERR_EXPORT_EXISTS`, 409) or its settings are invalid (`ERR_EXPORT_INVALID`,
 * 400): the thrower gives the code and its status together.
 */
export class ExportError extends StorageError {
  override readonly status: 400 | 404 | 409;
  constructor(code: string, message: string, status: 400 | 404 | 409) {
    super(code, message);
    this.status = status;
  }
}

/** The remote NBD server answered an error or the connection failed: the service behind the export is unavailable. */
export class NbdClientError extends BackendError {
  override readonly status = 503;
}

/** The NBD errno to reply with for any thrown value (EIO unless the error says otherwise). */
export function errnoOf(err: unknown): number {
  return err instanceof BackendError ? err.errno : NBD_ERR.EIO;
}
