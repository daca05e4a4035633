/**
 * The base of the fd ports (tap.ts, host.ts, udp-dgram.ts, unix-dgram.ts,
 * vde.ts): one {@link FdPortCore} per port does what they share, and the port
 * supplies only its transport's calls through {@link FdIo}:
 *
 * - poll: uv_poll watchers on the port's fds (one fd for reading and sending,
 *   or a receive fd and a send fd), readable events to {@link FdIo.read},
 *   writable events to the flush, errors to {@link FdIo.pollError};
 * - write: frames copied into one {@link FrameArena} (at most ctx.queueLen,
 *   beyond that QUEUE_FULL), flushed once per event-loop turn; when the
 *   transport would block the rest waits for POLLOUT;
 * - hold / release: reading stops until released (the kernel then queues, and
 *   a peer that can wait waits): how the switch holds a sender whose
 *   destination cannot take more;
 * - shutdown: close() flushes and gives a slow peer a grace period, destroy()
 *   drops at once; both idempotent; the state and its reports to the switch;
 *   the batch counters of describe().
 *
 * The hot paths read and write its fields directly (`core.fd`,
 * `core.rxFrames += count`): no extra call per frame.
 */
import { closeSync } from 'node:fs';
import { describeError } from '../../errors.js';
import type { NativeAddon, Poller } from '../../native/index.js';
import type { FrameArena } from '../frame-arena.js';
import { type PortContext, type PortState, WriteResult } from '../port.js';

/** What {@link FdIo.send} returns when no peer takes frames now: everything queued is dropped (counted by the port). */
export const SEND_DROP_ALL = -1;

/** How long close() waits at most for a slow peer to take what is queued, ms. */
const CLOSE_GRACE_MS = 2000;

/** The transport calls a port hands its {@link FdPortCore}. */
export interface FdIo {
  /** Reads one batch from the transport into the sink (the port's hot path; counts rxFrames/rxBatches). */
  read(): void;
  /**
   * Sends frames [tx.head, tx.count) in one native call. Returns the index of
   * the first frame not sent (tx.head: the transport would block), or
   * {@link SEND_DROP_ALL}. Throws only for an error of the first frame, which
   * is then skipped and counted (`sendErrors`).
   */
  send(tx: FrameArena): number;
  /** A poller reported an error (`status` < 0); `onTxFd`: the send-only fd of a port with two. */
  pollError(status: number, onTxFd: boolean): void;
}

export class FdPortCore {
  /** The state the port reports (Port.state). */
  state: PortState = 'closed';
  /** Set once by teardown; the port cannot be opened again. */
  closed = false;
  /** The fd read (and written, unless {@link txFd} differs); -1 when not open. */
  fd = -1;
  /** The fd written; the same as {@link fd} for most ports. */
  txFd = -1;
  /** The addon, once attached. */
  n: NativeAddon | undefined;
  /** The flush set up for the end of this event-loop turn, if any. */
  scheduled: NodeJS.Immediate | undefined;
  /** The last error met, for describe() ('' for none). */
  lastError = '';
  rxFrames = 0;
  rxBatches = 0;
  txFrames = 0;
  txBatches = 0;
  /** Frames whose send failed (skipped, see {@link FdIo.send}). */
  sendErrors = 0;
  /** The port's egress queue. */
  readonly tx: FrameArena;
  readonly #ctx: PortContext;
  readonly #io: FdIo;
  readonly #flushBound = (): void => this.flush();
  /** Watchers whose readable events are held by {@link hold}; the first may also be the send watcher. */
  readonly #readers: Poller[] = [];
  #txPoller: Poller | undefined;
  #waitingWritable = false;
  #held = false;
  #holds = 0;
  #drained: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  /**
   * @param ctx the port's context (onState is called on every state change)
   * @param tx the port's egress queue
   * @param io the port's transport calls
   */
  constructor(ctx: PortContext, tx: FrameArena, io: FdIo) {
    this.#ctx = ctx;
    this.tx = tx;
    this.#io = io;
  }

