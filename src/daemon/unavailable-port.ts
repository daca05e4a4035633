/**
 * Stands in for a config or stored port whose transport could not even be
 * built (e.g. a kind this build does not support): the port stays listed,
 * `down` with the reason, and can be deleted; it never carries a frame.
 */
import { type Port, type PortState, WriteResult } from '../net/port.js';

export class UnavailablePort implements Port {
  readonly queued = 0;
  readonly #err: unknown;
  #state: PortState = 'down';

  constructor(
    readonly name: string,
    readonly kind: string,
    err: unknown,
  ) {
    this.#err = err;
  }

  get state(): PortState {
    return this.#state;
  }

  /** Rejects with the error that kept the transport from being built. */
  open(): Promise<void> {
    return Promise.reject(this.#err);
  }

  write(_buf: Buffer, _off: number, _len: number): WriteResult {
    return WriteResult.DOWN;
  }

  describe(): Record<string, unknown> {
    return { unavailable: true };
  }

  close(): Promise<void> {
    this.#state = 'closed';
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    return this.close();
  }
}
