/**
 * In-place accessors for IPv4 (RFC 791) and IPv6 (RFC 8200) headers, given
 * the absolute offset `l3` of the header (see `l3Offset` in vlan.ts). The
 * caller checks that the header lies in the frame ({@link ipv4HeaderOk},
 * {@link ipv6HeaderOk}); nothing allocates.
 */
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, u16, u32 } from './ethernet.js';
import { innerEtherType, l3Offset } from './vlan.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
/** Fixed IPv6 header length. */
export const IPV6_HLEN = 40;

/** The IP version nibble of the header at `l3`. */
export function ipVersion(buf: Buffer, l3: number): number {
  return (buf[l3] as number) >> 4;
}

/** IPv4 header length in bytes (IHL * 4). */
export function ipv4Ihl(buf: Buffer, l3: number): number {
  return ((buf[l3] as number) & 0x0f) * 4;
}

/** True when an IPv4 header (version 4, IHL >= 5, all of it) lies in `[l3, end)`. */
export function ipv4HeaderOk(buf: Buffer, l3: number, end: number): boolean {
  if (l3 + 20 > end) return false;
  const ihl = ipv4Ihl(buf, l3);
  return ipVersion(buf, l3) === 4 && ihl >= 20 && l3 + ihl <= end;
}

/** DSCP (0-63) of the IPv4 header at `l3`. */
export function ipv4Dscp(buf: Buffer, l3: number): number {
  return (buf[l3 + 1] as number) >> 2;
}

/** Total length field of the IPv4 header at `l3`. */
export function ipv4TotalLen(buf: Buffer, l3: number): number {
  return u16(buf, l3 + 2);
}

/** Identification field of the IPv4 header at `l3`. */
export function ipv4Id(buf: Buffer, l3: number): number {
  return u16(buf, l3 + 4);
}

/** Fragment offset (in 8-byte units) of the IPv4 header at `l3`; 0 for the first fragment or an unfragmented packet. */
export function ipv4FragOffset(buf: Buffer, l3: number): number {
  return u16(buf, l3 + 6) & 0x1fff;
}

/** True when the IPv4 packet at `l3` is a fragment (more fragments, or an offset). */
export function ipv4IsFragment(buf: Buffer, l3: number): boolean {
  return (u16(buf, l3 + 6) & 0x3fff) !== 0;
}

/** Protocol field of the IPv4 header at `l3`. */
export function ipv4Proto(buf: Buffer, l3: number): number {
  return buf[l3 + 9] as number;
}

/** True when an IPv6 fixed header (version 6, 40 bytes) lies in `[l3, end)`. */
export function ipv6HeaderOk(buf: Buffer, l3: number, end: number): boolean {
  return l3 + IPV6_HLEN <= end && ipVersion(buf, l3) === 6;
}

/** DSCP (0-63) of the IPv6 header at `l3`: the upper six bits of the traffic class. */
export function ipv6Dscp(buf: Buffer, l3: number): number {
  return (u32(buf, l3) >>> 22) & 0x3f;
}

/** Payload length field of the IPv6 header at `l3`. */
export function ipv6PayloadLen(buf: Buffer, l3: number): number {
  return u16(buf, l3 + 4);
}

/** Next header field of the IPv6 header at `l3`. */
export function ipv6Next(buf: Buffer, l3: number): number {
  return buf[l3 + 6] as number;
}

/**
 * The DSCP of the frame `buf[off .. off+len)` (IPv4 or IPv6 behind at most
 * two tags), or -1 when it is not IP or its version nibble is wrong. Only the
 * first two bytes of the IP header must lie in the frame (all the DSCP needs).
 */
export function dscpOf(buf: Buffer, off: number, len: number): number {
  const l3 = l3Offset(buf, off, len);
  if (l3 < 0 || l3 + 2 > off + len) return -1;
  const type = innerEtherType(buf, l3);
  const v = ipVersion(buf, l3);
  if (type === ETHERTYPE_IPV4) return v === 4 ? ipv4Dscp(buf, l3) : -1;
  if (type === ETHERTYPE_IPV6)
    return v === 6 ? (((buf[l3] as number) & 0x0f) << 2) | ((buf[l3 + 1] as number) >> 6) : -1;
  return -1;
}
