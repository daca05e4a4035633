/**
 * The UDP transport of links: VXLAN (RFC 7348), so vmlink exchanges frames
 * with Linux kernel `vxlan` devices and other VTEPs, and with other vmlink
 * hosts, on UDP port 4789 by default.
 *
 * Each datagram is an 8-byte VXLAN header and one Ethernet frame (RFC 7348
 * §5): flags (the I bit 0x08 says the VNI is valid; the other bits are
 * reserved, sent as zero and ignored on receipt), 24 reserved bits, the
 * 24-bit VNI, 8 reserved bits. There is no handshake and no control path:
 * a channel exists for every configured remote VTEP, is "up" at once, and
 * receives the datagrams whose source address is that VTEP's (the kernel
 * picks the source port per flow, so only the address is matched).
 * Datagrams from unknown addresses, without the I bit or too short are
 * dropped and counted.
 *
 * Data path (docs/overlay.md "The VXLAN transport"): one receiving socket
 * read with recvmmsg (udpRecvBatch: the sender of each datagram lands in a
 * buffer, so nothing is allocated per datagram), with UDP GRO where the
 * kernel has it (runs of one sender's datagrams arrive as one buffer and
 * their size). Sending: a few sockets, each bound to its own source port in
 * `sourcePorts` (default 49152-65535, §5); a frame leaves from the one its
 * inner flow hashes to (vxlan-flow.ts), queued and sent with sendmmsg once
 * per event-loop turn, with UDP GSO where the kernel has it
 * (vxlan-egress.ts).
 *
 * MTU: a datagram carries the frame plus 36 bytes (outer IPv4 20, UDP 8,
 * VXLAN 8); with the outer Ethernet header that is the 50 bytes of RFC 7348
 * §4.3. A frame longer than `underlayMtu - 36` bytes is dropped and counted
 * in `drops_too_big` (the underlay would fragment or drop it); set the
 * network MTU 50 bytes below the underlay's (1450 on a 1500-byte LAN).
 */
import { lookup } from 'node:dns/promises';
import { closeSync } from 'node:fs';
import { isIP } from 'node:net';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../native/index.js';
import { WriteResult } from '../port.js';
import { LinkDialError, VxlanConfigError } from './errors.js';
import type { LinkChannel, LinkTransport, PeerHello, TransportAddress } from './transport.js';
import { parseVxlan, VXLAN_HLEN, VXLAN_OVERHEAD, VxlanChannel, type VxlanSender, writeVxlan } from './vxlan-channel.js';
import { type EgressCounters, VxlanEgress } from './vxlan-egress.js';
import { flowHash } from './vxlan-flow.js';
import { TcpCoalescer } from './vxlan-gro.js';
import { SENDER_REC, senderText, VtepTable } from './vxlan-vteps.js';

export { parseVxlan, VXLAN_HLEN, VXLAN_OVERHEAD, writeVxlan } from './vxlan-channel.js';

/** Default source ports (RFC 7348 §5: the dynamic/private range). */
export const VXLAN_SOURCE_PORTS = { min: 49152, max: 65535 } as const;

/** Sending sockets (source ports) at most. */
const SOURCE_SOCKETS = 8;
/** Datagrams per receive call. */
const RX_BATCH = 64;
/** Receive slot with UDP GRO: the largest coalesced datagram. */
const GRO_SLOT = 65536;
/** Kernel socket buffers (bursts of 64 KB segments cut into datagrams). */
const RX_SOCK_BUF = 8 << 20;
const TX_SOCK_BUF = 4 << 20;

export interface VxlanTransportOptions {
  logger: Logger;
  /** Networks offered to every VTEP (all local networks). */
  hello: () => PeerHello;
  /** Underlay MTU in bytes (the IP MTU of the path to the VTEPs). Default 1500. */
  underlayMtu?: number | undefined;
  /**
   * UDP source ports of sent datagrams, chosen per inner flow (RFC 7348 §5).
   * Default 49152-65535. min = max = the listening port: every datagram
   * leaves from the listening socket.
   */
  sourcePorts?: { min: number; max: number } | undefined;
  /**
   * Use UDP GSO and GRO where the kernel has them, and merge received TCP
   * frames into large segments. Default true (false: one datagram per
   * message, every frame delivered as it came).
   */
  offloads?: boolean | undefined;
}

