/**
 * The `dgram` port kind over unix datagram sockets: QEMU's
 * `-netdev dgram,local.type=unix,...,remote.type=unix,...` (QEMU net/dgram.c),
 * one Ethernet frame per datagram, no prefix. vmlink binds `local` and sends
 * to `remote`; the VM's netdev has them the other way round.
 *
 * Two sockets, because the kernel treats unix datagram senders differently
 * from receivers (net/unix/af_unix.c):
 * - receive: a socket bound to `local`, unconnected, read with recvmmsg
 *   (recvBatchFrom). Datagrams whose sender path is not `remote` are dropped
 *   and counted (ctx.onMalformed): a VM's port takes no frames from strangers.
 *   (Connecting this socket would make the kernel refuse strangers with
 *   EPERM, uncounted.)
 * - send: an unnamed socket connected to `remote`, written with sendmmsg. An
 *   unconnected sender whose peer's queue is full (net.unix.max_dgram_qlen,
 *   10 by default) gets EAGAIN and no wake-up; a connected one is woken by
 *   poll when the peer has room. So egress is real backpressure: frames the
 *   peer cannot take stay queued (at most ctx.queueLen, then QUEUE_FULL)
 *   until the socket is writable. When the peer is gone (no file, or the
 *   socket died: ECONNREFUSED), the next flush re-connects; frames that find
 *   no peer are dropped and counted (`no_peer`), as on a wire.
 *
 * Frames reach the sink in place, in a receive buffer shared by all unix
 * dgram ports (the sink runs synchronously, so one buffer serves them all).
 * Egress is copied into one arena and flushed once per event-loop turn.
 */
