/**
 * The VXLAN header (RFC 7348 §5) and the channel of one remote VTEP: what
 * vxlan-transport.ts builds its links from.
 */
import { isIP } from 'node:net';
import { WriteResult } from '../port.js';
import type {
  ChannelHandlers,
  ChannelStats,
  ControlMessage,
  LinkChannel,
  PeerHello,
  TransportAddress,
} from './transport.js';

/** VXLAN header bytes. */
export const VXLAN_HLEN = 8;
/** Outer IPv4 + UDP + VXLAN header bytes within the underlay MTU. */
export const VXLAN_OVERHEAD = 20 + 8 + VXLAN_HLEN;
/** The I flag: the VNI field is valid. */
const FLAG_I = 0x08;
/**
 * Parses a VXLAN header at `buf[at..]` of a datagram of `len` bytes; returns
 * the VNI or -1 when it is not a valid VXLAN datagram.
 */
export function parseVxlan(buf: Buffer, len: number, at = 0): number {
  if (len < VXLAN_HLEN + 14) return -1;
  if (((buf[at] as number) & FLAG_I) === 0) return -1;
  return buf.readUInt32BE(at + 4) >>> 8;
}

/** Writes a VXLAN header for `vni` at `buf[at]`. */
export function writeVxlan(buf: Buffer, at: number, vni: number): void {
  buf.writeUInt32BE(FLAG_I << 24, at);
  // `>>> 0`: a VNI of 2^23 or more shifted by 8 is a negative int32, which writeUInt32BE refuses.
  buf.writeUInt32BE(((vni & 0xffffff) << 8) >>> 0, at + 4);
}

/** What a channel needs from its transport. */
export interface VxlanSender {
  /** Queues one datagram (header for `vni` + frame) to destination entry `dest`. */
  queue(dest: number, vni: number, buf: Buffer, off: number, len: number): WriteResult;
  /** The channel closed: stop matching its address. */
  forget(ch: VxlanChannel): void;
}

export class VxlanChannel implements LinkChannel {
  readonly kind = 'vxlan';
  readonly outbound = true;
  readonly queuedBytes = 0;
  readonly remote: string;
  handlers: ChannelHandlers | undefined;
  closed = false;
  readonly s = {
    tx_frames: 0,
    tx_bytes: 0,
    rx_frames: 0,
    rx_bytes: 0,
    tx_writes: 0,
    drops_queue_full: 0,
    drops_too_big: 0,
    drops_unknown_vni: 0,
  };

  /**
   * @param ip the VTEP's numeric address (what received datagrams are matched by)
   * @param dest this channel's entry in the transport's destination table
   */
  constructor(
    readonly peer: PeerHello,
    readonly address: TransportAddress,
    readonly ip: string,
    readonly dest: number,
    readonly transport: VxlanSender,
    readonly maxFrame: number,
  ) {
    this.remote = `udp:${isIP(ip) === 6 ? `[${ip}]` : ip}:${address.port}`;
  }

  attach(h: ChannelHandlers): void {
    this.handlers = h;
  }

  send(vni: number, buf: Buffer, off: number, len: number): WriteResult {
    if (this.closed) return WriteResult.DOWN;
    if (len > this.maxFrame) {
      this.s.drops_too_big++;
      return WriteResult.OK;
    }
    const r = this.transport.queue(this.dest, vni, buf, off, len);
    if (r !== WriteResult.OK) {
      if (r === WriteResult.QUEUE_FULL) this.s.drops_queue_full++;
      return r;
    }
    this.s.tx_frames++;
    this.s.tx_bytes += len;
    this.s.tx_writes++;
    return WriteResult.OK;
  }

  sendControl(_msg: ControlMessage): boolean {
    return false;
  }

  stats(): ChannelStats {
    return { rtt_ms: undefined, ...this.s };
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.transport.forget(this);
    this.handlers?.closed(reason, 'closed-here');
  }
}
