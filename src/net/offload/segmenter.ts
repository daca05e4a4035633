/**
 * Software segmentation and checksum completion for frames that carry
 * offload metadata ({@link OffloadMeta}), toward ports that cannot take it
 * (a QEMU stream/dgram netdev, VDE, AF_PACKET, capture): the same work a NIC
 * does for TSO/USO and checksum offload, or Linux's skb_segment /
 * skb_checksum_help when no NIC does it.
 *
 * Covered: TCP over IPv4 and IPv6 (gso_type TCPV4, TCPV6, with or without
 * ECN), UDP segmentation (UDP_L4, USO) over IPv4 and IPv6, and NEEDS_CSUM on
 * any frame. Not covered (dropped with a reason): UFO (legacy IP
 * fragmentation, not produced by Linux since 4.14), IPv6 extension headers
 * before TCP/UDP, IPv4 fragments.
 *
 * Use: `check()` validates a frame and its metadata; `start()` then `next()`
 * until it returns 0 writes each output frame into {@link Segmenter.out} at
 * offset 0. Nothing throws for any input, and nothing is allocated per frame.
 */
import { ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, etherType, u16, u32 } from '../frame/ethernet.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV6_HLEN,
  ipv4HeaderOk,
  ipv4Id,
  ipv4Ihl,
  ipv4IsFragment,
  ipv4Proto,
  ipv6HeaderOk,
  ipv6Next,
} from '../frame/ip.js';
import { VLAN_HLEN } from '../frame/vlan.js';
import { complement, finishChecksum, sum16 } from './checksum.js';
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP_L4,
  type OffloadMeta,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from './vnet-hdr.js';

/** Why {@link Segmenter.check} refused a frame (0: it did not). */
export const OffloadReason = {
  OK: 0,
  /** gso_type unknown, or UFO (not supported). */
  GSO_TYPE: 1,
  /** csum_start/csum_offset point outside the frame. */
  CSUM_RANGE: 2,
  /** The network header does not match the gso_type or does not parse (truncated, IPv4 fragment, IPv6 extension header). */
  L3: 3,
  /** The TCP/UDP header is truncated or has a bad data offset. */
  L4: 4,
  /** gso_size is 0, or a segment would be longer than the largest frame. */
  GSO_SIZE: 5,
} as const;
export type OffloadReason = (typeof OffloadReason)[keyof typeof OffloadReason];

const REASON_TEXT = [
  'ok',
  'unknown or unsupported gso_type',
  'checksum position outside the frame',
  'network header does not match gso_type or does not parse',
  'TCP/UDP header truncated or bad',
  'gso_size is 0 or segments would exceed the largest frame',
];

