/**
 * Keepalives of a stream link: a `ping` every interval, the peer's `pong`
 * gives the round-trip time (smoothed as TCP does, RFC 6298 §2 with
 * alpha 1/8); a peer silent for three intervals is declared gone.
 */
export class Keepalive {
  /** When something last arrived from the peer (ms, the channel's clock); the channel sets it on every read. */
  lastRx = 0;
  #srtt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #intervalMs: number;
  readonly #clock: () => number;

  /**
   * @param intervalMs ping interval, ms
   * @param clock ms clock
   */
  constructor(intervalMs: number, clock: () => number) {
    this.#intervalMs = intervalMs;
    this.#clock = clock;
  }

  /** Smoothed round-trip time, ms (three decimals); undefined before the first pong. */
  get rttMs(): number | undefined {
    return this.#srtt === undefined ? undefined : Math.round(this.#srtt * 1000) / 1000;
  }

  /**
   * Starts pinging: `ping(t)` sends a ping stamped `t`; `silent(ms)` is
   * called once the peer has sent nothing for three intervals (then the
   * keepalive stops).
   */
  start(ping: (t: number) => void, silent: (ms: number) => void): void {
    const ka = this.#intervalMs;
    this.lastRx = this.#clock();
    let tick = this.#clock();
    this.#timer = setInterval(() => {
      const now = this.#clock();
      const late = now - tick > 2 * ka;
      tick = now;
      // A timer this late means this process was busy (e.g. setting up thousands of link
      // ports), not that the peer is silent: what it sent may be unread yet. Check next tick.
      if (!late && now - this.lastRx > 3 * ka) {
        this.stop();
        silent(Math.round(now - this.lastRx));
        return;
      }
      ping(now);
    }, ka);
    this.#timer.unref();
  }

  /** The peer's pong to the ping stamped `t`. */
  pong(t: unknown): void {
    if (typeof t !== 'number') return;
    const rtt = this.#clock() - t;
    if (rtt >= 0) this.#srtt = this.#srtt === undefined ? rtt : this.#srtt * 0.875 + rtt * 0.125;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
