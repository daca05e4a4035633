/**
 * In-place accessors for ARP (RFC 826) and RARP (RFC 903) over Ethernet/IPv4,
 * given the absolute offset `l3` of the ARP header.
 */
import { macAt, u16, u32 } from './ethernet.js';

/** Length of an Ethernet/IPv4 ARP packet. */
export const ARP_LEN = 28;
export const ARP_REQUEST = 1;

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
