/**
 * Record framing of TCP and TLS links (docs/overlay.md "Wire format").
 *
 * Each record is an 8-byte header (u32 body length, u8 type, u24 VNI, all
 * big-endian) and its body: an Ethernet frame (type 1), one JSON control
 * message (type 2), or an Ethernet frame with its offload metadata (type 3:
 * a 10-byte offload header, then the frame; sent only to a peer whose hello
 * says `offloads: true`).
 *
 * {@link LinkDecoder} is a state machine fed Buffers, testable without
 * sockets. Records that lie whole inside one chunk are handed over as
 * offsets into that chunk (no copy); only a record split across chunks is
 * reassembled, into one reusable buffer. It never throws for any input: a
 * bad header makes push() return an error code, and the decoder stays broken.
 */
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP_L4,
  OffloadMeta,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from '../offload/vnet-hdr.js';
import { MAX_FRAME_LEN } from '../port.js';

/** Bytes of a record header. */
export const HEADER_LEN = 8;
/** Record type: an Ethernet frame of the network with the header's VNI. */
export const TYPE_FRAME = 1;
/** Record type: a JSON control message. */
export const TYPE_CONTROL = 2;
/** Record type: an Ethernet frame with offload metadata (a large segment or a partial checksum). */
export const TYPE_FRAME_OFFLOAD = 3;
/** Bytes of the offload header at the start of a type-3 body. */
export const OFFLOAD_HLEN = 10;
/** Largest frame body: the switch's largest frame. */
export const MAX_FRAME_BODY = MAX_FRAME_LEN;
/** Largest control body, bytes. */
export const MAX_CONTROL_BODY = 65536;

/** Result of {@link LinkDecoder.push}. */
export const DecodeResult = {
  OK: 0,
  /** A header announced a body longer than its type allows. */
  TOO_LONG: 1,
  /** A header has an unknown type. */
  BAD_TYPE: 2,
  /** An offload record with a bad offload header (unknown flags or GSO type, or no room for a frame). */
  BAD_OFFLOAD: 3,
} as const;
export type DecodeResult = (typeof DecodeResult)[keyof typeof DecodeResult];

/** Writes a record header at `buf[at]`. */
export function writeHeader(buf: Buffer, at: number, bodyLen: number, type: number, vni: number): void {
  buf.writeUInt32BE(bodyLen, at);
  // `>>> 0`: a type of 128 or more would make the shifted value a negative int32 (writeUInt32BE throws).
  buf.writeUInt32BE((((type & 0xff) << 24) | (vni & 0xffffff)) >>> 0, at + 4);
}

/**
 * Writes the offload header of a type-3 record at `buf[at]` (big-endian):
 * u8 flags (only NEEDS_CSUM), u8 gso_type, u16 hdr_len, u16 gso_size,
 * u16 csum_start, u16 csum_offset: the virtio_net_hdr fields, offsets from
 * the first byte of the Ethernet header.
 */
export function writeOffloadHeader(buf: Buffer, at: number, m: OffloadMeta): void {
  buf[at] = m.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
  buf[at + 1] = m.gsoType;
  buf.writeUInt16BE(m.hdrLen & 0xffff, at + 2);
  buf.writeUInt16BE(m.gsoSize & 0xffff, at + 4);
  buf.writeUInt16BE(m.csumStart & 0xffff, at + 6);
  buf.writeUInt16BE(m.csumOffset & 0xffff, at + 8);
}

/**
 * Fills `m` from the offload header at `buf[at]`; false when the header is
 * not one this host writes: flag bits other than NEEDS_CSUM, or a GSO type
 * other than NONE, TCPV4, TCPV6, UDP_L4 (ECN bit allowed on TCP). Whether
 * the offsets fit the frame is checked by the switch at ingress, as for a TAP.
 */
export function readOffloadHeader(buf: Buffer, at: number, m: OffloadMeta): boolean {
  const flags = buf[at] as number;
  const gso = buf[at + 1] as number;
  if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) return false;
  const base = gso & ~GSO_ECN;
  if (base !== GSO_NONE && base !== GSO_TCPV4 && base !== GSO_TCPV6 && base !== GSO_UDP_L4) return false;
  if (gso !== base && base !== GSO_TCPV4 && base !== GSO_TCPV6) return false;
  m.flags = flags;
  m.gsoType = gso;
  m.hdrLen = buf.readUInt16BE(at + 2);
  m.gsoSize = buf.readUInt16BE(at + 4);
  m.csumStart = buf.readUInt16BE(at + 6);
  m.csumOffset = buf.readUInt16BE(at + 8);
  return true;
}

/** One control record (header and JSON body) as a new Buffer. */
export function encodeControl(msg: object): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const out = Buffer.allocUnsafe(HEADER_LEN + body.length);
  writeHeader(out, 0, body.length, TYPE_CONTROL, 0);
  body.copy(out, HEADER_LEN);
  return out;
}

/** Receives decoded records; the bytes are valid only during the call. */
export interface RecordSink {
  /** A frame; `meta` only for a type-3 record (one object reused by the decoder, valid during the call). */
  frame(vni: number, buf: Buffer, off: number, len: number, meta?: OffloadMeta): void;
  control(buf: Buffer, off: number, len: number): void;
}

export class LinkDecoder {
  readonly #sink: RecordSink;
  readonly #meta: OffloadMeta;
  /** Header bytes of a split header. */
  readonly #hdr = Buffer.alloc(HEADER_LEN);
  #hdrHave = 0;
  /** Body being reassembled: its length, type, VNI; #need < 0 while reading a header. */
  #need = -1;
  #type = 0;
  #vni = 0;
  #asm = Buffer.allocUnsafe(4096);
  #have = 0;
  #broken: DecodeResult = DecodeResult.OK;
  /** The offending header after an error: length and type. */
  badLength = -1;
  badType = -1;