  /** Frames queued and not yet handed to the kernel (Port.queued). */
  get queued(): number {
    return this.tx.queued;
  }

  /** True once close() has begun: writes are refused. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** True while the transport pushes back (EAGAIN) and the rest of the queue waits for POLLOUT. */
  get waitingWritable(): boolean {
    return this.#waitingWritable;
  }

  /**
   * Starts watching the port's open fds: `fd` for reading (and sending, when
   * `txFd` is the same), `txFd` for sending. Readable events wait while the
   * port is held. Does not change the state: the port reports 'up' itself.
   */
  attach(n: NativeAddon, fd: number, txFd = fd): void {
    this.n = n;
    this.fd = fd;
    this.txFd = txFd;
    const rx = new n.Poller(fd, (status, events) => this.#polled(status, events, false));
    this.#readers.push(rx);
    this.#txPoller = txFd === fd ? rx : new n.Poller(txFd, (status, events) => this.#polled(status, events, true));
    this.arm();
  }

  /** Adds a watcher whose readable events {@link hold} holds (a VDE plug's socket), and starts it. */
  addReader(n: NativeAddon, p: Poller): void {
    this.n = n;
    this.#readers.push(p);
    if (!this.#held) p.start(n.READABLE);
  }

  /** Removes a watcher added with {@link addReader} (the caller closes it). */
  removeReader(p: Poller): void {
    const i = this.#readers.indexOf(p);
    if (i >= 0) this.#readers.splice(i, 1);
  }

  #polled(status: number, events: number, onTxFd: boolean): void {
    const n = this.n;
    if (n === undefined || this.fd < 0) return;
    if (status < 0) {
      this.#io.pollError(status, onTxFd);
      return;
    }
    if (events & n.WRITABLE) this.flush();
    if (events & n.READABLE && !this.#held) this.#io.read();
  }

  /**
   * Sets each watcher's events from the port's situation: readable unless
   * held or down, writable while waiting for POLLOUT. Called on changes only
   * (and by a port whose watcher libuv stopped on an error).
   */
  arm(): void {
    const n = this.n;
    if (n === undefined || this.closed) return;
    const r = this.#held || this.state === 'down' ? 0 : n.READABLE;
    const w = this.#waitingWritable ? n.WRITABLE : 0;
    const tx = this.#txPoller;
    for (const p of this.#readers) {
      const events = p === tx ? r | w : r;
      if (events) p.start(events);
      else p.stop();
    }
    if (tx !== undefined && !this.#readers.includes(tx)) {
      if (w) tx.start(w);
      else tx.stop();
    }
  }

  /**
   * Stops reading from the transport until {@link release}: frames wait in
   * the kernel (the TAP's queue, the socket's receive buffer), and a sender
   * that can wait (a guest behind a TAP, a peer on a connected socket) is
   * held there; beyond the kernel's queue they are dropped there. The read in
   * progress, if any, ends after the current batch. Idempotent.
   */
  hold(): void {
    if (this.#held) return;
    this.#held = true;
    this.#holds++;
    this.arm();
  }

  /** Reading resumes (what queued meanwhile is read on the next poll). Idempotent. */
  release(): void {
    if (!this.#held) return;
    this.#held = false;
    this.arm();
  }

  /** True between {@link hold} and {@link release}. */
  get held(): boolean {
    return this.#held;
  }

  /**
   * Queues a frame (copied) and schedules the flush: the whole write() of a
   * port without per-frame headers. DOWN unless the port is up and not closing.
   */
  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.state !== 'up' || this.#closing !== undefined) return WriteResult.DOWN;
    if (!this.tx.push(buf, off, len)) return WriteResult.QUEUE_FULL;
    if (this.scheduled === undefined && !this.#waitingWritable) this.scheduled = setImmediate(this.#flushBound);
    return WriteResult.OK;
  }

  /** Schedules the flush after a port queued a frame itself (unless one is scheduled or POLLOUT is awaited). */
  schedule(): void {
    if (this.scheduled === undefined && !this.#waitingWritable) this.scheduled = setImmediate(this.#flushBound);
  }

  /** Cancels the scheduled flush (before flushing at once, or at teardown). */
  cancelFlush(): void {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  /**
   * Sends the queue through {@link FdIo.send} until it is empty or the
   * transport would block; then waits for POLLOUT with the rest. A frame
   * whose send throws is skipped and counted.
   */
  flush(): void {
    this.scheduled = undefined;
    const tx = this.tx;
    if (this.n === undefined || this.closed || tx.queued === 0) return;
    const io = this.#io;
    let done = false;
    while (!done) {
      let next: number;
      try {
        next = io.send(tx);
      } catch (err) {
        this.sendErrors++;
        this.lastError = describeError(err);
        done = tx.advance(tx.head + 1);
        continue;
      }
      if (next === SEND_DROP_ALL) {
        tx.clear();
        done = true;
        break;
      }
      this.txBatches++;
      this.txFrames += next - tx.head;
      if (next === tx.head) break; // would block
      done = tx.advance(next);
    }
    if (done === this.#waitingWritable) {
      this.#waitingWritable = !done;
      this.arm();
    }
    if (done) this.#drained?.();
  }

  setState(state: PortState, reason: string): void {
    this.state = state;
    this.#ctx.onState(state, reason);
  }

  /** Stops watching and reports `down` (the transport failed, the port stays until closed). */
  down(reason: string): void {
    if (this.state === 'down' || this.closed) return;
    this.setState('down', reason);
    this.arm();
  }

  /** The batch counters of describe() (and whether reading is held, with how often it was). */
  counters(): Record<string, number | boolean> {
    return {
      rx_frames: this.rxFrames,
      rx_batches: this.rxBatches,
      tx_frames: this.txFrames,
      tx_batches: this.txBatches,
      read_held: this.#held,
      read_holds: this.#holds,
      queued: this.tx.queued,
    };
  }

  /**
   * Port.close(): flushes, waits up to a grace period for a slow peer to take
   * the rest, then tears down with `release`. Writes are refused (DOWN) from
   * the start. Concurrent and later calls share one promise.
   */
  close(release?: () => void | Promise<void>): Promise<void> {
    this.#closing ??= this.#shutdown(release);
    return this.#closing;
  }

  async #shutdown(release: (() => void | Promise<void>) | undefined): Promise<void> {
    if (!this.closed && this.n !== undefined) {
      this.cancelFlush();
      this.flush();
      if (this.tx.queued > 0) await this.#drainWithin(CLOSE_GRACE_MS);
    }
    await this.teardown('closed', release);
  }

  /** Resolves when the queue is empty (the flush calls back) or after `graceMs`. */
  async #drainWithin(graceMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs);
      this.#drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#drained = undefined;
  }

  /**
   * Closes the port once: cancels the flush, drops the egress queue, closes
   * the watchers and fds, calls `release` (the port's own resources; it may
   * be async), then reports `closed` with `reason` unless the port never came
   * up. Idempotent.
   */
  teardown(reason: string, release?: () => void | Promise<void>): void | Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelFlush();
    this.tx.clear();
    this.#drained?.();
    const tx = this.#txPoller;
    for (const p of this.#readers.splice(0)) p.close();
    tx?.close();
    this.#txPoller = undefined;
    if (this.txFd >= 0 && this.txFd !== this.fd) closeSync(this.txFd);
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = this.txFd = -1;
    const r = release?.();
    if (r instanceof Promise) return r.then(() => this.#closedState(reason));
    this.#closedState(reason);
  }

  #closedState(reason: string): void {
    if (this.state !== 'closed') this.setState('closed', reason);
  }
}

/** The reason destroy(err) reports. */
export function destroyReason(err?: Error): string {
  return err ? `destroyed: ${err.message}` : 'destroyed';
}