/** The transport's data-path counters (for tests, benchmarks and logs). */
export interface VxlanCounters extends EgressCounters {
  /** udpRecvBatch calls that returned datagrams, and the buffers they returned. */
  rxCalls: number;
  rxBuffers: number;
  /** VXLAN datagrams received (a GRO buffer holds several). */
  rxDatagrams: number;
}

export class VxlanTransport implements LinkTransport, VxlanSender {
  readonly kind = 'vxlan';
  readonly #o: VxlanTransportOptions;
  readonly #log: Logger;
  #n: NativeAddon | undefined;
  #fd = -1;
  #v6 = false;
  #poller: Poller | undefined;
  /** The sending sockets' pollers (made when one first waits for POLLOUT); closed before their fds. */
  readonly #txPollers: Poller[] = [];
  #rxWritable = false;
  /** Receive slot bytes; GRO on the receiving socket. */
  #slot = 0;
  #gro = false;
  #rx: Buffer | undefined;
  readonly #rxLens = new Uint32Array(RX_BATCH);
  readonly #rxGso = new Uint32Array(RX_BATCH);
  readonly #rxFrom = Buffer.alloc(RX_BATCH * SENDER_REC);
  /** Sending sockets, one per source port. */
  #tx: VxlanEgress[] = [];
  /** The VTEPs: destination entries and the lookup of received datagrams' channels. */
  readonly #vteps = new VtepTable();
  #scheduled: NodeJS.Immediate | undefined;
  readonly #flushBound = (): void => this.#flush();
  /** Datagrams dropped: unknown source, not VXLAN (no I flag, short, or longer than a receive slot). */
  unknownSource = 0;
  malformed = 0;
  readonly counters: VxlanCounters = {
    calls: 0,
    datagrams: 0,
    errors: 0,
    lastError: '',
    rxCalls: 0,
    rxBuffers: 0,
    rxDatagrams: 0,
  };
  #lastLog = -Infinity;
  /** Software GRO of received TCP frames (off with `offloads: false`). */
  readonly coalescer: TcpCoalescer<VxlanChannel> | undefined;

  constructor(opts: VxlanTransportOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    if (opts.offloads !== false)
      this.coalescer = new TcpCoalescer<VxlanChannel>((ch, vni, buf, off, len, meta) => {
        if (meta === undefined) ch.handlers?.frame(vni, buf, off, len);
        else ch.handlers?.frame(vni, buf, off, len, meta);
      });
  }

  /** The source ports datagrams leave from; UDP GSO and GRO as the kernel granted them. */
  get offloads(): { sourcePorts: number[]; gso: boolean; gro: boolean } {
    return { sourcePorts: this.#tx.map((t) => t.port), gso: this.#tx.some((t) => t.gso), gro: this.#gro };
  }

  /** Binds the UDP socket; VTEPs are only those dialled (no channel is ever accepted). */
  async listen(address: TransportAddress, _onChannel: (ch: LinkChannel) => void): Promise<TransportAddress> {
    const host = await resolve(address.host, 0);
    const n = native();
    const { fd, port } = n.udpOpen(host, address.port);
    try {
      this.#setUp(n, fd, host, port);
    } catch (err) {
      this.#teardown();
      throw err;
    }
    return { host, port };
  }

  #setUp(n: NativeAddon, fd: number, host: string, port: number): void {
    this.#n = n;
    this.#fd = fd;
    this.#v6 = isIP(host) === 6;
    const offloads = this.#o.offloads !== false;
    trySetBuffers(n, fd, 0, RX_SOCK_BUF);
    const bits = n.udpOffloads(fd, offloads);
    this.#gro = (bits & 2) !== 0;
    const mtu = this.#o.underlayMtu ?? 1500;
    this.#slot = this.#gro ? GRO_SLOT : (Math.max(mtu, 2048) + 7) & ~7;
    this.#rx = Buffer.allocUnsafe(RX_BATCH * this.#slot);
    this.#poller = new n.Poller(fd, (status, events) => this.#ready(status, events));
    this.#poller.start(n.READABLE);
    const range = this.#o.sourcePorts ?? VXLAN_SOURCE_PORTS;
    if (range.min === range.max && range.min === port) {
      this.#tx.push(this.#egress(n, fd, port, offloads && (bits & 1) !== 0, true));
      return;
    }
    this.#openSources(n, host, range, offloads);
  }

