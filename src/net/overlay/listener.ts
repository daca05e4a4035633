/**
 * The overlay's link listener: binds `overlay.listen` and, when it cannot
 * (address in use, not this host's), stays `down` with the reason and tries
 * again with backoff instead of failing the daemon, like a busy port or NBD
 * address (docs/overlay.md "When the listener cannot bind").
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Backoff } from '../../util/backoff.js';
import { addr } from './link.js';
import type { LinkChannel, LinkTransport, TransportAddress } from './transport.js';

/** The link listener in `GET /v1/links` and `GET /v1/status`. */
export interface ListenerView {
  /** `up`: accepting links; `down`: cannot bind (see reason; retried with backoff); `off`: no overlay.listen. */
  state: 'up' | 'down' | 'off';
  /** Bound address (up) or the configured one (down), `HOST:PORT`. */
  address: string | undefined;
  reason: string;
}

export class LinkListener {
  /** Bound address, once up. */
  bound: TransportAddress | undefined;
  #reason: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  /**
   * @param backoff delays between attempts (the overlay's re-dial backoff settings)
   * @param onChannel gets each accepted channel
   */
  constructor(
    readonly transport: LinkTransport,
    readonly at: TransportAddress,
    readonly backoff: Backoff,
    readonly log: Logger,
    readonly onChannel: (ch: LinkChannel) => void,
  ) {}

  /** One attempt to bind; on failure the listener is down and tries again after a backoff delay. */
  async bind(): Promise<void> {
    if (this.#closed) return;
    this.#timer = undefined;
    try {
      this.bound = await this.transport.listen(this.at, this.onChannel);
    } catch (err) {
      if (this.#closed) return;
      const delay = this.backoff.next();
      this.#reason = `cannot listen on ${addr(this.at)}: ${describeError(err)}; retrying in ${delay} ms`;
      if (this.backoff.attempt === 1)
        this.log.error(
          { listen: addr(this.at), code: (err as { code?: unknown }).code },
          `overlay listener down: ${this.#reason} (links this host dials still work; peers cannot dial in)`,
        );
      this.#timer = setTimeout(() => void this.bind(), delay);
      this.#timer.unref();
      return;
    }
    if (this.backoff.attempt > 0)
      this.log.info(
        { listen: this.bound },
        `overlay listener up on ${addr(this.bound)} after ${this.backoff.attempt} failed tries`,
      );
    this.backoff.reset();
    this.#reason = undefined;
  }

  view(): ListenerView {
    const up = this.bound;
    return up
      ? { state: 'up', address: addr(up), reason: `listening on ${addr(up)}` }
      : { state: 'down', address: addr(this.at), reason: this.#reason ?? 'not bound yet' };
  }

  /** Stops retrying (the transport's close() closes a bound listener). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
