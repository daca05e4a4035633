/**
 * In-place accessors for ARP (RFC 826) and RARP (RFC 903) over Ethernet/IPv4,
 * given the absolute offset `l3` of the ARP header.
 */
import { ETHERTYPE_IPV4, macAt, u16, u32, writeMac } from './ethernet.js';

/** Length of an Ethernet/IPv4 ARP packet. */
export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
/** RARP "request reverse" (RFC 903): the opcode of a migration announce. */
export const RARP_REQUEST_REVERSE = 3;

/** ARP hardware type of Ethernet (RFC 826 ar$hrd). */
const HTYPE_ETHERNET = 1;

/** The opcode (1 request, 2 reply, 3/4 RARP) of the ARP header at `l3`; needs 8 bytes. */
export function arpOp(buf: Buffer, l3: number): number {
  return u16(buf, l3 + 6);
}

/** Sender hardware address (needs {@link ARP_LEN} bytes). */
export function arpSenderMac(buf: Buffer, l3: number): number {
  return macAt(buf, l3 + 8);
}

/** Sender IPv4 address as an unsigned 32-bit number. */
export function arpSenderIp(buf: Buffer, l3: number): number {
  return u32(buf, l3 + 14);
}

/** Target IPv4 address as an unsigned 32-bit number. */
export function arpTargetIp(buf: Buffer, l3: number): number {
  return u32(buf, l3 + 24);
}

/**
 * Writes an Ethernet/IPv4 ARP or RARP packet at `l3` ({@link ARP_LEN} bytes):
 * hardware type Ethernet, protocol IPv4, address lengths 6 and 4, opcode `op`,
 * then the sender and target addresses (MACs as 48-bit numbers, IPv4
 * addresses as unsigned 32-bit numbers). `buf` must hold them.
 */
export function writeArp(
  buf: Buffer,
  l3: number,
  op: number,
  senderMac: number,
  senderIp: number,
  targetMac: number,
  targetIp: number,
): void {
  buf.writeUInt16BE(HTYPE_ETHERNET, l3);
  buf.writeUInt16BE(ETHERTYPE_IPV4, l3 + 2);
  buf[l3 + 4] = 6;
  buf[l3 + 5] = 4;
  buf.writeUInt16BE(op, l3 + 6);
  writeMac(buf, l3 + 8, senderMac);
  buf.writeUInt32BE(senderIp, l3 + 14);
  writeMac(buf, l3 + 18, targetMac);
  buf.writeUInt32BE(targetIp, l3 + 24);
}
