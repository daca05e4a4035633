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
 * MTU: a datagram carries the frame plus 36 bytes (outer IPv4 20, UDP 8,
 * VXLAN 8); with the outer Ethernet header that is the 50 bytes of RFC 7348
 * §4.3. A frame longer than `underlayMtu - 36` bytes is dropped and counted
 * in `drops_too_big` (the underlay would fragment or drop it); set the
 * network MTU 50 bytes below the underlay's (1450 on a 1500-byte LAN).
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { WriteResult } from '../ports/port.js';
import { LinkDialError } from './errors.js';
import type {
  ChannelHandlers,
  ChannelStats,
  ControlMessage,
  LinkChannel,
  LinkTransport,
  PeerHello,
  TransportAddress,
} from './transport.js';

/** IANA port of VXLAN (RFC 7348 §5). */
export const VXLAN_PORT = 4789;
/** VXLAN header bytes. */
export const VXLAN_HLEN = 8;
/** Outer IPv4 + UDP + VXLAN header bytes within the underlay MTU. */
export const VXLAN_OVERHEAD = 20 + 8 + VXLAN_HLEN;
/** The I flag: the VNI field is valid. */
const FLAG_I = 0x08;

export interface VxlanTransportOptions {
  logger: Logger;
  /** Networks offered to every VTEP (all local networks). */
  hello: () => PeerHello;
  /** Underlay MTU in bytes (the IP MTU of the path to the VTEPs). Default 1500. */
  underlayMtu?: number | undefined;
}

/** Parses a VXLAN header at `buf[0..]`; returns the VNI or -1 when it is not a valid VXLAN datagram. */
export function parseVxlan(buf: Buffer, len: number): number {
  if (len < VXLAN_HLEN + 14) return -1;
  if (((buf[0] as number) & FLAG_I) === 0) return -1;
  return buf.readUInt32BE(4) >>> 8;
}

/** Writes a VXLAN header for `vni` at `buf[at]`. */
export function writeVxlan(buf: Buffer, at: number, vni: number): void {
  buf.writeUInt32BE(FLAG_I << 24, at);
  buf.writeUInt32BE((vni & 0xffffff) << 8, at + 4);
}

class VxlanChannel implements LinkChannel {
  readonly kind = 'vxlan';
  readonly outbound = true;
  readonly queuedBytes = 0;
  readonly remote: string;
  handlers: ChannelHandlers | undefined;
  closed = false;
  readonly s = {
    tx_frames: 0,
    tx_bytes: 0,
    rx_frames: 0,
    rx_bytes: 0,
    tx_writes: 0,
    drops_queue_full: 0,
    drops_too_big: 0,
    drops_unknown_vni: 0,
  };

  constructor(
    readonly peer: PeerHello,
    readonly address: TransportAddress,
    readonly transport: VxlanTransport,
    readonly maxFrame: number,
  ) {
    this.remote = `udp:${isIPv6(address.host) ? `[${address.host}]` : address.host}:${address.port}`;
  }

  attach(h: ChannelHandlers): void {
    this.handlers = h;
  }

  send(vni: number, buf: Buffer, off: number, len: number): WriteResult {
    if (this.closed) return WriteResult.DOWN;
    if (len > this.maxFrame) {
      this.s.drops_too_big++;
      return WriteResult.OK;
    }
    const sock = this.transport.socket;
    if (!sock) return WriteResult.DOWN;
    if (sock.getSendQueueSize() > 4096) {
      this.s.drops_queue_full++;
      return WriteResult.QUEUE_FULL;
    }
    // The datagram is sent later: copy (header and frame in one buffer).
    const d = Buffer.allocUnsafe(VXLAN_HLEN + len);
    writeVxlan(d, 0, vni);
    buf.copy(d, VXLAN_HLEN, off, off + len);
    sock.send(d, this.address.port, this.address.host);
    this.s.tx_frames++;
    this.s.tx_bytes += len;
    this.s.tx_writes++;
    return WriteResult.OK;
  }