  /** @param meta the object type-3 records fill and hand to the sink (reused). */
  constructor(sink: RecordSink, meta: OffloadMeta = new OffloadMeta()) {
    this.#sink = sink;
    this.#meta = meta;
  }

  /** True while a record is partly received. */
  get partial(): boolean {
    return this.#hdrHave !== 0 || this.#need >= 0;
  }

  /** Feeds `chunk[0 .. end)`; calls the sink for each completed record. */
  push(chunk: Buffer, end = chunk.length): DecodeResult {
    if (this.#broken !== DecodeResult.OK) return this.#broken;
    let p = 0;
    if (this.#hdrHave !== 0 || this.#need >= 0) {
      p = this.#resume(chunk, end);
      if (p < 0) return this.#broken;
    }
    p = this.#scan(chunk, p, end);
    if (p < 0) return this.#broken;
    if (end - p >= HEADER_LEN) {
      const tv = chunk.readUInt32BE(p + 4);
      this.#startBody(chunk.readUInt32BE(p), tv >>> 24, tv & 0xffffff, chunk, p + HEADER_LEN, end);
    } else if (p < end) {
      chunk.copy(this.#hdr, 0, p, end);
      this.#hdrHave = end - p;
    }
    return DecodeResult.OK;
  }

  /**
   * Parses the records that lie whole in `buf[start .. end)` in place (no
   * copy) and hands each to the sink. Returns the offset of the first byte of
   * the incomplete record at the end (`end` when there is none), which the
   * caller keeps and passes again with more bytes after it; or -1 when a
   * header is bad (the decoder is then broken, as after push()). For a reader
   * that owns its read buffer (link-reader.ts); not to be mixed with push()
   * on one decoder.
   */
  parse(buf: Buffer, start: number, end: number): number {
    if (this.#broken !== DecodeResult.OK) return -1;
    return this.#scan(buf, start, end);
  }

  /** The last result of a failed parse() (OK while not broken). */
  get error(): DecodeResult {
    return this.#broken;
  }

  /**
   * Delivers the whole records from `p`; returns the offset of the first
   * incomplete one (its header already checked when complete), or -1 when broken.
   */
  #scan(chunk: Buffer, p: number, end: number): number {
    while (end - p >= HEADER_LEN) {
      const len = chunk.readUInt32BE(p);
      const tv = chunk.readUInt32BE(p + 4);
      const type = tv >>> 24;
      if (!this.#check(len, type)) return -1;
      const start = p + HEADER_LEN;
      if (end - start < len) return p;
      if (!this.#deliver(type, tv & 0xffffff, chunk, start, len)) return -1;
      p = start + len;
    }
    return p;
  }

  /** Continues a split header or body from chunk[0]; returns the next offset, or -1 when broken. */
  #resume(chunk: Buffer, end: number): number {
    let p = 0;
    if (this.#need < 0) {
      const take = Math.min(HEADER_LEN - this.#hdrHave, end);
      chunk.copy(this.#hdr, this.#hdrHave, 0, take);
      this.#hdrHave += take;
      p = take;
      if (this.#hdrHave < HEADER_LEN) return end;
      this.#hdrHave = 0;
      const len = this.#hdr.readUInt32BE(0);
      const tv = this.#hdr.readUInt32BE(4);
      const type = tv >>> 24;
      if (!this.#check(len, type)) return -1;
      if (end - p >= len) return this.#deliver(type, tv & 0xffffff, chunk, p, len) ? p + len : -1;
      this.#startBody(len, type, tv & 0xffffff, chunk, p, end);
      return end;
    }
    const take = Math.min(this.#need - this.#have, end);
    chunk.copy(this.#asm, this.#have, 0, take);
    this.#have += take;
    if (this.#have === this.#need) {
      const len = this.#need;
      this.#need = -1;
      this.#have = 0;
      if (!this.#deliver(this.#type, this.#vni, this.#asm, 0, len)) return -1;
    }
    return take;
  }

  #check(len: number, type: number): boolean {
    const max =
      type === TYPE_FRAME
        ? MAX_FRAME_BODY
        : type === TYPE_CONTROL
          ? MAX_CONTROL_BODY
          : type === TYPE_FRAME_OFFLOAD
            ? MAX_FRAME_BODY + OFFLOAD_HLEN
            : -1;
    if (len <= max) return true;
    this.badLength = len;
    this.badType = type;
    this.#broken = max < 0 ? DecodeResult.BAD_TYPE : DecodeResult.TOO_LONG;
    return false;
  }

  #startBody(len: number, type: number, vni: number, chunk: Buffer, start: number, end: number): void {
    if (this.#asm.length < len)
      this.#asm = Buffer.allocUnsafe(Math.max(len, Math.min(MAX_FRAME_BODY, this.#asm.length * 2)));
    chunk.copy(this.#asm, 0, start, end);
    this.#have = end - start;
    this.#need = len;
    this.#type = type;
    this.#vni = vni;
  }

  /** Hands one record to the sink; false (and broken) for a bad offload header. */
  #deliver(type: number, vni: number, buf: Buffer, off: number, len: number): boolean {
    if (type === TYPE_FRAME) this.#sink.frame(vni, buf, off, len);
    else if (type === TYPE_CONTROL) this.#sink.control(buf, off, len);
    else {
      if (len < OFFLOAD_HLEN || !readOffloadHeader(buf, off, this.#meta)) {
        this.badLength = len;
        this.badType = type;
        this.#broken = DecodeResult.BAD_OFFLOAD;
        return false;
      }
      this.#sink.frame(vni, buf, off + OFFLOAD_HLEN, len - OFFLOAD_HLEN, this.#meta);
    }
    return true;
  }
}
