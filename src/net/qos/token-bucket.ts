/**
 * A token bucket: `rate` tokens per second accrue up to `burst`; an action
 * costing n tokens proceeds when n are available. Time is passed in (ms) so
 * the bucket runs on a virtual clock in tests and on a per-batch timestamp on
 * the data path (no clock read per frame). Allocates nothing per call.
 */
export class TokenBucket {
  /** Tokens per millisecond. */
  #perMs: number;
  #burst: number;
  #tokens: number;
  #last: number;

  /**
   * @param rate tokens per second (> 0)
   * @param burst bucket depth in tokens (>= 1); the bucket starts full
   * @param now current time in ms
   */
  constructor(rate: number, burst: number, now: number) {
    if (!(rate > 0) || !(burst >= 1))
      throw new RangeError(`token bucket needs rate > 0 and burst >= 1, got ${rate}/${burst}`);
    this.#perMs = rate / 1000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#last = now;
  }

  /** Rate in tokens per second. */
  get rate(): number {
    return this.#perMs * 1000;
  }

  /** Depth in tokens. */
  get burst(): number {
    return this.#burst;
  }

  /** Tokens available at `now` (after refill). */
  available(now: number): number {
    this.#refill(now);
    return this.#tokens;
  }

  /** Takes `n` tokens if available at `now`; returns whether it did. */
  take(n: number, now: number): boolean {
    this.#refill(now);
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  #refill(now: number): void {
    const dt = now - this.#last;
    if (dt <= 0) return;
    this.#last = now;
    const t = this.#tokens + dt * this.#perMs;
    this.#tokens = Math.min(t, this.#burst);
  }
}
