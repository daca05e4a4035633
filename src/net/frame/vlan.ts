/**
 * In-place accessors for IEEE 802.1Q / 802.1ad tags: the outer tag's TCI,
 * VLAN id and priority (PCP), the EtherType and layer-3 offset behind up to
 * two tags, and tag insertion and removal. Nothing allocates; offsets are
 * absolute into `buf`.
 */
import { ETH_HLEN, ETHERTYPE_QINQ, ETHERTYPE_VLAN, u16 } from './ethernet.js';

/** Length of one 802.1Q tag (TPID + TCI). */
export const VLAN_HLEN = 4;

/** True when the frame at `off` carries an outer tag (C-tag or S-tag). */
export function isTagged(buf: Buffer, off: number): boolean {
  const t = u16(buf, off + 12);
  return t === ETHERTYPE_VLAN || t === ETHERTYPE_QINQ;
}

/** The outer tag's TCI (PCP, DEI, VID) of a tagged frame at `off`. */
export function vlanTci(buf: Buffer, off: number): number {
  return u16(buf, off + 14);
}

/** The outer tag's VLAN id (0-4095) of a tagged frame at `off`; 0 is a priority tag (802.1Q §6.9.1). */
export function vlanId(buf: Buffer, off: number): number {
  return u16(buf, off + 14) & 0x0fff;
}

/** The outer tag's 802.1p priority code point (0-7) of a tagged frame at `off`. */
export function vlanPcp(buf: Buffer, off: number): number {
  return (buf[off + 14] as number) >> 5;
}

/**
 * Offset of the layer-3 header of the frame `buf[off .. off+len)`: after the
 * Ethernet header and at most two tags (802.1Q §9.6: an S-tag then a C-tag),
 * or -1 when a tag or the EtherType behind it is cut off.
 */
export function l3Offset(buf: Buffer, off: number, len: number): number {
  if (len < ETH_HLEN) return -1;
  const end = off + len;
  let p = off + 12;
  for (let tags = 0; tags < 2; tags++) {
    const t = u16(buf, p);
    if (t !== ETHERTYPE_VLAN && t !== ETHERTYPE_QINQ) break;
    if (p + VLAN_HLEN + 2 > end) return -1;
    p += VLAN_HLEN;
  }
  return p + 2;
}

/** The EtherType in front of the layer-3 header at `l3` (see {@link l3Offset}). */
export function innerEtherType(buf: Buffer, l3: number): number {
  return u16(buf, l3 - 2);
}

/**
 * Removes the outer tag of the frame at `off` in place (the two MACs move
 * forward over it) and returns the frame's new offset; its length is 4 less.
 */
export function stripTag(buf: Buffer, off: number): number {
  buf.copyWithin(off + VLAN_HLEN, off, off + 12);
  return off + VLAN_HLEN;
}

/**
 * Writes the frame `src[off .. off+len)` into `dst[0 ..)` with an 802.1Q tag
 * (TPID 0x8100, PCP 0, VLAN `vid`) inserted after the MACs; returns the new
 * length (len + 4). `dst` must hold it.
 */
export function pushTag(src: Buffer, off: number, len: number, vid: number, dst: Buffer): number {
  src.copy(dst, 0, off, off + 12);
  dst[12] = ETHERTYPE_VLAN >> 8;
  dst[13] = ETHERTYPE_VLAN & 0xff;
  dst[14] = (vid >> 8) & 0x0f;
  dst[15] = vid & 0xff;
  src.copy(dst, 16, off + 12, off + len);
  return len + VLAN_HLEN;
}
