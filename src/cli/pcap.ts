/**
 * Splits a pcap byte stream (libpcap format: 24-byte global header, then
 * records of a 16-byte header + `incl_len` bytes) at record boundaries, so a
 * capture cut short still leaves a valid file: only whole records are passed
 * on, and it can stop after N records.
 */
import { VmlinkError } from '../errors.js';

const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;
/** Larger than any frame vmlink captures (64 KiB + headroom); more means the stream is corrupt. */
const MAX_RECORD = 1 << 20;

export class PcapStreamError extends VmlinkError {
  constructor(message: string) {
    super('ERR_PCAP_STREAM', `the capture stream is not a valid pcap: ${message}`);
  }
}

export class PcapSplitter {
  /** Whole records passed on so far. */
  records = 0;
  /** Stop after this many records (Infinity: never). */
  readonly limit: number;
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #headerDone = false;
  #littleEndian = true;

  constructor(limit = Number.POSITIVE_INFINITY) {
    this.limit = limit;
  }

  /** True once `limit` records were passed on. */
  get full(): boolean {
    return this.records >= this.limit;
  }

  /**
   * Feeds bytes; returns what may be written out now (the global header and
   * whole records only, never past the limit). Throws PcapStreamError on a bad magic or record length.
   */
  push(chunk: Buffer): Buffer | undefined {
    if (this.full) return undefined;
    this.#pending.push(chunk);
    this.#pendingLen += chunk.length;
    const buf = this.#pending.length === 1 ? chunk : Buffer.concat(this.#pending, this.#pendingLen);
    let off = 0;
    if (!this.#headerDone) {
      if (buf.length < GLOBAL_HEADER) return this.#keep(buf, 0);
      const magicLE = buf.readUInt32LE(0);
      if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) this.#littleEndian = true;
      else if (buf.readUInt32BE(0) === 0xa1b2c3d4 || buf.readUInt32BE(0) === 0xa1b23c4d) this.#littleEndian = false;
      else throw new PcapStreamError(`bad magic 0x${buf.readUInt32BE(0).toString(16)}`);
      this.#headerDone = true;
      off = GLOBAL_HEADER;
    }
    while (!this.full && buf.length - off >= RECORD_HEADER) {
      const incl = this.#littleEndian ? buf.readUInt32LE(off + 8) : buf.readUInt32BE(off + 8);
      if (incl > MAX_RECORD) throw new PcapStreamError(`record of ${incl} bytes`);
      if (buf.length - off < RECORD_HEADER + incl) break;
      off += RECORD_HEADER + incl;
      this.records++;
    }
    const out = off > 0 ? buf.subarray(0, off) : undefined;
    this.#keep(buf, off);
    return out;
  }

  #keep(buf: Buffer, off: number): undefined {
    const rest = buf.subarray(off);
    this.#pending = rest.length ? [rest] : [];
    this.#pendingLen = rest.length;
    return undefined;
  }
}
