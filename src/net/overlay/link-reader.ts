/**
 * The receive window of one link connection, for Node's `onread` socket
 * option: every read lands in one reusable buffer, right after the bytes of
 * the record still incomplete from the reads before, so records are parsed
 * in place (LinkDecoder.parse) whatever their size, and a 64 KB segment
 * split across reads is never reassembled. Only the incomplete tail is
 * copied, to the front of the buffer, when the room behind it runs short:
 * about once per buffer length of traffic, at most one record.
 *
 * A plain TCP socket reads as much as the room offers (up to the buffer
 * length per syscall, instead of the 64 KB of a 'data' event, and without
 * allocating a Buffer per read); a TLS socket hands over its 16 KB clear
 * text chunks the same way.
 */
import { HEADER_LEN, MAX_FRAME_BODY, OFFLOAD_HLEN } from './codec.js';

/** Bytes of the receive buffer of one connection. */
export const READ_BYTES = 1 << 20;
/** The largest record with its header: less than this is always left free for the next read. */
const MIN_ROOM = HEADER_LEN + OFFLOAD_HLEN + MAX_FRAME_BODY;

/** Parses `buf[start .. end)`; returns the offset of the incomplete record at the end, or -1 to stop. */
export type WindowParser = (buf: Buffer, start: number, end: number) => number;

export class LinkReader {
  readonly #buf: Buffer;
  /** Unparsed bytes (an incomplete record) are buf[#start .. #end). */
  #start = 0;
  #end = 0;
  #parse: WindowParser | undefined;
  #failed = false;

  /** For the socket's options: `{ onread: reader.onread }`. */
  readonly onread = {
    buffer: (): Buffer => this.#room(),
    callback: (nread: number): boolean => this.#got(nread),
  };

  /** @param bytes buffer size; default {@link READ_BYTES}, at least twice the largest record */
  constructor(bytes = READ_BYTES) {
    this.#buf = Buffer.allocUnsafe(Math.max(bytes, 2 * MIN_ROOM));
  }

  /**
   * Starts handing reads to `parse`, once the channel exists. Bytes read
   * before (a TLS socket may hand over the peer's first record with the end
   * of its handshake) are parsed in a later turn, after the caller is set up.
   */
  bind(parse: WindowParser): void {
    this.#parse = parse;
    if (this.#end > this.#start) setImmediate(() => this.#got(0));
  }

  /** True while an incomplete record is held. */
  get partial(): boolean {
    return this.#end > this.#start;
  }

  #got(nread: number): boolean {
    if (this.#failed) return true;
    this.#end += nread;
    const parse = this.#parse;
    if (parse === undefined) return true;
    const p = parse(this.#buf, this.#start, this.#end);
    if (p < 0) {
      // The channel closes the connection; later reads are ignored.
      this.#failed = true;
      this.#start = this.#end = 0;
      return true;
    }
    if (p === this.#end) this.#start = this.#end = 0;
    else this.#start = p;
    return true;
  }

  /** Where the next read goes: after the held bytes, moved to the front first when the room is short. */
  #room(): Buffer {
    const buf = this.#buf;
    if (buf.length - this.#end < MIN_ROOM) {
      buf.copy(buf, 0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    return buf.subarray(this.#end);
  }
}