  sendControl(_msg: ControlMessage): boolean {
    return false;
  }

  stats(): ChannelStats {
    return { rtt_ms: undefined, ...this.s };
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.transport.forget(this);
    this.handlers?.closed(reason);
  }
}

export class VxlanTransport implements LinkTransport {
  readonly kind = 'vxlan';
  readonly #o: VxlanTransportOptions;
  readonly #log: Logger;
  socket: Socket | undefined;
  /** Remote address -> channel. */
  readonly #byAddr = new Map<string, VxlanChannel>();
  /** Datagrams dropped: unknown source, not VXLAN (no I flag, short). */
  unknownSource = 0;
  malformed = 0;
  #lastLog = -Infinity;

  constructor(opts: VxlanTransportOptions) {
    this.#o = opts;
    this.#log = opts.logger;
  }

  /** Binds the UDP socket; VTEPs are only those dialled (no channel is ever accepted). */
  listen(address: TransportAddress, _onChannel: (ch: LinkChannel) => void): Promise<TransportAddress> {
    const sock = createSocket({ type: isIPv6(address.host) ? 'udp6' : 'udp4', reuseAddr: false });
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(address.port, address.host, () => {
        sock.off('error', reject);
        sock.on('error', (err) => this.#log.warn({ err: describeError(err) }, 'vxlan socket error'));
        sock.on('message', (msg, rinfo) => this.#message(msg, rinfo.address));
        this.socket = sock;
        const a = sock.address();
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  #message(msg: Buffer, from: string): void {
    const ch = this.#byAddr.get(from);
    if (ch === undefined) {
      this.unknownSource++;
      this.#rateLog(from, 'datagram from an address that is no configured VXLAN link');
      return;
    }
    const vni = parseVxlan(msg, msg.length);
    if (vni < 0) {
      this.malformed++;
      this.#rateLog(from, 'not a VXLAN datagram (no I flag, or shorter than header and Ethernet header)');
      return;
    }
    ch.s.rx_frames++;
    ch.s.rx_bytes += msg.length - VXLAN_HLEN;
    ch.handlers?.frame(vni, msg, VXLAN_HLEN, msg.length - VXLAN_HLEN);
  }

  #rateLog(from: string, what: string): void {
    const now = performance.now();
    if (now - this.#lastLog < 1000) return;
    this.#lastLog = now;
    this.#log.warn(
      { from, unknown: this.unknownSource, malformed: this.malformed },
      `vxlan: dropped a ${what} (${from})`,
    );
  }

  /** A channel to the VTEP at `address`, up at once (VXLAN has no handshake). */
  async dial(address: TransportAddress): Promise<LinkChannel> {
    if (!this.socket)
      throw new LinkDialError(
        `udp:${address.host}:${address.port}`,
        'the VXLAN socket is not bound (overlay.vxlan.listen)',
      );
    if (this.#byAddr.has(address.host))
      throw new LinkDialError(`udp:${address.host}:${address.port}`, 'another VXLAN link already uses that address');
    const h = this.#o.hello();
    const peer: PeerHello = {
      host: `vtep-${address.host.replaceAll(':', '-')}`.slice(0, 32),
      networks: h.networks,
      relay: false,
    };
    const ch = new VxlanChannel(peer, address, this, (this.#o.underlayMtu ?? 1500) - VXLAN_OVERHEAD);
    this.#byAddr.set(address.host, ch);
    return ch;
  }

  forget(ch: VxlanChannel): void {
    if (this.#byAddr.get(ch.address.host) === ch) this.#byAddr.delete(ch.address.host);
  }

  async close(): Promise<void> {
    for (const ch of [...this.#byAddr.values()]) await ch.close('the daemon is stopping');
    const sock = this.socket;
    this.socket = undefined;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
  }
}
