/**
 * The features this back-end offers the front-end (vhost-user.rst
 * "Feature negotiation"), and the check of what it asks for against them.
 */
import { bit, F, has, ProtoF } from './constants.js';
import { OFFLOAD_FEATURES } from './net-offload.js';

/** Device features we offer, checksum and TSO offloads included (net-offload.ts). */
export const OFFERED_FEATURES =
  OFFLOAD_FEATURES +
  bit(F.VERSION_1) +
  bit(F.PROTOCOL_FEATURES) +
  bit(F.NET_MRG_RXBUF) +
  bit(F.RING_INDIRECT_DESC) +
  bit(F.RING_EVENT_IDX) +
  bit(F.NET_MTU) +
  bit(F.NET_MQ) +
  bit(F.LOG_ALL);

/** Protocol features we offer. */
export const OFFERED_PROTOCOL_FEATURES =
  bit(ProtoF.MQ) + bit(ProtoF.LOG_SHMFD) + bit(ProtoF.RARP) + bit(ProtoF.REPLY_ACK) + bit(ProtoF.MTU);

/** Feature bit numbers set in `f` but not in `offered`. */
export function unoffered(f: number, offered: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64 && 2 ** b <= f; b++) if (has(f, b) && !has(offered, b)) out.push(b);
  return out;
}
