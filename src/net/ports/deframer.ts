/**
 * Length-prefixed frame parser for QEMU's stream and socket netdevs.
 *
 * Wire format (QEMU net/stream.c, net/socket.c, net_fill_rstate in net/net.c):
 * each frame is a 4-byte big-endian length followed by that many bytes. QEMU's
 * receive buffer is NET_BUFSIZE (4096 + 65536) bytes; a longer length breaks
 * the connection.
 *
 * A state machine fed Buffers, testable without sockets. Frames that lie
 * whole inside one chunk are handed to the sink as offsets into that chunk
 * (no copy, no allocation); only a frame split across chunks is reassembled,
 * into one reusable buffer.
 */
import type { BatchSink, FrameSink } from '../port.js';

/** Bytes of the length prefix before each frame. */
export const PREFIX_LEN = 4;
/** Most frames handed to a batch sink in one call. */
const BATCH_MAX = 1024;

/** Result of {@link Deframer.push}. */
export const PushResult = {
  /** Every byte was consumed; the stream is healthy. */
  OK: 0,
  /** A length prefix exceeded the maximum: the stream is broken, close the connection. */
  OVERSIZED: 1,
} as const;
export type PushResult = (typeof PushResult)[keyof typeof PushResult];

export class Deframer {
  readonly #sink: FrameSink;
  readonly #batch: BatchSink | undefined;
  /** Offsets and lengths of the frames collected for {@link #batch} from the current chunk. */
  readonly #frames = new Uint32Array(2 * BATCH_MAX);
  #count = 0;
  readonly #maxFrameLen: number;
  /** Reassembly buffer for frames split across chunks; grown on demand up to maxFrameLen. */
  #asm: Buffer;
  /** Bytes of the current split frame already in #asm (or of the prefix in #hdr). */
  #have = 0;
  /** Length of the frame being reassembled, or -1 while reading a prefix. */
  #need = -1;
  /** Partial length prefix. */
  #hdr = 0;
  #hdrHave = 0;
  /** Set once a bad prefix was seen; every later push is refused. */
  #broken = false;
  /** The offending length after {@link PushResult.OVERSIZED}. */
  badLength = -1;

  /**
   * @param sink receives each whole frame; the bytes are valid only during the call
   * @param maxFrameLen largest frame accepted, bytes (QEMU: 4096 + 65536)
   * @param batch optional: receives the frames lying whole inside one pushed chunk
   *   together (at most BATCH_MAX per call), after any frame completed from earlier
   *   chunks, so the order is the stream's; each frame's length prefix stays in
   *   place just before it
   */
  constructor(sink: FrameSink, maxFrameLen: number, batch?: BatchSink) {
    this.#sink = sink;
    this.#batch = batch;
    this.#maxFrameLen = maxFrameLen;
    this.#asm = Buffer.allocUnsafe(Math.min(maxFrameLen, 2048));
  }

  /** True while a frame or prefix is partly received (a close now truncates it). */
  get partial(): boolean {
    return this.#hdrHave !== 0 || this.#need >= 0;
  }

  /** Bytes of a truncated frame or prefix held, for error messages. */
  get partialBytes(): number {
    return this.#need >= 0 ? PREFIX_LEN + this.#have : this.#hdrHave;
  }

  /** Length the truncated frame announced, or -1 when only part of its prefix came. */
  get partialLength(): number {
    return this.#need;
  }

  /** Forgets any partial frame (e.g. for a new connection). */
  reset(): void {
    this.#have = 0;
    this.#need = -1;
    this.#hdr = 0;
    this.#hdrHave = 0;
    this.#broken = false;
    this.badLength = -1;
  }

  /**
   * Feeds `chunk[0 .. end)`. Calls the sink for every frame completed by it. Returns
   * {@link PushResult.OVERSIZED} (and consumes nothing more) when a prefix
   * announces a frame longer than the maximum. Never throws for any input.
   */
  push(chunk: Buffer, end = chunk.length): PushResult {
    if (this.#broken) return PushResult.OVERSIZED;
    let p = 0;
    // Finish a frame or prefix left over from earlier chunks.
    if (this.#hdrHave !== 0 || this.#need >= 0) {
      p = this.#resume(chunk, 0, end);
      if (p < 0) return PushResult.OVERSIZED;
    }
    // Fast path: whole frames inside this chunk go to the sink in place.
    while (end - p >= PREFIX_LEN) {
      const len = chunk.readUInt32BE(p);
      if (len > this.#maxFrameLen) {
        if (this.#count > 0) this.#deliver(chunk);
        return this.#oversized(len);
      }
      const start = p + PREFIX_LEN;
      if (end - start < len) {
        if (this.#count > 0) this.#deliver(chunk);
        this.#startSplit(len, chunk, start, end);
        return PushResult.OK;
      }
      if (this.#batch !== undefined) {
        const i = 2 * this.#count;
        this.#frames[i] = start;
        this.#frames[i + 1] = len;
        if (++this.#count === BATCH_MAX) this.#deliver(chunk);
      } else {
        this.#sink(chunk, start, len);
      }
      p = start + len;
    }
    if (this.#count > 0) this.#deliver(chunk);
    // 1-3 prefix bytes at the end of the chunk.
    while (p < end) {
      this.#hdr = this.#hdr * 256 + (chunk[p++] as number);
      this.#hdrHave++;
    }
    return PushResult.OK;
  }

  /** Continues a split prefix/frame from chunk[p]; returns the next offset, or -1 when broken. */
  #resume(chunk: Buffer, p: number, end: number): number {
    if (this.#need < 0) {
      while (this.#hdrHave < PREFIX_LEN && p < end) {
        this.#hdr = this.#hdr * 256 + (chunk[p++] as number);
        this.#hdrHave++;
      }
      if (this.#hdrHave < PREFIX_LEN) return end;
      const len = this.#hdr;
      this.#hdr = 0;
      this.#hdrHave = 0;
      if (len > this.#maxFrameLen) {
        this.#oversized(len);
        return -1;
      }
      // Prefix complete: if the whole frame follows in this chunk, take the fast path.
      if (end - p >= len) {
        this.#sink(chunk, p, len);
        return p + len;
      }
      this.#startSplit(len, chunk, p, end);
      return end;
    }
    const take = Math.min(this.#need - this.#have, end - p);
    chunk.copy(this.#asm, this.#have, p, p + take);
    this.#have += take;
    p += take;
    if (this.#have === this.#need) {
      const len = this.#need;
      this.#need = -1;
      this.#have = 0;
      this.#sink(this.#asm, 0, len);
    }
    return p;
  }

  #deliver(chunk: Buffer): void {
    const n = this.#count;
    this.#count = 0;
    (this.#batch as BatchSink)(chunk, this.#frames, n);
  }

  #startSplit(len: number, chunk: Buffer, start: number, end: number): void {
    if (this.#asm.length < len) {
      // Grow geometrically, capped at the maximum: a few allocations per connection at most.
      this.#asm = Buffer.allocUnsafe(Math.min(this.#maxFrameLen, Math.max(len, this.#asm.length * 2)));
    }
    chunk.copy(this.#asm, 0, start, end);
    this.#have = end - start;
    this.#need = len;
  }

  #oversized(len: number): PushResult {
    this.#broken = true;
    this.badLength = len;
    return PushResult.OVERSIZED;
  }
}
