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

  /**
   * Spends `n` tokens at `now` whatever the balance: the bucket may go into
   * debt, down to `-floor` tokens (default: no floor). Shapers use this to send an item
   * when the balance is positive and let the debt delay the next one, so items
   * larger than the burst still pass and the long-run rate stays exact.
   */
  spend(n: number, now: number, floor = Number.POSITIVE_INFINITY): void {
    this.#refill(now);
    this.#tokens = Math.max(this.#tokens - n, -floor);
  }

  /** True when the balance at `now` is above zero (a shaper may send). */
  positive(now: number): boolean {
    this.#refill(now);
    return this.#tokens > 0;
  }

  /** Milliseconds from `now` until the balance exceeds `n` tokens (0 when it already does). */
  waitMs(n: number, now: number): number {
    this.#refill(now);
    const need = n - this.#tokens;
    return need < 0 ? 0 : need / this.#perMs + 1e-6;
  }

  /** Changes rate and depth at `now`; tokens accrued so far are kept (capped at the new depth). */
  reconfigure(rate: number, burst: number, now: number): void {
    if (!(rate > 0) || !(burst >= 1))
      throw new RangeError(`token bucket needs rate > 0 and burst >= 1, got ${rate}/${burst}`);
    this.#refill(now);
    this.#perMs = rate / 1000;
    this.#burst = burst;
    if (this.#tokens > burst) this.#tokens = burst;
  }

  #refill(now: number): void {
    const dt = now - this.#last;
    if (dt <= 0) return;
    this.#last = now;
    const t = this.#tokens + dt * this.#perMs;
    this.#tokens = Math.min(t, this.#burst);
  }
}
