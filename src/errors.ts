/**
 * Base of every error vmlink raises on purpose. Each subclass has a stable
 * `code` (ERR_*): callers and tests match the code, never the message.
 */
export class VmlinkError extends Error {
  /** Stable machine-readable code, e.g. `ERR_CONFIG_INVALID`. */
  readonly code: string;

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
