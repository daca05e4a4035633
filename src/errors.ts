/**
 * Base of every error vmlink raises on purpose. Each subclass has a stable
 * `code` (ERR_*): callers and tests match the code, never the message. Each
 * also declares its consequence, the HTTP `status` the control API answers it
 * with, so no central table decides it later (as ws's errors carry their
 * close code).
 */
export class VmlinkError extends Error {
  /** Stable machine-readable code, e.g. `ERR_CONFIG_INVALID`. */
  readonly code: string;
  /**
   * HTTP status of the API answer carrying this error; default 500 (a failure
   * of the daemon, not of the request). Subclasses override it:
   * `override readonly status = 404`. One of 400 (bad input), 403 (forbidden
   * path), 404 (not found), 409 (conflict: exists, in use, limit), 413, 422
   * (a valid request refused: cannot be done here), 500 or 503 (a service
   * the request needs is unavailable).
   */
  readonly status: number = 500;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `err` is a VmlinkError with the given code. */
export function hasCode(err: unknown, code: string): boolean {
  return err instanceof VmlinkError && err.code === code;
}

/** A readable one-line description of any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
