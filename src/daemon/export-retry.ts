/**
 * Retries opening the backend of an export that is down (image not there
 * yet, remote NBD server not up) with exponential backoff, so the export
 * becomes available without a restart of the daemon. One timer per down
 * export; cancelled when the export is deleted or the daemon stops.
 */
import { Backoff } from '../util/backoff.js';

export interface ExportRetryOptions {
  /**
   * Tries once to open and serve export `name`: true when it is served now,
   * or when it no longer needs trying (deleted meanwhile); false to try again
   * later. Must not reject.
   */
  attempt(name: string, attempt: number): Promise<boolean>;
  /** First delay in ms; default 1000. */
  minMs?: number | undefined;
  /** Largest delay in ms; default 60000. */
  maxMs?: number | undefined;
}

interface Pending {
  backoff: Backoff;
  timer: NodeJS.Timeout | undefined;
  cancelled: boolean;
}

export class ExportRetry {
  readonly #o: ExportRetryOptions;
  readonly #pending = new Map<string, Pending>();
  #closed = false;

  constructor(o: ExportRetryOptions) {
    this.#o = o;
  }

  /** Names being retried now. */
  names(): string[] {
    return [...this.#pending.keys()];
  }

  /** Starts retrying `name` (unless it already is); returns the delay before the first try, in ms. */
  schedule(name: string): number {
    if (this.#pending.has(name) || this.#closed) return 0;
    const p: Pending = {
      backoff: new Backoff(this.#o.minMs ?? 1000, this.#o.maxMs ?? 60_000),
      timer: undefined,
      cancelled: false,
    };
    this.#pending.set(name, p);
    return this.#arm(name, p);
  }

  #arm(name: string, p: Pending): number {
    const delay = p.backoff.next();
    p.timer = setTimeout(() => void this.#fire(name, p), delay);
    // Retries alone do not keep the daemon alive.
    p.timer.unref();
    return delay;
  }

  async #fire(name: string, p: Pending): Promise<void> {
    p.timer = undefined;
    const done = await this.#o.attempt(name, p.backoff.attempt);
    if (p.cancelled) return;
    if (done) {
      this.#pending.delete(name);
      return;
    }
    this.#arm(name, p);
  }

  /** Stops retrying `name` (deleted). */
  cancel(name: string): void {
    const p = this.#pending.get(name);
    if (!p) return;
    p.cancelled = true;
    clearTimeout(p.timer);
    this.#pending.delete(name);
  }

  /** Stops every retry (daemon stop). */
  close(): void {
    this.#closed = true;
    for (const name of [...this.#pending.keys()]) this.cancel(name);
  }
}
