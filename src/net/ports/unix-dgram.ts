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
import { isSyscallError, type NativeAddon, native } from '../../native/index.js';
import type { Address } from '../../util/address.js';
import type { Probe } from '../../util/unix-socket.js';
import { PortAddressError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import type { PortContext } from '../port.js';
import { createPortSocket, prepareUnixPath, type SocketAccessSpec } from '../unix-path.js';
import { DatagramReader } from './datagram-batch.js';
import { SEND_DROP_ALL } from './fd-port.js';
import { FdPort } from './fd-port-base.js';

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

export class UnixDgramPort extends FdPort {
  readonly kind = 'dgram';
  readonly #local: string;
  readonly #remote: string;
  readonly #socket: SocketAccessSpec | undefined;
  readonly #ctx: PortContext;
  #opened = false;
  #connected = false;
  readonly #reader: DatagramReader;
  /** Frames dropped because no peer had `remote` bound. */
  #noPeer = 0;

  constructor(spec: UnixDgramSpec, ctx: PortContext) {
    super(spec.name, ctx, new FrameArena(ctx.queueLen, Math.max(TX_BYTES, 2 * ctx.maxFrameLen)));
    this.#local = spec.local.path;
    this.#remote = spec.remote.path;
    this.#socket = spec.socket;
    this.#ctx = ctx;
    const slot = (Math.min(ctx.maxFrameLen, RX_BYTES / 4) + 7) & ~7;
    const strangerReason = `datagram from a socket other than the port's remote unix:${spec.remote.path}`;
    this.#reader = new DatagramReader(ctx, slot, RX_BATCH, strangerReason);
  }

  async open(): Promise<void> {
    const where = `unix:${this.#local}`;
    if (this.#opened || this.core.closed) throw new PortAddressError(this.name, where, 'the port was already opened');
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
    sharedRx ??= Buffer.allocUnsafe(RX_BYTES);
    this.core.attach(n, rx, tx);
    this.#connect(n);
    this.core.setState('up', `bound ${where}, sending to unix:${this.#remote}`);
  }

  /** Connects the send socket to `remote`; false when nobody is bound there now. */
  #connect(n: NativeAddon): boolean {
    try {
      n.connect(this.core.txFd, this.#remote);
      this.#connected = true;
    } catch (err) {
      this.#connected = false;
      this.core.lastError = describeError(err);
    }
    return this.#connected;
  }

  protected override pollError(status: number, onTxFd: boolean): void {
    if (onTxFd) {
      // The connected peer went away under us; the flush finds out and re-connects.
      this.#connected = false;
      this.core.flush();
    } else {
      this.#ctx.logger.warn({ status }, 'poll error on the unix datagram socket');
    }
  }

  /** FdIo.read: one batch from the bound socket into the sink. Hot path: nothing allocated per frame. */
  protected readBatch(): void {
    try {
      this.#reader.read(this.core, sharedRx as Buffer, this.#remote);
    } catch (err) {
      this.core.lastError = describeError(err);
      this.#ctx.logger.warn({ err: this.core.lastError }, 'receive failed on the unix datagram socket');
    }
  }

  /**
   * FdIo.send: sendmmsg on the connected socket; what the peer cannot take
   * now stays queued (EAGAIN, then POLLOUT). With no peer bound at `remote`,
   * everything queued is dropped and counted (`no_peer`).
   */
  protected sendBatch(tx: FrameArena): number {
    const c = this.core;
    const n = c.n as NativeAddon;
    if (!this.#connected && !this.#connect(n)) return this.#noPeerDrop(tx);
    try {
      return n.sendBatch(c.txFd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null);
    } catch (err) {
      // Any other error belongs to the first datagram: the core skips it.
      if (!isSyscallError(err, 'ECONNREFUSED') && !isSyscallError(err, 'ENOTCONN')) throw err;
    }
    // The peer's socket died (QEMU restarted): the kernel disconnected us; dial the path again once.
    this.#connected = false;
    if (!this.#connect(n)) return this.#noPeerDrop(tx);
    try {
      return n.sendBatch(c.txFd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null);
    } catch (err) {
      if (!isSyscallError(err, 'ECONNREFUSED') && !isSyscallError(err, 'ENOTCONN')) throw err;
      this.#connected = false;
      c.lastError = describeError(err);
      return this.#noPeerDrop(tx);
    }
  }

  #noPeerDrop(tx: FrameArena): number {
    this.#noPeer += tx.queued;
    return SEND_DROP_ALL;
  }

  describe(): Record<string, unknown> {
    return {
      local: `unix:${this.#local}`,
      remote: `unix:${this.#remote}`,
      peer: this.#connected ? 'connected' : 'absent',
      queued: this.queued,
      strangers: this.#reader.strangers,
      send_errors: this.core.sendErrors,
      no_peer: this.#noPeer,
      ...this.core.counters(),
      last_error: this.core.lastError || undefined,
    };
  }

  /** Removes the bound socket file (the core closes both sockets). */
  protected override freeResources(): void {
    if (!this.#opened) return;
    try {
      unlinkSync(this.#local);
    } catch {
      // already gone
    }
  }
}
