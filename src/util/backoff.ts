/**
 * Exponential backoff with jitter for re-dialling a peer.
 *
 * The n-th consecutive failure waits a random time in [d/2, d] where
 * d = min(max, min * 2^n) ("equal jitter"): peers restarted together do not
 * dial in lock-step, and the wait never drops below half the nominal delay.
 */
export class Backoff {
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #attempt = 0;

  /**
   * @param minMs first delay in ms (default 100)
   * @param maxMs largest delay in ms (default 5000)
   * @param random source of [0, 1) numbers; default Math.random (tests pass a seeded one)
   */
  constructor(minMs = 100, maxMs = 5000, random: () => number = Math.random) {
    this.#minMs = minMs;
    this.#maxMs = Math.max(minMs, maxMs);
    this.#random = random;
  }

  /** Consecutive failures so far. */
  get attempt(): number {
    return this.#attempt;
  }

  /** Delay before the next attempt, in ms; advances the failure count. */
  next(): number {
    const nominal = Math.min(this.#maxMs, this.#minMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.round(nominal / 2 + (nominal / 2) * this.#random());
  }

  /** After a success: the next failure starts again at the minimum. */
  reset(): void {
    this.#attempt = 0;
  }
}
