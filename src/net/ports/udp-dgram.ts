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
import { isSyscallError, type NativeAddon, native } from '../../native/index.js';
import { type Address, formatAddress } from '../../util/address.js';
import { PortAddressError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import type { PortContext } from '../port.js';
import { DatagramReader } from './datagram-batch.js';
import { FdPort } from './fd-port-base.js';

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

let sharedRx: Buffer | undefined;

export class UdpDgramPort extends FdPort {
  readonly kind = 'dgram';
  readonly #spec: UdpDgramSpec;
  #opened = false;
  /** The remote as a raw sockaddr (sendBatch dest, recvBatchFrom peer). */
  #remote: Buffer | undefined;
  #local = '';
  readonly #reader: DatagramReader;

  constructor(spec: UdpDgramSpec, ctx: PortContext) {
    super(spec.name, ctx, new FrameArena(ctx.queueLen, Math.max(TX_BYTES, 2 * ctx.maxFrameLen)));
    this.#spec = spec;
    const slot = (Math.min(ctx.maxFrameLen, RX_BYTES / RX_BATCH) + 7) & ~7;
    const strangerReason = `datagram from an address other than the port's remote ${formatAddress(spec.remote)}`;
    this.#reader = new DatagramReader(ctx, slot, RX_BATCH, strangerReason);
  }

  async open(): Promise<void> {
    const where = formatAddress(this.#spec.local);
    if (this.#opened || this.core.closed) throw new PortAddressError(this.name, where, 'the port was already opened');
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
    if (this.core.closed) {
      closeSync(fd);
      return;
    }
    try {
      n.setBuffers(fd, SOCK_BUF, SOCK_BUF);
    } catch {
      // Keep the kernel's defaults: bursts may drop sooner, nothing breaks.
    }
    this.#remote = remote;
    this.#local = formatAddress({ type: 'udp', host: localHost, port });
    sharedRx ??= Buffer.allocUnsafe(RX_BYTES);
    this.core.attach(n, fd);
    this.core.setState('up', `bound ${this.#local}, sending to ${remoteWhere}`);
  }

  async #resolve(host: string, family: 0 | 4 | 6, where: string): Promise<string> {
    if (isIP(host)) return host;
    try {
      return (await lookup(host, { family })).address;
    } catch (err) {
      throw new PortAddressError(this.name, where, `cannot resolve "${host}": ${describeError(err)}`, { cause: err });
    }
  }

  /**
   * FdIo.send: sendmmsg to the remote. UDP never waits for the peer: EAGAIN only when our own send buffer is full.
   * An error of the first datagram (an ICMP error reported late, EMSGSIZE, ...) throws: the core skips and counts it.
   */
  protected sendBatch(tx: FrameArena): number {
    const c = this.core;
    return (c.n as NativeAddon).sendBatch(c.fd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, this.#remote as Buffer);
  }

  /** A pending socket error (an ICMP error for an earlier datagram); the next calls take it. */
  protected override pollError(status: number): void {
    this.core.lastError = `poll error ${status}`;
    if (!this.core.held) this.readBatch();
  }

  /** FdIo.read: one batch from the socket into the sink. Hot path: nothing allocated per frame. */
  protected readBatch(): void {
    try {
      this.#reader.read(this.core, sharedRx as Buffer, this.#remote as Buffer);
    } catch (err) {
      // ECONNREFUSED and the like: an ICMP error about a datagram we sent; nothing to read.
      this.core.lastError = describeError(err);
    }
  }

  describe(): Record<string, unknown> {
    return {
      local: this.#local || formatAddress(this.#spec.local),
      remote: formatAddress(this.#spec.remote),
      queued: this.queued,
      strangers: this.#reader.strangers,
      send_errors: this.core.sendErrors,
      ...this.core.counters(),
      last_error: this.core.lastError || undefined,
    };
  }
}
