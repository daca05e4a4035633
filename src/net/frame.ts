/**
 * Zero-copy views of Ethernet, 802.1Q, ARP, IPv4 and IPv6 headers.
 *
 * Every function reads a frame in place from `buf[off .. off+len)`; nothing
 * here allocates on the per-frame path. A MAC address is a number (48 bits
 * fit exactly in a double), never a string, on the data path.
 */

/** Ethernet header length: destination, source, EtherType (IEEE 802.3 §3.1.1). */
export const ETH_HLEN = 14;
/** Length of one 802.1Q tag (TPID + TCI). */
export const VLAN_HLEN = 4;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_RARP = 0x8035;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;
export const ETHERTYPE_IPV6 = 0x86dd;

const TWO32 = 0x1_0000_0000;

/** The 48-bit MAC at `buf[off]` as a number. */
export function macAt(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off) * TWO32 + buf.readUInt32BE(off + 2);
}

/** Writes the 48-bit MAC `mac` at `buf[off]`. */
export function writeMac(buf: Buffer, off: number, mac: number): void {
  buf.writeUInt16BE(Math.floor(mac / TWO32), off);
  buf.writeUInt32BE(mac % TWO32, off + 2);
}

/** True for a group (multicast or broadcast) address: the I/G bit of the first octet. */
export function isGroupMacAt(buf: Buffer, off: number): boolean {
  return (buf.readUInt8(off) & 1) === 1;
}

/**
 * Parsed header fields of one frame, filled in place by {@link parseFrame}.
 * Offsets are absolute into the buffer that was parsed; -1 means absent.
 */
export interface FrameInfo {
  /** Destination MAC. */
  dst: number;
  /** Source MAC. */
  src: number;
  /** 802.1Q VLAN id of the outer tag, or -1 when untagged. */
  vlan: number;
  /** 802.1p priority code point of the outer tag (0-7), or -1 when untagged. */
  pcp: number;
  /** EtherType after any VLAN tags. */
  ethertype: number;
  /** Offset of the layer-3 header (after Ethernet and VLAN tags). */
  l3: number;
  /** IP protocol number (IPv4 protocol / IPv6 next header), or -1. */
  ipProto: number;
  /** DSCP (0-63) of an IPv4/IPv6 packet, or -1. */
  dscp: number;
  /** Offset of the layer-4 header, or -1 (also -1 for IPv4 fragments after the first). */
  l4: number;
  /** ARP opcode (1 request, 2 reply, 3/4 RARP), or -1. */
  arpOp: number;
}

/** A fresh FrameInfo to reuse across calls. */
export function newFrameInfo(): FrameInfo {
  return { dst: 0, src: 0, vlan: -1, pcp: -1, ethertype: 0, l3: -1, ipProto: -1, dscp: -1, l4: -1, arpOp: -1 };
}

/**
 * Parses the headers of `buf[off .. off+len)` into `out`.
 * Returns false (and leaves `out` partly filled) when the frame is shorter
 * than an Ethernet header or a header it announces is truncated. Never throws
 * for any input within the buffer's bounds.
 */
export function parseFrame(buf: Buffer, off: number, len: number, out: FrameInfo): boolean {
  out.vlan = -1;
  out.pcp = -1;
  out.l3 = -1;
  out.ipProto = -1;
  out.dscp = -1;
  out.l4 = -1;
  out.arpOp = -1;
  if (len < ETH_HLEN || off < 0 || off + len > buf.length) return false;
  const end = off + len;
  out.dst = macAt(buf, off);
  out.src = macAt(buf, off + 6);
  let p = off + 12;
  let type = buf.readUInt16BE(p);
  // IEEE 802.1Q §9.6: an outer S-tag (QinQ) or C-tag; read at most two tags.
  for (let tags = 0; (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) && tags < 2; tags++) {
    if (p + 6 > end) return false;
    const tci = buf.readUInt16BE(p + 2);
    if (tags === 0) {
      out.pcp = tci >>> 13;
      out.vlan = tci & 0x0fff;
    }
    p += VLAN_HLEN;
    type = buf.readUInt16BE(p);
  }
  out.ethertype = type;
  out.l3 = p + 2;
  return parseL3(buf, out.l3, end, type, out);
}

function parseL3(buf: Buffer, l3: number, end: number, type: number, out: FrameInfo): boolean {
  if (type === ETHERTYPE_IPV4) {
    if (l3 + 20 > end) return false;
    const vihl = buf.readUInt8(l3);
    const ihl = (vihl & 0x0f) * 4;
    if (vihl >>> 4 !== 4 || ihl < 20 || l3 + ihl > end) return false;
    out.dscp = buf.readUInt8(l3 + 1) >>> 2;
    out.ipProto = buf.readUInt8(l3 + 9);
    const fragOffset = buf.readUInt16BE(l3 + 6) & 0x1fff;
    out.l4 = fragOffset === 0 ? l3 + ihl : -1;
    return true;
  }
  if (type === ETHERTYPE_IPV6) {
    if (l3 + 40 > end) return false;
    const first = buf.readUInt32BE(l3);
    if (first >>> 28 !== 6) return false;
    out.dscp = (first >>> 22) & 0x3f;
    out.ipProto = buf.readUInt8(l3 + 6);
    out.l4 = l3 + 40;
    return true;
  }
  if (type === ETHERTYPE_ARP || type === ETHERTYPE_RARP) {
    if (l3 + 8 > end) return false;
    out.arpOp = buf.readUInt16BE(l3 + 6);
    return true;
  }
  return true;
}
