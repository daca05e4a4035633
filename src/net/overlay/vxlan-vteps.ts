/**
 * The VTEPs of the VXLAN transport (vxlan-transport.ts): each channel's
 * destination entry (the sockaddr its datagrams are sent to, in one table
 * handed to sendmmsg), and the lookup of a received datagram's channel by
 * its sender's address only (the kernel varies the source port per flow,
 * RFC 7348 §5). The lookup is on the receive path: it allocates nothing.
 */
import type { NativeAddon } from '../../native/index.js';
import { LinkDialError } from './errors.js';
import type { VxlanChannel } from './vxlan-channel.js';

/** Bytes per sender record of udpRecvBatch. */
export const SENDER_REC = 20;
/** Bytes per destination entry of udpSendBatch. */
const DEST_ENTRY = 28;

export class VtepTable {
  /** Destination table: entry d (DEST_ENTRY bytes) is the sockaddr of the channel with dest d. */
  table = Buffer.alloc(16 * DEST_ENTRY);
  #nextDest = 0;
  readonly #freeDests: number[] = [];
  /** IPv4 VTEPs by address as a 32-bit number; IPv6 ones in a list (few; compared byte by byte). */
  readonly #byV4 = new Map<number, VxlanChannel>();
  readonly #byV6: { addr: Buffer; ch: VxlanChannel }[] = [];
  /** Channels by numeric address text. */
  readonly #byAddr = new Map<string, VxlanChannel>();

  /** True when a channel to numeric address `ip` exists. */
  has(ip: string): boolean {
    return this.#byAddr.has(ip);
  }

  /** Every channel. */
  channels(): VxlanChannel[] {
    return [...this.#byAddr.values()];
  }

  /**
   * A destination entry for `sockaddr`: a freed one only when `idle`
   * (nothing queued may still point at it). Throws when the table is full.
   */
  allocDest(sockaddr: Buffer, idle: boolean): number {
    let d: number;
    if (idle && this.#freeDests.length > 0) d = this.#freeDests.pop() as number;
    else {
      if (this.#nextDest >= 0xffff) throw new LinkDialError('udp', 'too many VXLAN links were opened on this socket');
      d = this.#nextDest++;
      if ((d + 1) * DEST_ENTRY > this.table.length) {
        const t = Buffer.alloc(this.table.length * 2);
        this.table.copy(t);
        this.table = t;
      }
    }
    sockaddr.copy(this.table, d * DEST_ENTRY);
    return d;
  }

  /** Registers channel `ch` to numeric address `ip` for the receive lookup. */
  add(n: NativeAddon, ip: string, v4: boolean, ch: VxlanChannel): void {
    this.#byAddr.set(ip, ch);
    const mapped = n.sockaddrInet(ip, 0, true).subarray(8, 24); // sin6_addr: IPv4 as ::ffff:a.b.c.d
    if (v4) this.#byV4.set(mapped.readUInt32BE(12), ch);
    else this.#byV6.push({ addr: Buffer.from(mapped), ch });
  }

  /** Forgets a closed channel; its destination entry is reused later. */
  forget(ch: VxlanChannel): void {
    if (this.#byAddr.get(ch.ip) !== ch) return;
    this.#byAddr.delete(ch.ip);
    for (const [k, v] of this.#byV4) if (v === ch) this.#byV4.delete(k);
    const j = this.#byV6.findIndex((v) => v.ch === ch);
    if (j >= 0) this.#byV6.splice(j, 1);
    this.#freeDests.push(ch.dest);
  }

  /** The channel of the sender record at `from[at..]`, matched by address only. */
  sender(from: Buffer, at: number): VxlanChannel | undefined {
    if (from[at + 18] === 4) return this.#byV4.get(from.readUInt32BE(at + 12));
    for (const v of this.#byV6) {
      const a = v.addr;
      if (
        a.readUInt32BE(0) === from.readUInt32BE(at) &&
        a.readUInt32BE(4) === from.readUInt32BE(at + 4) &&
        a.readUInt32BE(8) === from.readUInt32BE(at + 8) &&
        a.readUInt32BE(12) === from.readUInt32BE(at + 12)
      )
        return v.ch;
    }
    return undefined;
  }
}

/** The sender record at `from[at..]` as text, for a log line (not on the data path). */
export function senderText(from: Buffer, at: number): string {
  const port = from.readUInt16BE(at + 16);
  if (from[at + 18] === 4) return `${from[at + 12]}.${from[at + 13]}.${from[at + 14]}.${from[at + 15]}:${port}`;
  const groups: string[] = [];
  for (let k = 0; k < 16; k += 2) groups.push(from.readUInt16BE(at + k).toString(16));
  return `[${groups.join(':')}]:${port}`;
}