/** A sentence for a reason, for logs. */
export function describeOffloadReason(r: number): string {
  return REASON_TEXT[r] ?? `reason ${r}`;
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

export class Segmenter {
  /** Where {@link next} writes each output frame, at offset 0. */
  readonly out: Buffer;
  /** After a successful {@link check}: Ethernet-to-L4 header bytes (GSO), else 0. */
  hdrLen = 0;
  /** After a successful {@link check}: how many frames {@link next} will produce. */
  segments = 0;
  /** Reason of the last refused {@link check}. */
  reason: OffloadReason = OffloadReason.OK;

  #buf: Buffer;
  #off = 0;
  #len = 0;
  /** GSO type without the ECN bit, or GSO_NONE for checksum-only. */
  #gso = 0;
  #needsCsum = false;
  #csumStart = 0;
  #csumOffset = 0;
  /** Offsets relative to the frame start. */
  #l3 = 0;
  #l4 = 0;
  #v6 = false;
  #proto = 0;
  #mss = 0;
  /** Sum of the pseudo-header's addresses and protocol (RFC 793 §3.1, RFC 8200 §8.1), unfolded. */
  #pseudo = 0;
  #seq = 0;
  #id = 0;
  #index = 0;

  /** @param size largest output frame in bytes (the largest frame a port takes, plus a VLAN tag) */
  constructor(size: number) {
    this.out = Buffer.allocUnsafe(size);
    this.#buf = this.out;
  }

  /**
   * Validates `buf[off .. off+len)` with `meta` for {@link start}. False (and
   * {@link reason} set) for a frame that cannot be segmented or checksummed.
   */
  check(buf: Buffer, off: number, len: number, meta: OffloadMeta): boolean {
    this.reason = this.#parse(buf, off, len, meta);
    return this.reason === OffloadReason.OK;
  }

  /** {@link check}, then positions {@link next} at the first output frame. */
  start(buf: Buffer, off: number, len: number, meta: OffloadMeta): boolean {
    if (!this.check(buf, off, len, meta)) {
      this.segments = 0;
      return false;
    }
    this.#index = 0;
    return true;
  }

  /** Writes the next output frame into {@link out}[0 ..) and returns its length; 0 when all were written. */
  next(): number {
    if (this.#index >= this.segments) return 0;
    const i = this.#index++;
    if (this.#gso === GSO_NONE) return this.#checksumOnly();
    return this.#segment(i);
  }

  #parse(buf: Buffer, off: number, len: number, meta: OffloadMeta): OffloadReason {
    this.#buf = buf;
    this.#off = off;
    this.#len = len;
    this.hdrLen = 0;
    this.segments = 0;
    const gso = meta.gsoType & ~GSO_ECN;
    this.#gso = gso;
    this.#needsCsum = (meta.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
    this.#csumStart = meta.csumStart;
    this.#csumOffset = meta.csumOffset;
    if (gso === GSO_NONE) {
      if (this.#needsCsum && (meta.csumStart >= len || meta.csumStart + meta.csumOffset + 2 > len))
        return OffloadReason.CSUM_RANGE;
      if (len > this.out.length) return OffloadReason.GSO_SIZE;
      this.segments = 1;
      return OffloadReason.OK;
    }
    // UFO (GSO_UDP, IP fragmentation) is not supported: Linux stopped producing it in 4.14.
    if (gso !== GSO_TCPV4 && gso !== GSO_TCPV6 && gso !== GSO_UDP_L4) return OffloadReason.GSO_TYPE;
    const r = this.#parseHeaders(buf, off, len, gso);
    if (r !== OffloadReason.OK) return r;
    // A large segment may pass whole to a port that takes offloads (a kernel TAP, a guest):
    // its checksum position must lie in the frame there too, not only when we cut it here.
    if (this.#needsCsum && (meta.csumStart >= len || meta.csumStart + meta.csumOffset + 2 > len))
      return OffloadReason.CSUM_RANGE;
    const mss = meta.gsoSize;
    const payload = len - this.hdrLen;
    if (mss === 0 || this.hdrLen + Math.min(mss, payload) > this.out.length) return OffloadReason.GSO_SIZE;
    this.#mss = mss;
    this.segments = payload <= mss ? 1 : Math.ceil(payload / mss);
    return OffloadReason.OK;
  }

  /** Ethernet (one optional 802.1Q tag), IPv4 or IPv6, TCP or UDP; sets #l3, #l4, #proto, #pseudo, hdrLen. */
  #parseHeaders(buf: Buffer, off: number, len: number, gso: number): OffloadReason {
    if (len < ETH_HLEN + 20) return OffloadReason.L3;
    // Offsets here are relative to the frame; the accessors take absolute ones (off + ...).
    let l3 = ETH_HLEN;
    let type = etherType(buf, off);
    if (type === ETHERTYPE_VLAN) {
      type = u16(buf, off + ETH_HLEN + 2);
      l3 += VLAN_HLEN;
    }
    const want = gso === GSO_UDP_L4 ? IPPROTO_UDP : IPPROTO_TCP;
    const at = off + l3;
    let l4: number;
    if (type === ETHERTYPE_IPV4 && gso !== GSO_TCPV6) {
      // An IPv4 fragment (MF or an offset) cannot be segmented.
      if (!ipv4HeaderOk(buf, at, off + len) || ipv4IsFragment(buf, at)) return OffloadReason.L3;
      if (ipv4Proto(buf, at) !== want) return OffloadReason.L3;
      this.#v6 = false;
      this.#pseudo = sum16(buf, at + 12, at + 20, want);
      this.#id = ipv4Id(buf, at);
      l4 = l3 + ipv4Ihl(buf, at);
    } else if (type === ETHERTYPE_IPV6 && gso !== GSO_TCPV4) {
      if (!ipv6HeaderOk(buf, at, off + len)) return OffloadReason.L3;
      // Extension headers before TCP/UDP are not walked: such frames are refused.
      if (ipv6Next(buf, at) !== want) return OffloadReason.L3;
      this.#v6 = true;
      this.#pseudo = sum16(buf, at + 8, at + IPV6_HLEN, want);
      l4 = l3 + IPV6_HLEN;
    } else {
      return OffloadReason.L3;
    }
    let l4len = 8;
    if (want === IPPROTO_TCP) {
      if (l4 + 20 > len) return OffloadReason.L4;
      l4len = ((buf[off + l4 + 12] as number) >> 4) * 4;
      if (l4len < 20) return OffloadReason.L4;
      this.#seq = u32(buf, off + l4 + 4);
    }
    if (l4 + l4len > len) return OffloadReason.L4;
    this.#proto = want;
    this.#l3 = l3;
    this.#l4 = l4;
    this.hdrLen = l4 + l4len;
    return OffloadReason.OK;
  }

  /** The frame with its checksum completed (NEEDS_CSUM), or as it is. */
  #checksumOnly(): number {
    const out = this.out;
    const len = this.#len;
    if (len > out.length) return 0;
    this.#buf.copy(out, 0, this.#off, this.#off + len);
    if (this.#needsCsum) {
      // The field holds the pseudo-header sum; summing from csum_start to the end folds in the rest (virtio 1.2 §5.1.6.2).
      const at = this.#csumStart + this.#csumOffset;
      out.writeUInt16BE(finishChecksum(out, this.#csumStart, len), at);
    }
    return len;
  }

  /** Segment `i`: the headers, fixed up, and the i-th gso_size bytes of payload. */
  #segment(i: number): number {
    const out = this.out;
    const hdr = this.hdrLen;
    const from = this.#off + hdr + i * this.#mss;
    const to = Math.min(from + this.#mss, this.#off + this.#len);
    const segLen = hdr + (to - from);
    this.#buf.copy(out, 0, this.#off, this.#off + hdr);
    this.#buf.copy(out, hdr, from, to);
    const l3 = this.#l3;
    const l4 = this.#l4;
    if (this.#v6) {
      out.writeUInt16BE(segLen - l3 - 40, l3 + 4);
    } else {
      out.writeUInt16BE(segLen - l3, l3 + 2);
      // Linux increments the IP id per segment (inet_gso_segment).
      out.writeUInt16BE((this.#id + i) & 0xffff, l3 + 4);
      out.writeUInt16BE(0, l3 + 10);
      const ihl = ipv4Ihl(out, l3);
      out.writeUInt16BE(complement(sum16(out, l3, l3 + ihl)), l3 + 10);
    }
    const l4len = segLen - l4;
    let at: number;
    if (this.#proto === IPPROTO_TCP) {
      out.writeUInt32BE((this.#seq + i * this.#mss) >>> 0, l4 + 4);
      // FIN and PSH only on the last segment, CWR only on the first (tcp_gso_segment).
      let flags = out[l4 + 13] as number;
      if (i + 1 < this.segments) flags &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) flags &= ~TCP_CWR;
      out[l4 + 13] = flags;
      at = l4 + 16;
    } else {
      out.writeUInt16BE(l4len, l4 + 4);
      at = l4 + 6;
    }
    out.writeUInt16BE(0, at);
    const c = complement(sum16(out, l4, segLen, this.#pseudo + l4len));
    // RFC 768: a computed UDP checksum of 0 is sent as 0xffff.
    out.writeUInt16BE(c === 0 && this.#proto === IPPROTO_UDP ? 0xffff : c, at);
    return segLen;
  }
}
