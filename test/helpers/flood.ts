/**
 * A flood of connections that a test opens against one of the daemon's
 * listeners (loopback or a test's own unix socket only), bounded in count,
 * and destroys at the end. Each connection may send a few bytes and then
 * sits there; the flood counts connects, failures and closes as events.
 */
import { connect, type Socket } from 'node:net';

/** Where the flood connects: a TCP port on loopback (from `localAddress`), or a unix socket. */
export type FloodTarget = { host: string; port: number; localAddress?: string } | { path: string };

export class Flood {
  readonly sockets: Socket[] = [];
  /** Connections that were established (and may have been closed since). */
  connected = 0;
  /** Connections that failed to connect (e.g. EAGAIN on a full unix backlog). */
  failed = 0;
  /** Established connections the server has closed. */
  closed = 0;
  #waiters: { n: number; resolve: () => void }[] = [];
  #target: FloodTarget | undefined;
  #send: string | undefined;
  /** Connections still to open again when one of ours is closed (see {@link renew}). */
  #renewals = 0;
  /** Connections opening now. */
  #opening = 0;
  #idle: (() => void)[] = [];

  /**
   * Opens `count` connections, `batch` at a time (each batch connected or
   * failed before the next starts), each sending `send` once connected.
   */
  static async open(target: FloodTarget, count: number, opts: { batch?: number; send?: string } = {}): Promise<Flood> {
    const f = new Flood();
    f.#target = target;
    f.#send = opts.send;
    const batch = opts.batch ?? 100;
    for (let i = 0; i < count; i += batch) {
      const n = Math.min(batch, count - i);
      await Promise.all(Array.from({ length: n }, () => f.#one(target, opts.send)));
    }
    return f;
  }

  #one(target: FloodTarget, send: string | undefined): Promise<void> {
    this.#opening++;
    return new Promise<void>((resolve) => {
      const s =
        'path' in target
          ? connect(target.path)
          : connect({ host: target.host, port: target.port, localAddress: target.localAddress });
      this.sockets.push(s);
      let up = false;
      s.on('error', () => {});
      s.resume(); // read (and drop) anything, so the server's close is seen
      s.once('connect', () => {
        up = true;
        this.connected++;
        if (send !== undefined) s.write(send);
        resolve();
      });
      s.once('close', () => {
        if (!up) {
          this.failed++;
          resolve();
          return;
        }
        this.closed++;
        this.#waiters = this.#waiters.filter((w) => {
          if (this.closed < w.n) return true;
          w.resolve();
          return false;
        });
        if (this.#renewals > 0 && this.#target) {
          this.#renewals--;
          void this.#one(this.#target, this.#send);
        }
        this.#checkIdle();
      });
    }).finally(() => {
      this.#opening--;
      this.#checkIdle();
    });
  }

  #checkIdle(): void {
    if (this.#opening > 0 || this.open > 0) return;
    for (const f of this.#idle.splice(0)) f();
  }

  /**
   * From now on, each connection the server closes is opened again, like an
   * attacker who keeps the listener full, at most `max` times in all.
   */
  renew(max: number): void {
    this.#renewals = max;
  }

  /** Stops opening closed connections again. */
  stopRenewing(): void {
    this.#renewals = 0;
  }

  /** Resolves once no connection is open or opening (the server closed them all). */
  allClosed(): Promise<void> {
    return new Promise((resolve) => {
      this.#idle.push(resolve);
      this.#checkIdle();
    });
  }

  /** Connections established and still open. */
  get open(): number {
    return this.connected - this.closed;
  }

  /** Resolves once at least `n` established connections have been closed by the server. */
  closedAtLeast(n: number): Promise<void> {
    if (this.closed >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  /** Closes every connection this flood opened. */
  destroy(): void {
    for (const s of this.sockets) s.destroy();
  }
}
