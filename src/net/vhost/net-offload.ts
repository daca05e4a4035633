/**
 * Checksum and segmentation offloads of a vhost-user virtio-net device
 * (virtio 1.2 §5.1.3 feature bits, §5.1.6.2 transmit, §5.1.6.4 receive): the
 * feature bits vmlink offers, what the guest negotiated, and the
 * virtio_net_hdr of each frame read into and written from {@link OffloadMeta}.
 *
 * Kept apart from the ring walk (net-device.ts) so that the data path calls
 * two small functions: {@link VhostOffloads.readTx} for every frame the guest
 * transmits and {@link VhostOffloads.writeRx} for every frame it receives.
 * The switch checks the metadata's offsets (src/net/offload/segmenter.ts) and
 * segments large frames for ports that take no offloads.
 */
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  OffloadMeta,
  readVnetHdr,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from '../offload/vnet-hdr.js';
import { bit, has } from './constants.js';

/** virtio-net offload feature bits (virtio 1.2 §5.1.3). */
export const OffF = {
  /** The device takes frames with a partial checksum (NEEDS_CSUM) from the driver. */
  CSUM: 0,
  /** The driver takes frames with a partial checksum. */
  GUEST_CSUM: 1,
  /** The driver takes TCP/IPv4 large segments. */
  GUEST_TSO4: 7,
  /** The driver takes TCP/IPv6 large segments. */
  GUEST_TSO6: 8,
  /** The driver takes large segments with the ECN bit (CWR on the first segment only). */
  GUEST_ECN: 9,
  /** The device takes TCP/IPv4 large segments from the driver. */
  HOST_TSO4: 11,
  /** The device takes TCP/IPv6 large segments. */
  HOST_TSO6: 12,
  /** The device takes large segments with the ECN bit. */
  HOST_ECN: 13,
} as const;

/**
 * Offload bits vmlink offers. Not offered: UFO (GUEST/HOST_UFO, bits 10 and
 * 14: the segmenter does not do IP fragmentation) and USO (bits 54-56: above
 * 2^53, which the session's feature numbers cannot hold exactly; QEMU 7.2
 * does not know them either).
 */
export const OFFLOAD_FEATURES =
  bit(OffF.CSUM) +
  bit(OffF.GUEST_CSUM) +
  bit(OffF.GUEST_TSO4) +
  bit(OffF.GUEST_TSO6) +
  bit(OffF.GUEST_ECN) +
  bit(OffF.HOST_TSO4) +
  bit(OffF.HOST_TSO6) +
  bit(OffF.HOST_ECN);

/** Why {@link VhostOffloads.readTx} refused a header (texts for the malformed counter's log). */
const BAD_FLAGS = 'virtio_net_hdr asks for a checksum (NEEDS_CSUM) but VIRTIO_NET_F_CSUM was not negotiated';
const BAD_GSO = 'virtio_net_hdr gso_type was not negotiated (HOST_TSO4/TSO6/ECN) or is unknown';
const BAD_CSUM = 'virtio_net_hdr csum_start + csum_offset points outside the frame';

/** The offload state of one device: negotiated features, the reused metadata, counters. */
export class VhostOffloads {
  /** Metadata of the frame last read by {@link readTx}; valid until the next call. */
  readonly meta = new OffloadMeta();
  /** After {@link readTx} returned null: why. */
  reason = '';
  /** True when the guest takes large TCP segments and partial checksums (GUEST_CSUM, GUEST_TSO4, GUEST_TSO6). */
  guestTakesOffloads = false;
  #hostCsum = false;
  #hostTso4 = false;
  #hostTso6 = false;
  #hostEcn = false;
  #guestCsum = false;
  #guestEcn = false;
  // counters
  /** Large segments the guest transmitted. */
  txGso = 0;
  /** Frames the guest transmitted with a partial checksum (NEEDS_CSUM), large or not. */
  txCsum = 0;
  /** Large segments given to the guest whole. */
  rxGso = 0;
  /** Frames given to the guest with a partial checksum. */
  rxCsum = 0;
  /** Transmitted frames dropped for a header using offloads that were not negotiated. */
  badHeaders = 0;

  /** Takes the negotiated feature bits (SET_FEATURES). */
  setFeatures(f: number): void {
    this.#hostCsum = has(f, OffF.CSUM);
    this.#hostTso4 = this.#hostCsum && has(f, OffF.HOST_TSO4);
    this.#hostTso6 = this.#hostCsum && has(f, OffF.HOST_TSO6);
    this.#hostEcn = has(f, OffF.HOST_ECN);
    this.#guestCsum = has(f, OffF.GUEST_CSUM);
    this.#guestEcn = has(f, OffF.GUEST_ECN);
    this.guestTakesOffloads = this.#guestCsum && has(f, OffF.GUEST_TSO4) && has(f, OffF.GUEST_TSO6);
  }

