/**
 * Classic pcap file format writer (libpcap 2.4, "tcpdump" format; see
 * draft-ietf-opsawg-pcap §4 "File Header" and §5 "Packet Record").
 * Little-endian on disk, microsecond timestamps, link type 1 (Ethernet).
 *
 * {@link PcapWriter} batches records into large chunks, so a capture costs
 * one copy per frame and one socket write per chunk, not one per frame.
 */

/** Magic number of a microsecond-resolution pcap file. */
export const PCAP_MAGIC = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
/** Largest number of bytes kept of each frame (tcpdump's default snap length). */
export const PCAP_SNAPLEN = 262144;
/** LINKTYPE_ETHERNET. */
export const LINKTYPE_ETHERNET = 1;
/** Size of the file header. */
export const PCAP_HEADER_LEN = 24;
/** Size of each packet record header. */
export const PCAP_RECORD_HLEN = 16;

/** The 24-byte file header. */
export function pcapHeader(snaplen = PCAP_SNAPLEN, linktype = LINKTYPE_ETHERNET): Buffer {
  const b = Buffer.alloc(PCAP_HEADER_LEN);
  b.writeUInt32LE(PCAP_MAGIC, 0);
  b.writeUInt16LE(PCAP_VERSION_MAJOR, 4);
  b.writeUInt16LE(PCAP_VERSION_MINOR, 6);
  b.writeInt32LE(0, 8); // thiszone: GMT
  b.writeUInt32LE(0, 12); // sigfigs
  b.writeUInt32LE(snaplen, 16);
  b.writeUInt32LE(linktype, 20);
  return b;
}

/**
 * Writes one record (header + the first `snaplen` bytes of the frame) at
 * `out[at]`; returns the number of bytes written. `out` must have room for
 * `PCAP_RECORD_HLEN + min(len, snaplen)` bytes.
 */
export function writePcapRecord(
  out: Buffer,
  at: number,
  buf: Buffer,
  off: number,
  len: number,
  tsMicros: number,
  snaplen = PCAP_SNAPLEN,
): number {
  const incl = Math.min(len, snaplen);
  const sec = Math.floor(tsMicros / 1e6);
  out.writeUInt32LE(sec >>> 0, at);
  out.writeUInt32LE(Math.floor(tsMicros - sec * 1e6), at + 4);
  out.writeUInt32LE(incl, at + 8);
  out.writeUInt32LE(len, at + 12);
  buf.copy(out, at + PCAP_RECORD_HLEN, off, off + incl);
  return PCAP_RECORD_HLEN + incl;
}

export interface PcapWriterOptions {
  /** Bytes kept per frame; default {@link PCAP_SNAPLEN}. */
  snaplen?: number;
  /** Size of the chunks records are gathered in, bytes; default 64 KiB. */
  chunkSize?: number;
  /** Wall clock in microseconds since the epoch; default from `performance`. */
  clock?: () => number;
}

/** Gathers pcap records into chunks; the owner takes them with {@link PcapWriter.take}. */
export class PcapWriter {
  readonly #snaplen: number;
  readonly #chunkSize: number;
  readonly #clock: () => number;
  /** Chunks filled and not yet taken. */
  #full: Buffer[] = [];
  #cur: Buffer | undefined;
  #used = 0;
  #pending = 0;

  constructor(opts: PcapWriterOptions = {}) {
    this.#snaplen = opts.snaplen ?? PCAP_SNAPLEN;
    this.#chunkSize = opts.chunkSize ?? 64 * 1024;
    this.#clock = opts.clock ?? (() => Math.round((performance.timeOrigin + performance.now()) * 1000));
  }

  /** The file header for this writer's snap length. */
  header(): Buffer {
    return pcapHeader(this.#snaplen);
  }

  /** Bytes recorded and not yet taken. */
  get pending(): number {
    return this.#pending;
  }

  /** Appends one record for `buf[off .. off+len)`, stamped now. */
  record(buf: Buffer, off: number, len: number): void {
    const need = PCAP_RECORD_HLEN + Math.min(len, this.#snaplen);
    if (this.#cur === undefined || this.#used + need > this.#cur.length) {
      if (this.#cur !== undefined && this.#used > 0) this.#full.push(this.#cur.subarray(0, this.#used));
      this.#cur = Buffer.allocUnsafe(Math.max(need, this.#chunkSize));
      this.#used = 0;
    }
    this.#used += writePcapRecord(this.#cur, this.#used, buf, off, len, this.#clock(), this.#snaplen);
    this.#pending += need;
  }

  /** Everything recorded since the last call, as one Buffer, or undefined when nothing is pending. */
  take(): Buffer | undefined {
    if (this.#pending === 0) return undefined;
    if (this.#cur !== undefined && this.#used > 0) this.#full.push(this.#cur.subarray(0, this.#used));
    // The current chunk's tail stays usable: the taken part is a view before #used.
    if (this.#cur !== undefined) {
      this.#cur = this.#cur.subarray(this.#used);
      this.#used = 0;
    }
    const out = this.#full.length === 1 ? (this.#full[0] as Buffer) : Buffer.concat(this.#full);
    this.#full = [];
    this.#pending = 0;
    return out;
  }
}
