/**
 * Receive coalescing (software GRO) for the VXLAN transport: consecutive
 * received frames of one TCP/IPv4 flow become one large segment with offload
 * metadata (gso_type TCPV4, gso_size = the MSS, NEEDS_CSUM), as Linux's
 * vxlan + tcp4_gro_receive do. A vnet_hdr TAP then takes one write instead
 * of dozens, and the guest's stack one packet; ports without offloads get
 * the segment cut again by the switch (offload/segmenter.ts).
 *
 * Merged only (else the frame passes unchanged, after any pending segment,
 * so order is kept): untagged IPv4 without options or fragmentation, TCP with
 * ACK and no SYN/FIN/RST/URG/ECE/CWR, a payload, valid IPv4 and TCP checksums (a
 * VXLAN datagram over IPv4 usually has no UDP checksum, so this is the only
 * check of the inner bytes), the same addresses, ports, ack, window, TOS,
 * TTL and TCP options as the first, the next sequence number, no larger than
 * the first payload (a shorter one or a PSH ends the segment), and an IP
 * total length within 65535.
 */
import { fold, sum16 } from '../offload/checksum.js';
import { GSO_TCPV4, OffloadMeta, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../offload/vnet-hdr.js';

const ETH = 14;
const IP = ETH; // IPv4 header start
const TCP = ETH + 20; // TCP header start (no IP options)
const F_FIN = 0x01;
const F_SYN = 0x02;
const F_RST = 0x04;
const F_PSH = 0x08;
const F_ACK = 0x10;
const F_URG = 0x20;
const F_ECE = 0x40;
const F_CWR = 0x80;
const MAX_IP_LEN = 65535;

/** Receives what the coalescer delivers: a frame, with metadata when it is a merged segment. */
export type GroDeliver<C> = (
  ch: C,
  vni: number,
  buf: Buffer,
  off: number,
  len: number,
  meta: OffloadMeta | undefined,
) => void;

/** Length of the TCP header of a mergeable frame at buf[off..off+len), or 0 when the frame cannot merge. */
function mergeable(buf: Buffer, off: number, len: number): number {
  if (len < TCP + 20 || buf[off + 12] !== 0x08 || buf[off + 13] !== 0x00) return 0;
  if (buf[off + IP] !== 0x45 || buf[off + IP + 9] !== 6) return 0;
  if ((buf.readUInt16BE(off + IP + 6) & 0x3fff) !== 0) return 0; // MF or a fragment offset
  if (buf.readUInt16BE(off + IP + 2) !== len - ETH) return 0; // padding or truncation
  if (fold(sum16(buf, off + IP, off + TCP)) !== 0xffff) return 0; // the IPv4 header checksum (rewritten when merged)
  const thl = ((buf[off + TCP + 12] as number) >> 4) * 4;
  if (thl < 20 || TCP + thl >= len) return 0; // no payload
  const flags = buf[off + TCP + 13] as number;
  if ((flags & F_ACK) === 0 || (flags & (F_SYN | F_FIN | F_RST | F_URG | F_ECE | F_CWR)) !== 0) return 0;
  // The TCP checksum over the pseudo-header and the segment must verify (sum 0xffff).
  const tcpLen = len - TCP;
  const pseudo = sum16(buf, off + IP + 12, off + IP + 20, 6 + tcpLen);
  if (fold(sum16(buf, off + TCP, off + len, pseudo)) !== 0xffff) return 0;
  return thl;
}

function same32(a: Buffer, ao: number, b: Buffer, bo: number): boolean {
  return a.readUInt32BE(ao) === b.readUInt32BE(bo);
}

export class TcpCoalescer<C> {
  readonly #out: Buffer;
  readonly #meta = new OffloadMeta();
  readonly #deliver: GroDeliver<C>;
  #ch: C | undefined;
  #vni = 0;
  /** Bytes of the pending segment in #out (0: none). */
  #len = 0;
  #hdr = 0;
  #mss = 0;
  #segs = 0;
  #nextSeq = 0;
  /** No more may join (a shorter payload or a PSH came). */
  #closed = false;
  /** The first frame's header words that every joining frame must repeat (see #joins). */
  readonly #key = new Uint32Array(9);
  /** Frames merged into larger segments, and segments delivered, since start. */
  merged = 0;
  segments = 0;

  constructor(deliver: GroDeliver<C>) {
    this.#deliver = deliver;
    this.#out = Buffer.allocUnsafe(ETH + MAX_IP_LEN);
  }

  /** Takes one received frame: joins it to the pending segment, starts one, or delivers it as it is. */
  push(ch: C, vni: number, buf: Buffer, off: number, len: number): void {
    const thl = mergeable(buf, off, len);
    if (thl === 0) {
      this.flush();
      this.#deliver(ch, vni, buf, off, len, undefined);
      return;
    }
    if (this.#len > 0 && this.#joins(ch, vni, buf, off, len, thl)) return;
    this.flush();
    buf.copy(this.#out, 0, off, off + len);
    this.#ch = ch;
    this.#vni = vni;
    this.#len = len;
    this.#hdr = TCP + thl;
    this.#mss = len - this.#hdr;
    this.#segs = 1;
    this.#nextSeq = (buf.readUInt32BE(off + TCP + 4) + this.#mss) >>> 0;
    this.#closed = ((buf[off + TCP + 13] as number) & F_PSH) !== 0;
    const k = this.#key;
    k[0] = buf.readUInt32BE(off);
    k[1] = buf.readUInt32BE(off + 4);
    k[2] = buf.readUInt32BE(off + 8);
    k[3] = ((buf[off + IP + 1] as number) << 16) | buf.readUInt16BE(off + IP + 8);
    k[4] = buf.readUInt32BE(off + IP + 12);
    k[5] = buf.readUInt32BE(off + IP + 16);
    k[6] = buf.readUInt32BE(off + TCP);
    k[7] = buf.readUInt32BE(off + TCP + 8);
    k[8] = buf.readUInt16BE(off + TCP + 14);
  }

  /** Appends the payload when the frame continues the pending segment. */
  #joins(ch: C, vni: number, buf: Buffer, off: number, len: number, thl: number): boolean {
    const o = this.#out;
    const hdr = this.#hdr;
    const pay = len - TCP - thl;
    if (this.#closed || ch !== this.#ch || vni !== this.#vni || TCP + thl !== hdr || pay > this.#mss) return false;
    if (this.#len - ETH + pay > MAX_IP_LEN) return false;
    if (buf.readUInt32BE(off + TCP + 4) !== this.#nextSeq) return false;
    // MACs (the type is IPv4 for both); TOS; TTL and protocol; addresses; ports; ack; window: as the first
    // (kept in #key), then the options. Word reads: Buffer.compare with offsets costs more in validation alone.
    const k = this.#key;
    if (buf.readUInt32BE(off) !== k[0] || buf.readUInt32BE(off + 4) !== k[1] || buf.readUInt32BE(off + 8) !== k[2])
      return false;
    if ((((buf[off + IP + 1] as number) << 16) | buf.readUInt16BE(off + IP + 8)) !== k[3]) return false;
    if (buf.readUInt32BE(off + IP + 12) !== k[4] || buf.readUInt32BE(off + IP + 16) !== k[5]) return false;
    if (buf.readUInt32BE(off + TCP) !== k[6] || buf.readUInt32BE(off + TCP + 8) !== k[7]) return false;
    if (buf.readUInt16BE(off + TCP + 14) !== k[8]) return false;
    // Options are a multiple of 4 bytes (the data offset counts words).
    for (let i = TCP + 20; i < hdr; i += 4) if (!same32(buf, off + i, o, i)) return false;
    buf.copy(o, this.#len, off + hdr, off + len);
    this.#len += pay;
    this.#segs++;
    this.#nextSeq = (this.#nextSeq + pay) >>> 0;
    const psh = ((buf[off + TCP + 13] as number) & F_PSH) !== 0;
    if (psh) o[TCP + 13] = (o[TCP + 13] as number) | F_PSH;
    this.#closed = psh || pay < this.#mss;
    return true;
  }

  /** Delivers the pending segment, if any (call after each received batch). */
  flush(): void {
    const len = this.#len;
    if (len === 0) return;
    this.#len = 0;
    const o = this.#out;
    const ch = this.#ch as C;
    this.#ch = undefined;
    if (this.#segs === 1) {
      this.#deliver(ch, this.#vni, o, 0, len, undefined);
      return;
    }
    // IPv4 total length and header checksum; the TCP checksum field holds the
    // pseudo-header sum (NEEDS_CSUM: the taker sums from csum_start and stores the complement).
    o.writeUInt16BE(len - ETH, IP + 2);
    o.writeUInt16BE(0, IP + 10);
    o.writeUInt16BE(~fold(sum16(o, IP, IP + 20)) & 0xffff, IP + 10);
    o.writeUInt16BE(fold(sum16(o, IP + 12, IP + 20, 6 + len - TCP)), TCP + 16);
    const m = this.#meta;
    m.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    m.gsoType = GSO_TCPV4;
    m.hdrLen = this.#hdr;
    m.gsoSize = this.#mss;
    m.csumStart = TCP;
    m.csumOffset = 16;
    this.merged += this.#segs;
    this.segments++;
    this.#deliver(ch, this.#vni, o, 0, len, m);
  }
}