  /** Names of the negotiated offloads, for status listings ('off' when none). */
  describe(): string {
    const names: string[] = [];
    if (this.#hostCsum) names.push('csum');
    if (this.#hostTso4) names.push('tso4');
    if (this.#hostTso6) names.push('tso6');
    if (this.#hostEcn) names.push('ecn');
    if (this.#guestCsum) names.push('guest_csum');
    if (this.guestTakesOffloads) names.push('guest_tso4', 'guest_tso6');
    if (this.#guestEcn) names.push('guest_ecn');
    return names.length ? names.join(',') : 'off';
  }

  /**
   * Reads the transmitted header at `buf[off]`, followed by a `len`-byte
   * frame (virtio 1.2 §5.1.6.2.2). Returns {@link meta} when the frame asks
   * for work (a large segment or a checksum to complete), undefined for a
   * complete frame, null (counted, {@link reason} set) when the header uses
   * an offload the guest did not negotiate or its checksum position lies
   * outside the frame. The switch checks the rest (gso_size, the headers).
   */
  readTx(buf: Buffer, off: number, len: number): OffloadMeta | undefined | null {
    const flags = buf[off] as number;
    const gso = buf[off + 1] as number;
    // Unknown flag bits are ignored (§5.1.6.2.2); DATA_VALID means nothing on transmit.
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 && gso === GSO_NONE) return undefined;
    const m = this.meta;
    readVnetHdr(buf, off, m);
    m.flags = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    if (m.flags !== 0) {
      if (!this.#hostCsum) return this.#bad(BAD_FLAGS);
      // The switch checks this for checksum-only frames; a large segment passed whole needs it too.
      if (m.csumStart + m.csumOffset + 2 > len) return this.#bad(BAD_CSUM);
    }
    if (gso !== GSO_NONE) {
      const type = gso & ~GSO_ECN;
      const ok = (type === GSO_TCPV4 && this.#hostTso4) || (type === GSO_TCPV6 && this.#hostTso6);
      if (!ok || ((gso & GSO_ECN) !== 0 && !this.#hostEcn)) return this.#bad(BAD_GSO);
      this.txGso++;
    }
    if (m.flags !== 0) this.txCsum++;
    return m;
  }

  #bad(reason: string): null {
    this.badHeaders++;
    this.reason = reason;
    return null;
  }

  /**
   * True when the guest can take the frame described by `m` whole: it
   * negotiated the offloads, and, for a large segment, its type (TCP only;
   * the ECN bit only with GUEST_ECN). Other frames are cut by the caller.
   */
  accepts(m: OffloadMeta): boolean {
    if (!this.guestTakesOffloads) return false;
    if (!m.isGso) return true;
    const type = m.gsoType & ~GSO_ECN;
    if (type !== GSO_TCPV4 && type !== GSO_TCPV6) return false;
    return (m.gsoType & GSO_ECN) === 0 || this.#guestEcn;
  }

  /**
   * Writes the first 10 bytes of the received header at `hdr[off]`
   * (virtio 1.2 §5.1.6.4): all zero for a complete frame; otherwise
   * NEEDS_CSUM with csum_start/offset, gso_type/size and hdr_len from `m`,
   * or DATA_VALID when the source vouched for the checksum. `m` is given only
   * for frames {@link accepts} passed. num_buffers is the caller's.
   */
  writeRx(hdr: Buffer, off: number, m: OffloadMeta | undefined): void {
    if (m === undefined || !this.#guestCsum) {
      hdr.fill(0, off, off + 10);
      return;
    }
    let flags = m.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    // DATA_VALID only for a frame whose checksum the source checked and that needs no completion.
    if (flags === 0 && (m.flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0) flags = VIRTIO_NET_HDR_F_DATA_VALID;
    hdr[off] = flags;
    hdr[off + 1] = m.gsoType;
    hdr.writeUInt16LE(m.hdrLen & 0xffff, off + 2);
    hdr.writeUInt16LE(m.gsoSize & 0xffff, off + 4);
    hdr.writeUInt16LE(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM ? m.csumStart & 0xffff : 0, off + 6);
    hdr.writeUInt16LE(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM ? m.csumOffset & 0xffff : 0, off + 8);
  }

  /** Counts a frame given to the guest with the header at `hdr[off]` (once it is in the ring). */
  delivered(hdr: Buffer, off: number): void {
    if (hdr[off + 1] !== GSO_NONE) this.rxGso++;
    if (((hdr[off] as number) & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) this.rxCsum++;
  }
}