  /** Binds up to SOURCE_SOCKETS sending sockets on distinct random ports of `range`. */
  #openSources(n: NativeAddon, host: string, range: { min: number; max: number }, offloads: boolean): void {
    const size = range.max - range.min + 1;
    const want = Math.min(SOURCE_SOCKETS, size);
    const tried = new Set<number>();
    while (this.#tx.length < want && tried.size < size && tried.size < want * 64) {
      const p = range.min + Math.floor(Math.random() * size);
      if (tried.has(p)) continue;
      tried.add(p);
      let s: { fd: number; port: number };
      try {
        s = n.udpOpen(host, p);
      } catch (err) {
        if (isSyscallError(err, 'EADDRINUSE')) continue;
        throw err;
      }
      trySetBuffers(n, s.fd, TX_SOCK_BUF, 0);
      this.#tx.push(this.#egress(n, s.fd, s.port, offloads && (n.udpOffloads(s.fd, false) & 1) !== 0, false));
    }
    if (this.#tx.length === 0)
      throw new VxlanConfigError(
        `overlay.vxlan.source_ports ${range.min}-${range.max}: no port of the range is free on ${host}; widen the range or free a port`,
      );
  }

  #egress(n: NativeAddon, fd: number, port: number, gso: boolean, shared: boolean): VxlanEgress {
    let poller: Poller | undefined;
    const watch = shared
      ? (on: boolean) => this.#watchRx(on)
      : (on: boolean) => {
          if (on && this.#fd >= 0) {
            if (poller === undefined) {
              poller = new n.Poller(fd, (_s, events) => {
                if (events & n.WRITABLE) this.#flush();
              });
              this.#txPollers.push(poller);
            }
            poller.start(n.WRITABLE);
          } else poller?.stop();
        };
    return new VxlanEgress(n, fd, port, gso, shared, this.counters, watch, (err) =>
      this.#log.warn(
        { err: describeError(err), port },
        'vxlan: the kernel refused a UDP GSO send; sending datagram by datagram on this socket',
      ),
    );
  }

  #watchRx(on: boolean): void {
    const n = this.#n;
    if (on === this.#rxWritable || n === undefined) return;
    this.#rxWritable = on;
    this.#poller?.start(on ? n.READABLE | n.WRITABLE : n.READABLE);
  }

  #ready(status: number, events: number): void {
    const n = this.#n;
    if (n === undefined || this.#fd < 0) return;
    if (events & n.WRITABLE) this.#flush();
    if (events & n.READABLE || status < 0) this.#read(n);
  }

  /** One batch from the receiving socket. Hot path: nothing allocated per datagram. */
  #read(n: NativeAddon): void {
    const rx = this.#rx as Buffer;
    const slot = this.#slot;
    const lens = this.#rxLens;
    const gso = this.#rxGso;
    const from = this.#rxFrom;
    let count: number;
    try {
      count = n.udpRecvBatch(this.#fd, rx, slot, lens, from, this.#gro ? gso : null);
    } catch (err) {
      // An ICMP error reported on the socket; nothing to read.
      this.counters.lastError = describeError(err);
      return;
    }
    if (count === 0) return;
    this.counters.rxCalls++;
    this.counters.rxBuffers += count;
    for (let i = 0; i < count; i++) {
      const len = lens[i] as number;
      const base = i * slot;
      const ch = this.#vteps.sender(from, i * SENDER_REC);
      const seg = this.#gro && (gso[i] as number) > 0 ? (gso[i] as number) : len;
      if (ch === undefined) {
        this.unknownSource += len > slot ? 1 : Math.ceil(len / seg);
        this.#rateLog(from, i, 'datagram from an address that is no configured VXLAN link');
        continue;
      }
      if (len > slot) {
        this.malformed++;
        this.#rateLog(from, i, `datagram of ${len} bytes, longer than any this host takes`);
        continue;
      }
      for (let o = 0; o < len; o += seg) this.#deliver(ch, rx, base + o, Math.min(seg, len - o), from, i);
    }
    this.coalescer?.flush();
  }

  #deliver(ch: VxlanChannel, rx: Buffer, at: number, len: number, from: Buffer, i: number): void {
    this.counters.rxDatagrams++;
    const vni = parseVxlan(rx, len, at);
    if (vni < 0) {
      this.malformed++;
      this.#rateLog(from, i, 'not a VXLAN datagram (no I flag, or shorter than header and Ethernet header)');
      return;
    }
    const h = ch.handlers;
    if (h === undefined || (h.carries !== undefined && !h.carries(vni))) {
      // A VNI the link does not carry (VNI 0 never is): a drop, not a received frame.
      ch.s.drops_unknown_vni++;
      return;
    }
    ch.s.rx_frames++;
    ch.s.rx_bytes += len - VXLAN_HLEN;
    if (this.coalescer !== undefined) this.coalescer.push(ch, vni, rx, at + VXLAN_HLEN, len - VXLAN_HLEN);
    else ch.handlers?.frame(vni, rx, at + VXLAN_HLEN, len - VXLAN_HLEN);
  }

  #rateLog(from: Buffer, i: number, what: string): void {
    const now = performance.now();
    if (now - this.#lastLog < 1000) return;
    this.#lastLog = now;
    const who = senderText(from, i * SENDER_REC);
    this.#log.warn(
      { from: who, unknown: this.unknownSource, malformed: this.malformed },
      `vxlan: dropped a ${what} (${who})`,
    );
  }

  /**
   * Queues one datagram (VXLAN header for `vni` + the frame) to destination
   * `dest`, on the sending socket of the frame's flow. QUEUE_FULL when that
   * socket's queue is full; DOWN when the transport is closed.
   */
  queue(dest: number, vni: number, buf: Buffer, off: number, len: number): WriteResult {
    const tx = this.#tx;
    if (tx.length === 0 || this.#fd < 0) return WriteResult.DOWN;
    const e = tx.length === 1 ? (tx[0] as VxlanEgress) : (tx[flowHash(buf, off, len) % tx.length] as VxlanEgress);
    const at = e.push(dest, VXLAN_HLEN, buf, off, len);
    if (at < 0) return WriteResult.QUEUE_FULL;
    writeVxlan(e.buffer, at, vni);
    if (this.#scheduled === undefined) this.#scheduled = setImmediate(this.#flushBound);
    return WriteResult.OK;
  }

  #flush(): void {
    if (this.#scheduled !== undefined) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    for (const e of this.#tx) if (e.queued > 0) e.flush(this.#vteps.table);
  }

  /** A channel to the VTEP at `address`, up at once (VXLAN has no handshake). */
  async dial(address: TransportAddress): Promise<LinkChannel> {
    const where = `udp:${address.host}:${address.port}`;
    const n = this.#n;
    if (n === undefined || this.#fd < 0)
      throw new LinkDialError(where, 'the VXLAN socket is not bound (overlay.vxlan.listen)');
    let ip: string;
    try {
      ip = await resolve(address.host, this.#v6 ? 0 : 4);
    } catch (err) {
      throw new LinkDialError(where, `cannot resolve "${address.host}": ${describeError(err)}`, { cause: err });
    }
    if (!this.#v6 && isIP(ip) === 6)
      throw new LinkDialError(where, `the VXLAN socket is IPv4 (overlay.vxlan.listen) and cannot reach IPv6 ${ip}`);
    if (this.#vteps.has(ip)) throw new LinkDialError(where, 'another VXLAN link already uses that address');
    const sa = n.sockaddrInet(ip, address.port, this.#v6);
    const dest = this.#vteps.allocDest(
      sa,
      this.#tx.every((e) => e.queued === 0),
    );
    const peer: PeerHello = { host: `vtep-${ip.replaceAll(':', '-')}`.slice(0, 32), relay: false };
    const ch = new VxlanChannel(peer, address, ip, dest, this, (this.#o.underlayMtu ?? 1500) - VXLAN_OVERHEAD);
    this.#vteps.add(n, ip, isIP(ip) === 4, ch);
    return ch;
  }

  forget(ch: VxlanChannel): void {
    this.#vteps.forget(ch);
  }

  async close(): Promise<void> {
    for (const ch of this.#vteps.channels()) await ch.close('the daemon is stopping');
    this.#flush();
    this.#teardown();
  }

  #teardown(): void {
    if (this.#scheduled !== undefined) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const fd = this.#fd;
    this.#fd = -1;
    for (const p of this.#txPollers.splice(0)) p.close();
    for (const e of this.#tx) e.close();
    this.#tx = [];
    this.#poller?.close();
    this.#poller = undefined;
    if (fd >= 0) closeSync(fd);
  }
}

/** A numeric address for `host` (numeric hosts as they are). */
async function resolve(host: string, family: 0 | 4 | 6): Promise<string> {
  if (isIP(host)) return host;
  return (await lookup(host, { family })).address;
}

function trySetBuffers(n: NativeAddon, fd: number, snd: number, rcv: number): void {
  try {
    n.setBuffers(fd, snd, rcv);
  } catch {
    // The kernel's defaults: bursts may drop sooner; nothing breaks.
  }
}