import { closeSync, unlinkSync } from 'node:fs';
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../native/index.js';
import type { Address } from '../../util/address.js';
import type { Probe } from '../../util/unix-socket.js';
import { PortAddressError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import { type Port, type PortContext, type PortState, WriteResult } from '../port.js';
import { createPortSocket, prepareUnixPath, type SocketAccessSpec } from '../unix-path.js';
import { deliverBatch, drainWithin } from './datagram-batch.js';
import { destroyReason, FdPortCore, releaseFd } from './fd-port.js';

type UnixAddress = Extract<Address, { type: 'unix' }>;

/** A unix dgram port's validated config (a `kind: dgram` spec whose addresses are `unix:`). */
export interface UnixDgramSpec {
  name: string;
  /** Where vmlink binds and receives (QEMU's `remote.path`). */
  local: UnixAddress;
  /** Where vmlink sends (QEMU's `local.path`). */
  remote: UnixAddress;
  /** Mode, owner and group of the bound `local` socket; default mode 0600. */
  socket?: SocketAccessSpec | undefined;
}

/** Datagrams per recvmmsg batch at most. */
const RX_BATCH = 64;
/** The shared receive buffer: RX_BATCH slots of up to 32 KiB, fewer for larger frames. */
const RX_BYTES = 2 << 20;
/** Egress arena (frames queued and not yet taken by the peer). */
const TX_BYTES = 1 << 20;
const CLOSE_GRACE_MS = 2000;

let sharedRx: Buffer | undefined;

/**
 * Probes a datagram socket file with a datagram connect: ECONNREFUSED or
 * ENOENT means nobody has it bound any more; success or EPROTOTYPE (a live
 * socket of another type) means someone is there.
 */
function probeDatagram(n: NativeAddon, path: string): Probe {
  const probe = n.socket(n.SOCK_DGRAM);
  try {
    n.connect(probe, path);
    return 'live';
  } catch (err) {
    return isSyscallError(err, 'ECONNREFUSED') || isSyscallError(err, 'ENOENT') ? 'stale' : 'live';
  } finally {
    closeSync(probe);
  }
}

export class UnixDgramPort implements Port {
  readonly name: string;
  readonly kind = 'dgram';
  readonly #local: string;
  readonly #remote: string;
  readonly #socket: SocketAccessSpec | undefined;
  readonly #ctx: PortContext;
  /** Receive slot: the largest frame rounded up to 8 bytes (a longer datagram is truncated, then dropped). */
  readonly #slot: number;
  #n: NativeAddon | undefined;
  #opened = false;
  #rxFd = -1;
  #txFd = -1;
  #rxPoller: Poller | undefined;
  #txPoller: Poller | undefined;
  #connected = false;
  readonly #rxLens = new Uint32Array(RX_BATCH);
  readonly #rxStrangers = new Uint8Array(RX_BATCH);
  readonly #tx: FrameArena;
  /** State, flush scheduling, batch counters and teardown order shared with the other fd ports. */
  readonly #core: FdPortCore;
  #waitingWritable = false;
  #drained: (() => void) | undefined;
  readonly #setDrained = (fn: (() => void) | undefined): void => {
    this.#drained = fn;
  };
  /** What a datagram from another sender is reported as (built once, not per datagram). */
  readonly #strangerReason: string;
  #closing: Promise<void> | undefined;
  readonly #onRx = (status: number): void => this.#read(status);
  readonly #onTx = (status: number): void => this.#writable(status);
  // counters for describe()
  #strangers = 0;
  #sendErrors = 0;
  #noPeer = 0;

  constructor(spec: UnixDgramSpec, ctx: PortContext) {
    this.name = spec.name;
    this.#local = spec.local.path;
    this.#remote = spec.remote.path;
    this.#socket = spec.socket;
    this.#ctx = ctx;
    this.#slot = (Math.min(ctx.maxFrameLen, RX_BYTES / 4) + 7) & ~7;
    this.#strangerReason = `datagram from a socket other than the port's remote unix:${spec.remote.path}`;
    this.#tx = new FrameArena(ctx.queueLen, Math.max(TX_BYTES, 2 * ctx.maxFrameLen));
    this.#core = new FdPortCore(ctx, this.#tx, () => this.#flush());
  }

  get state(): PortState {
    return this.#core.state;
  }

  get queued(): number {
    return this.#tx.queued;
  }

  async open(): Promise<void> {
    const where = `unix:${this.#local}`;
    if (this.#opened || this.#core.closed) throw new PortAddressError(this.name, where, 'the port was already opened');
    const n = native();
    await prepareUnixPath(this.name, this.#local, (path) => Promise.resolve(probeDatagram(n, path)));
    let rx = -1;
    let tx = -1;
    try {
      rx = n.socket(n.SOCK_DGRAM);
      // Bound with its mode, owner and group in place: a datagram socket receives as soon as it is bound.
      await createPortSocket(
        this.name,
        this.#local,
        this.#socket,
        (at) => n.bind(rx, at),
        () => undefined,
      );
      tx = n.socket(n.SOCK_DGRAM);
    } catch (err) {
      if (rx >= 0) closeSync(rx);
      if (err instanceof PortAddressError) throw err;
      const why = isSyscallError(err, 'EADDRINUSE') ? 'the path is in use; choose another' : describeError(err);
      throw new PortAddressError(this.name, where, why, { cause: err });
    }
    this.#opened = true;
    this.#n = n;
    this.#rxFd = rx;
    this.#txFd = tx;
    sharedRx ??= Buffer.allocUnsafe(RX_BYTES);
    this.#rxPoller = new n.Poller(rx, this.#onRx);
    this.#rxPoller.start(n.READABLE);
    this.#txPoller = new n.Poller(tx, this.#onTx);
    this.#connect(n);
    this.#core.setState('up', `bound ${where}, sending to unix:${this.#remote}`);
  }

  /** Connects the send socket to `remote`; false when nobody is bound there now. */
  #connect(n: NativeAddon): boolean {
    try {
      n.connect(this.#txFd, this.#remote);
      this.#connected = true;
    } catch (err) {
      this.#connected = false;
      this.#core.lastError = describeError(err);
    }
    return this.#connected;
  }

  /** One batch from the bound socket into the sink. Hot path: nothing allocated per frame. */
  #read(status: number): void {
    const n = this.#n;
    if (n === undefined || this.#rxFd < 0) return;
    if (status < 0) {
      this.#ctx.logger.warn({ status }, 'poll error on the unix datagram socket');
      return;
    }
    const rx = sharedRx as Buffer;
    const slot = this.#slot;
    const lens = this.#rxLens;
    const strangers = this.#rxStrangers;
    let count: number;
    try {
      count = n.recvBatchFrom(this.#rxFd, rx, slot, lens, this.#remote, strangers);
    } catch (err) {
      this.#core.lastError = describeError(err);
      this.#ctx.logger.warn({ err: this.#core.lastError }, 'receive failed on the unix datagram socket');
      return;
    }
    this.#core.rxBatches++;
    this.#core.rxFrames += count;
    this.#strangers += deliverBatch(this.#ctx, rx, slot, lens, strangers, count, this.#strangerReason);
  }

  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.#core.state !== 'up' || this.#closing) return WriteResult.DOWN;
    if (!this.#tx.push(buf, off, len)) return WriteResult.QUEUE_FULL;
    const c = this.#core;
    if (c.scheduled === undefined && !this.#waitingWritable) c.scheduled = setImmediate(c.flushBound);
    return WriteResult.OK;
  }

  /** Sends the queue with sendmmsg; keeps what the peer cannot take now and waits for POLLOUT. */
  #flush(): void {
    this.#core.scheduled = undefined;
    const n = this.#n;
    const tx = this.#tx;
    if (n === undefined || this.#txFd < 0 || tx.queued === 0) return;
    if (!this.#connected && !this.#connect(n)) {
      this.#dropQueue();
      return;
    }
    let reconnected = false;
    let done = false;
    while (!done) {
      let next: number;
      try {
        next = n.sendBatch(this.#txFd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null);
      } catch (err) {
        // The peer's socket died (QEMU restarted): the kernel disconnected us; dial the path again once.
        if (isSyscallError(err, 'ECONNREFUSED') || isSyscallError(err, 'ENOTCONN')) {
          this.#connected = false;
          if (!reconnected && this.#connect(n)) {
            reconnected = true;
            continue;
          }
          this.#core.lastError = describeError(err);
          this.#dropQueue();
          return;
        }
        // Any other error belongs to the first datagram: skip it and go on.
        this.#sendErrors++;
        this.#core.lastError = describeError(err);
        done = tx.advance(tx.head + 1);
        continue;
      }
      this.#core.txBatches++;
      this.#core.txFrames += next - tx.head;
      if (next === tx.head) break; // EAGAIN: the peer's queue is full
      done = tx.advance(next);
    }
    if (done) {
      this.#watchWritable(false);
      this.#drained?.();
    } else {
      this.#watchWritable(true);
    }
  }

  #watchWritable(on: boolean): void {
    if (on === this.#waitingWritable) return;
    this.#waitingWritable = on;
    const n = this.#n as NativeAddon;
    if (on) this.#txPoller?.start(n.WRITABLE);
    else this.#txPoller?.stop();
  }

  #writable(status: number): void {
    if (status < 0) {
      // The connected peer went away under us; the next flush finds out and re-connects.
      this.#connected = false;
    }
    this.#flush();
  }

  #dropQueue(): void {
    this.#noPeer += this.#tx.clear();
    this.#watchWritable(false);
    this.#drained?.();
  }

  describe(): Record<string, unknown> {
    return {
      local: `unix:${this.#local}`,
      remote: `unix:${this.#remote}`,
      peer: this.#connected ? 'connected' : 'absent',
      queued: this.queued,
      strangers: this.#strangers,
      send_errors: this.#sendErrors,
      no_peer: this.#noPeer,
      ...this.#core.counters(),
      last_error: this.#core.lastError || undefined,
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    if (!this.#core.closed && this.#txFd >= 0) {
      this.#core.cancelFlush();
      this.#flush();
      // A slow peer gets a grace period to take the rest.
      if (this.queued > 0) await drainWithin(CLOSE_GRACE_MS, this.#setDrained);
    }
    this.#teardown('closed');
  }

  async destroy(err?: Error): Promise<void> {
    this.#teardown(destroyReason(err));
  }

  /** Releases both sockets and removes the bound socket file. Idempotent. */
  #teardown(reason: string): void {
    this.#core.teardown(reason, () => {
      this.#drained?.();
      if (this.#rxFd >= 0) {
        try {
          unlinkSync(this.#local);
        } catch {
          // already gone
        }
      }
      this.#rxFd = releaseFd(this.#rxPoller, this.#rxFd);
      this.#txFd = releaseFd(this.#txPoller, this.#txFd);
      this.#rxPoller = this.#txPoller = undefined;
    });
  }
}
