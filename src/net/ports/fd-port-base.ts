/**
 * The class the fd port kinds extend (tap, host, udp and unix dgram, vde):
 * the Port members that are the same for all of them, on an
 * {@link FdPortCore}. A kind implements the transport calls ({@link FdIo}:
 * read a batch, send a batch, a poll error) and its own open() and
 * describe(); it may override write() (a TAP with per-frame headers).
 */
import type { FrameArena } from '../frame-arena.js';
import type { Port, PortContext, PortState, WriteResult } from '../port.js';
import { destroyReason, type FdIo, FdPortCore } from './fd-port.js';

export abstract class FdPort implements Port {
  abstract readonly kind: string;
  readonly name: string;
  /** Poll, flush, hold/release, state, counters and shutdown. */
  protected readonly core: FdPortCore;

  /**
   * @param name the port's name
   * @param ctx the port's context
   * @param tx the port's egress queue (sized by the kind)
   */
  protected constructor(name: string, ctx: PortContext, tx: FrameArena) {
    this.name = name;
    const io: FdIo = {
      read: () => this.readBatch(),
      send: (q) => this.sendBatch(q),
      pollError: (status, onTxFd) => this.pollError(status, onTxFd),
    };
    this.core = new FdPortCore(ctx, tx, io);
  }

  abstract open(): Promise<void>;
  abstract describe(): Record<string, unknown>;

  /** {@link FdIo.read}: one batch from the transport into the sink (hot path). */
  protected abstract readBatch(): void;
  /** {@link FdIo.send}: frames [tx.head, tx.count) in one native call. */
  protected abstract sendBatch(tx: FrameArena): number;
  /** {@link FdIo.pollError}: a watcher reported an error; by default nothing (the next call meets it). */
  protected pollError(_status: number, _onTxFd: boolean): void {}

  get state(): PortState {
    return this.core.state;
  }

  get queued(): number {
    return this.core.queued;
  }

  /**
   * Stops reading from the transport until {@link release} (FdPortCore.hold):
   * frames wait in the kernel, where a sender that can wait is held.
   */
  hold(): void {
    this.core.hold();
  }

  /** Reading resumes (FdPortCore.release). */
  release(): void {
    this.core.release();
  }

  write(buf: Buffer, off: number, len: number): WriteResult {
    return this.core.write(buf, off, len);
  }

  /** Flushes (a slow peer gets a grace period), then closes the fds and {@link freeResources}. */
  close(): Promise<void> {
    return this.core.close(() => this.freeResources());
  }

  async destroy(err?: Error): Promise<void> {
    await this.core.teardown(destroyReason(err), () => this.freeResources());
  }

  /** What the kind holds besides the fds the core closes (timers, socket files, a listener); may be async. */
  protected freeResources(): void | Promise<void> {}
}
