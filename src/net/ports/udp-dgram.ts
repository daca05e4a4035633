/**
 * The `dgram` port kind over UDP: QEMU's `-netdev dgram` with inet
 * addresses (QEMU net/dgram.c), one Ethernet frame per datagram, no length
 * prefix. vmlink binds `local` and sends to `remote`; the VM's netdev has
 * them the other way round.
 *
 * One socket from the addon (not Node's dgram, which makes one syscall per
 * datagram): readiness through a uv_poll Poller, recvmmsg batches with the
 * sender compared in C (datagrams from anyone but `remote` are dropped and
 * counted, ctx.onMalformed), and egress queued in a FrameArena, sent with
 * sendmmsg once per event-loop turn. UDP never waits for the peer: the
 * socket only blocks when its own send buffer is full, and then the rest
 * waits for POLLOUT (at most ctx.queueLen frames; beyond, QUEUE_FULL).
 */

import { lookup } from 'node:dns/promises';
import { closeSync } from 'node:fs';
import { isIP } from 'node:net';
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../native/index.js';
import { type Address, formatAddress } from '../../util/address.js';
import { PortAddressError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import { type Port, type PortContext, type PortState, WriteResult } from '../port.js';
import { deliverBatch, drainWithin } from './datagram-batch.js';
import { destroyReason, FdPortCore, releaseFd } from './fd-port.js';

type UdpAddress = Extract<Address, { type: 'udp' }>;

/** A dgram port over UDP (a `kind: dgram` spec whose addresses are `udp:`). */
export interface UdpDgramSpec {
  name: string;
  /** Where vmlink binds and receives (QEMU's `remote`). */
  local: UdpAddress;
  /** Where vmlink sends (QEMU's `local`). */
  remote: UdpAddress;
}

/** Datagrams per receive call at most. */
const RX_BATCH = 64;
/** Receive buffer shared by all UDP ports (the sink runs synchronously): RX_BATCH slots. */
const RX_BYTES = 4 << 20;
/** Egress arena. */
const TX_BYTES = 1 << 20;
/** Kernel socket buffers: room for bursts both ways. */
const SOCK_BUF = 4 << 20;
const CLOSE_GRACE_MS = 2000;

let sharedRx: Buffer | undefined;

export class UdpDgramPort implements Port {
  readonly name: string;
  readonly kind = 'dgram';
  readonly #spec: UdpDgramSpec;
  readonly #ctx: PortContext;
  /** Receive slot: the largest frame, 8-byte aligned (a longer datagram is truncated, then dropped). */
  readonly #slot: number;
  #n: NativeAddon | undefined;
  #opened = false;
  #fd = -1;
  #poller: Poller | undefined;
  /** The remote as a raw sockaddr (sendBatch dest, recvBatchFrom peer). */
  #remote: Buffer | undefined;
  #local = '';
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
  readonly #onPoll = (status: number, events: number): void => this.#ready(status, events);
  // counters for describe()
  #strangers = 0;
  #sendErrors = 0;

  constructor(spec: UdpDgramSpec, ctx: PortContext) {
    this.name = spec.name;
    this.#spec = spec;
    this.#ctx = ctx;
    this.#slot = (Math.min(ctx.maxFrameLen, RX_BYTES / RX_BATCH) + 7) & ~7;
    this.#strangerReason = `datagram from an address other than the port's remote ${formatAddress(spec.remote)}`;
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
    const where = formatAddress(this.#spec.local);
    if (this.#opened || this.#core.closed) throw new PortAddressError(this.name, where, 'the port was already opened');
    this.#opened = true;
    try {
      await this.#bind(where);
    } catch (err) {
      // Nothing was bound: the caller may fix the cause and open again.
      this.#opened = false;
      throw err;
    }
  }

  async #bind(where: string): Promise<void> {
    const localHost = await this.#resolve(this.#spec.local.host, 0, where);
    const v6 = isIP(localHost) === 6;
    const remoteWhere = formatAddress(this.#spec.remote);
    const remoteHost = await this.#resolve(this.#spec.remote.host, v6 ? 0 : 4, remoteWhere);
    if (!v6 && isIP(remoteHost) === 6)
      throw new PortAddressError(this.name, remoteWhere, `an IPv4 local address cannot send to IPv6 ${remoteHost}`);
    const n = native();
    const remote = n.sockaddrInet(remoteHost, this.#spec.remote.port, v6);
    let fd: number;
    let port: number;
    try {
      ({ fd, port } = n.udpOpen(localHost, this.#spec.local.port));
    } catch (err) {
      const why = isSyscallError(err, 'EADDRINUSE')
        ? 'the address is already in use; choose another'
        : describeError(err);
      throw new PortAddressError(this.name, where, why, { cause: err });
    }
    if (this.#core.closed) {
      closeSync(fd);
      return;
    }
    try {
      n.setBuffers(fd, SOCK_BUF, SOCK_BUF);
    } catch {
      // Keep the kernel's defaults: bursts may drop sooner, nothing breaks.
    }
    this.#n = n;
    this.#fd = fd;
    this.#remote = remote;
    this.#local = formatAddress({ type: 'udp', host: localHost, port });
    sharedRx ??= Buffer.allocUnsafe(RX_BYTES);
    this.#poller = new n.Poller(fd, this.#onPoll);
    this.#poller.start(n.READABLE);
    this.#core.setState('up', `bound ${this.#local}, sending to ${remoteWhere}`);
  }

  async #resolve(host: string, family: 0 | 4 | 6, where: string): Promise<string> {
    if (isIP(host)) return host;
    try {
      return (await lookup(host, { family })).address;
    } catch (err) {
      throw new PortAddressError(this.name, where, `cannot resolve "${host}": ${describeError(err)}`, { cause: err });
    }
  }

  #ready(status: number, events: number): void {
    const n = this.#n;
    if (n === undefined || this.#fd < 0) return;
    if (status < 0) {
      // A pending socket error (an ICMP error for an earlier datagram); the next calls take it.
      this.#core.lastError = `poll error ${status}`;
    }
    if (events & n.WRITABLE) this.#flush();
    if (events & n.READABLE || status < 0) this.#read(n);
  }

  /** One batch from the socket into the sink. Hot path: nothing allocated per frame. */
  #read(n: NativeAddon): void {
    const rx = sharedRx as Buffer;
    const slot = this.#slot;
    const lens = this.#rxLens;
    const strangers = this.#rxStrangers;
    let count: number;
    try {
      count = n.recvBatchFrom(this.#fd, rx, slot, lens, this.#remote as Buffer, strangers);
    } catch (err) {
      // ECONNREFUSED and the like: an ICMP error about a datagram we sent; nothing to read.
      this.#core.lastError = describeError(err);
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

  /** Sends the queue with sendmmsg; on EAGAIN keeps the rest and waits for POLLOUT. */
  #flush(): void {
    this.#core.scheduled = undefined;
    const n = this.#n;
    const tx = this.#tx;
    if (n === undefined || this.#fd < 0 || tx.queued === 0) return;
    let done = false;
    while (!done) {
      let next: number;
      try {
        next = n.sendBatch(this.#fd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, this.#remote as Buffer);
      } catch (err) {
        // An error of the first datagram (an ICMP error reported late, EMSGSIZE, ...): skip it and go on.
        this.#sendErrors++;
        this.#core.lastError = describeError(err);
        done = tx.advance(tx.head + 1);
        continue;
      }
      this.#core.txBatches++;
      this.#core.txFrames += next - tx.head;
      if (next === tx.head) break; // EAGAIN: our send buffer is full
      done = tx.advance(next);
    }
    this.#watchWritable(!done);
    if (done) this.#drained?.();
  }

  #watchWritable(on: boolean): void {
    if (on === this.#waitingWritable) return;
    this.#waitingWritable = on;
    const n = this.#n as NativeAddon;
    this.#poller?.start(on ? n.READABLE | n.WRITABLE : n.READABLE);
  }

  describe(): Record<string, unknown> {
    return {
      local: this.#local || formatAddress(this.#spec.local),
      remote: formatAddress(this.#spec.remote),
      queued: this.queued,
      strangers: this.#strangers,
      send_errors: this.#sendErrors,
      ...this.#core.counters(),
      last_error: this.#core.lastError || undefined,
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    if (!this.#core.closed && this.#fd >= 0) {
      this.#core.cancelFlush();
      this.#flush();
      if (this.queued > 0) await drainWithin(CLOSE_GRACE_MS, this.#setDrained);
    }
    this.#teardown('closed');
  }

  async destroy(err?: Error): Promise<void> {
    this.#teardown(destroyReason(err));
  }

  /** Releases the socket. Idempotent. */
  #teardown(reason: string): void {
    this.#core.teardown(reason, () => {
      this.#drained?.();
      this.#fd = releaseFd(this.#poller, this.#fd);
      this.#poller = undefined;
    });
  }
}
