/**
 * In-place accessors for the Ethernet header (IEEE 802.3 §3.1.1): MACs as
 * numbers, the group bit, the EtherType.
 *
 * Every accessor reads `buf` at an absolute offset and allocates nothing. The
 * `u16`/`u32` reads skip Buffer's per-call bounds check (a few percent of the
 * switch's time at 64-byte frames): the caller has checked the frame's length
 * (a read past the end yields `undefined` bytes, i.e. 0, never a throw).
 * A MAC is a 48-bit number (exact in a double), or, where a pair is cheaper,
 * its high 16 and low 32 bits.
 */

/** Ethernet header length: destination, source, EtherType. */
export const ETH_HLEN = 14;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
/** IEEE 802.1Q customer tag (C-tag) TPID. */
export const ETHERTYPE_VLAN = 0x8100;
/** IEEE 802.1ad service tag (S-tag) TPID. */
export const ETHERTYPE_QINQ = 0x88a8;
export const ETHERTYPE_IPV6 = 0x86dd;
/** Reverse ARP (RFC 903): what a guest's announce after migration carries. */
export const ETHERTYPE_RARP = 0x8035;

/** The broadcast address ff:ff:ff:ff:ff:ff as a 48-bit number. */
export const BROADCAST_MAC = 0xffff_ffff_ffff;

const TWO32 = 0x1_0000_0000;

/** Big-endian 16-bit read at `buf[at]`, unchecked (see the module note). */
export function u16(buf: Buffer, at: number): number {
  return ((buf[at] as number) << 8) | (buf[at + 1] as number);
}

/** Big-endian unsigned 32-bit read at `buf[at]`, unchecked (see the module note). */
export function u32(buf: Buffer, at: number): number {
  return (
    (buf[at] as number) * 0x100_0000 +
    (((buf[at + 1] as number) << 16) | ((buf[at + 2] as number) << 8) | (buf[at + 3] as number))
  );
}

/** High 16 bits of the destination MAC of the frame at `off`. */
export function dstHi(buf: Buffer, off: number): number {
  return u16(buf, off);
}

/** Low 32 bits of the destination MAC of the frame at `off`. */
export function dstLo(buf: Buffer, off: number): number {
  return u32(buf, off + 2);
}

/** High 16 bits of the source MAC of the frame at `off`. */
export function srcHi(buf: Buffer, off: number): number {
  return u16(buf, off + 6);
}

/** Low 32 bits of the source MAC of the frame at `off`. */
export function srcLo(buf: Buffer, off: number): number {
  return u32(buf, off + 8);
}

/** A MAC as one number from its high 16 and low 32 bits. */
export function macOf(hi: number, lo: number): number {
  return hi * TWO32 + lo;
}

/** True when the high 16 bits of a MAC have the I/G (group) bit: multicast or broadcast. */
export function isGroupHi(hi: number): boolean {
  return (hi & 0x100) !== 0;
}

/** The 48-bit MAC at `buf[off]` as a number. */
export function macAt(buf: Buffer, off: number): number {
  return u16(buf, off) * TWO32 + u32(buf, off + 2);
}

/** Writes the 48-bit MAC `mac` at `buf[off]`. */
export function writeMac(buf: Buffer, off: number, mac: number): void {
  buf.writeUInt16BE(Math.floor(mac / TWO32), off);
  buf.writeUInt32BE(mac % TWO32, off + 2);
}

/**
 * Writes an Ethernet header at `buf[off]` ({@link ETH_HLEN} bytes): destination
 * and source MACs (48-bit numbers) and the EtherType. `buf` must hold them.
 */
export function writeEthHeader(buf: Buffer, off: number, dst: number, src: number, type: number): void {
  writeMac(buf, off, dst);
  writeMac(buf, off + 6, src);
  buf.writeUInt16BE(type, off + 12);
}

/** True when the frame at `off` goes to a group (multicast or broadcast) address: the I/G bit of the first octet. */
export function isGroupDst(buf: Buffer, off: number): boolean {
  return ((buf[off] as number) & 1) === 1;
}

/** The EtherType (or the TPID of an outer tag) of the frame at `off`. */
export function etherType(buf: Buffer, off: number): number {
  return u16(buf, off + 12);
}
