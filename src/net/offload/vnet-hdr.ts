/**
 * Offload metadata of a frame: the fields of a virtio_net_hdr (virtio 1.2
 * §5.1.6), which a TAP with IFF_VNET_HDR and a virtio-net device put in front
 * of every frame. A frame carrying metadata is a large segment to be cut
 * (gso_type not NONE), or a frame whose TCP/UDP checksum is yet to be
 * completed (NEEDS_CSUM), or both.
 *
 * One OffloadMeta object is reused per port: it is filled in place for each
 * frame and is valid only during the call it is handed to (like the frame
 * bytes), so nothing is allocated per frame.
 */

/** flags: the checksum from csum_start to the end of the frame is to be completed at csum_start + csum_offset. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** flags: the checksum was verified (receive side only; ignored here). */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;

/** gso_type: not a large segment. */
export const GSO_NONE = 0;
/** gso_type: TCP over IPv4 (TSO4). */
export const GSO_TCPV4 = 1;
/** gso_type: UDP fragmentation (UFO; legacy, not produced by Linux since 4.14). */
export const GSO_UDP = 3;
/** gso_type: TCP over IPv6 (TSO6). */
export const GSO_TCPV6 = 4;
/** gso_type: UDP segmentation (USO), IPv4 or IPv6 (virtio 1.2, Linux 6.2 TUN_F_USO4/6). */
export const GSO_UDP_L4 = 5;
/** gso_type bit: the TCP segments carry ECN CWR (TSO_ECN). */
export const GSO_ECN = 0x80;

/** Bytes of the virtio_net_hdr without num_buffers (legacy, VIRTIO_NET_F_MRG_RXBUF off). */
export const VNET_HDR_LEN_LEGACY = 10;
/** Bytes of virtio_net_hdr_v1 (with num_buffers): what vmlink's TAPs use (TUNSETVNETHDRSZ 12). */
export const VNET_HDR_LEN = 12;

/**
 * The virtio_net_hdr fields of one frame. Offsets are relative to the first
 * byte of the Ethernet header, as in the wire header.
 */
export class OffloadMeta {
  /** VIRTIO_NET_HDR_F_* bits. */
  flags = 0;
  /** GSO_* type, possibly with {@link GSO_ECN}. */
  gsoType = GSO_NONE;
  /** Bytes of headers (Ethernet to the end of TCP/UDP) per segment; a hint, recomputed when segmenting. */
  hdrLen = 0;
  /** Payload bytes per segment (the MSS for TCP). */
  gsoSize = 0;
  /** Where checksumming starts (the TCP/UDP header), from the start of the frame. */
  csumStart = 0;
  /** Where the checksum field lies, from csumStart (16 for TCP, 6 for UDP). */
  csumOffset = 0;

  /** True when the frame needs work before it can go to a port without offloads. */
  get active(): boolean {
    return (this.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 || this.isGso;
  }

  /** True for a large segment (a gso_type other than NONE, the ECN bit aside). */
  get isGso(): boolean {
    return (this.gsoType & ~GSO_ECN) !== GSO_NONE;
  }

  /** Copies every field from `m`. */
  copyFrom(m: OffloadMeta): void {
    this.flags = m.flags;
    this.gsoType = m.gsoType;
    this.hdrLen = m.hdrLen;
    this.gsoSize = m.gsoSize;
    this.csumStart = m.csumStart;
    this.csumOffset = m.csumOffset;
  }
}

/** Fills `m` from the little-endian virtio_net_hdr at `buf[off]` (at least 10 bytes). */
export function readVnetHdr(buf: Buffer, off: number, m: OffloadMeta): void {
  m.flags = buf[off] as number;
  m.gsoType = buf[off + 1] as number;
  m.hdrLen = (buf[off + 2] as number) | ((buf[off + 3] as number) << 8);
  m.gsoSize = (buf[off + 4] as number) | ((buf[off + 5] as number) << 8);
  m.csumStart = (buf[off + 6] as number) | ((buf[off + 7] as number) << 8);
  m.csumOffset = (buf[off + 8] as number) | ((buf[off + 9] as number) << 8);
}

/**
 * Writes a `len`-byte (10 or 12) little-endian virtio_net_hdr for `m` at
 * `buf[off]`; an all-zero header (a complete frame) when `m` is undefined.
 * num_buffers (bytes 10-11) is written as 0.
 */
export function writeVnetHdr(m: OffloadMeta | undefined, buf: Buffer, off: number, len: number): void {
  if (m === undefined) {
    buf.fill(0, off, off + len);
    return;
  }
  buf[off] = m.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
  buf[off + 1] = m.gsoType;
  buf.writeUInt16LE(m.hdrLen & 0xffff, off + 2);
  buf.writeUInt16LE(m.gsoSize & 0xffff, off + 4);
  buf.writeUInt16LE(m.csumStart & 0xffff, off + 6);
  buf.writeUInt16LE(m.csumOffset & 0xffff, off + 8);
  if (len > VNET_HDR_LEN_LEGACY) buf.fill(0, off + VNET_HDR_LEN_LEGACY, off + len);
}
