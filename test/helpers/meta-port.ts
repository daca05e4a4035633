/**
 * A port in memory for switch and overlay tests: it records every frame
 * written to it with a copy of its offload metadata, and takes offloads or
 * not as the test says. Frames enter the switch through `sink`.
 */
import { GSO_TCPV4, OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import { type FrameSink, type Port, type PortState, WriteResult } from '../../src/net/port.js';

/** Offload metadata of a TCP/IPv4 large segment (54-byte headers, MSS 1448), as a TSO guest or TAP hands it over. */
export function tsoMeta(): OffloadMeta {
  return Object.assign(new OffloadMeta(), {
    flags: 1,
    gsoType: GSO_TCPV4,
    hdrLen: 54,
    gsoSize: 1448,
    csumStart: 34,
    csumOffset: 16,
  });
}

export class MetaPort implements Port {
  readonly kind = 'mem';
  readonly state: PortState = 'up';
  readonly queued = 0;
  /** Frames written, as hex, with a copy of their metadata when they had any. */
  readonly got: { hex: string; meta?: OffloadMeta }[] = [];
  constructor(
    readonly name: string,
    readonly offloads: boolean,
    readonly sink: FrameSink,
  ) {}
  async open(): Promise<void> {}
  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    let copy: OffloadMeta | undefined;
    if (meta) {
      copy = new OffloadMeta();
      copy.copyFrom(meta);
    }
    this.got.push({ hex: buf.toString('hex', off, off + len), ...(copy ? { meta: copy } : {}) });
    return WriteResult.OK;
  }
  describe(): Record<string, unknown> {
    return {};
  }
  async close(): Promise<void> {}
  async destroy(): Promise<void> {}
}
