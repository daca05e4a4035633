/**
 * Transmission phase wire format (proto.md "Transmission"): a request parser
 * (a state machine fed Buffers) and reply encoders. No sockets here.
 */
import { payloadPool } from '../buffer-pool.js';
import {
  CMD,
  MAX_PAYLOAD,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REQUEST_LEN,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';

/** One parsed request. */
export interface NbdRequest {
  /** NBD_CMD_* */
  type: number;
  /** NBD_CMD_FLAG_* */
  flags: number;
  /** The client's opaque cookie (handle), echoed in the reply. */
  cookie: bigint;
  /** Offset in bytes (values beyond 2^53 lose precision but are still far out of range). */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** WRITE payload; undefined for other commands. */
  data: Buffer | undefined;
}

/**
 * Parses requests from a byte stream. `onRequest` is called for each; on a
 * malformed request (bad magic, write payload beyond {@link MAX_PAYLOAD})
 * `onError` is called once with a reason and the parser ignores further input.
 */
export class RequestParser {
  #buf: Buffer = Buffer.alloc(0);
  #pending: NbdRequest | undefined;
  /** WRITE payload being assembled from several chunks. */
  #payload: Buffer | undefined;
  #filled = 0;
  #failed = false;
  #paused = false;
  #onRequest: (r: NbdRequest) => void;
  #onError: (reason: string) => void;
  #transient: boolean;

  /**
   * @param transient the chunks fed are reused by the caller once feed()
   *   returns (a socket's `onread` buffer): every byte kept past the call is
   *   copied (write payloads, the unparsed tail). Default false: chunks are
   *   kept by reference and write payloads in hand are views into them.
   */
  constructor(onRequest: (r: NbdRequest) => void, onError: (reason: string) => void, transient = false) {
    this.#onRequest = onRequest;
    this.#onError = onError;
    this.#transient = transient;
  }

  /** Bytes held while waiting for the rest of a request. */
  get buffered(): number {
    return this.#buf.length + this.#filled;
  }

  /**
   * Stops delivering requests (the caller's in-flight bound is reached):
   * bytes already received stay buffered until {@link resume}, so the bound
   * is exact, and the caller pauses its socket so the buffer stays bounded.
   */
  pause(): void {
    this.#paused = true;
  }

  /** Delivers the buffered requests, then keeps parsing. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.feed(Buffer.alloc(0));
  }

  feed(chunk: Buffer): void {
    if (this.#failed) return;
    let b = this.#buf.length ? (chunk.length ? Buffer.concat([this.#buf, chunk]) : this.#buf) : chunk;
    let p = 0;
    for (;;) {
      if (this.#paused || this.#failed) break;
      if (this.#pending) {
        // Assembling a write payload that spans chunks.
        const req = this.#pending;
        const payload = this.#payload as Buffer;
        const n = Math.min(b.length - p, req.length - this.#filled);
        b.copy(payload, this.#filled, p, p + n);
        this.#filled += n;
        p += n;
        if (this.#filled < req.length) break;
        req.data = payload;
        this.#pending = undefined;
        this.#payload = undefined;
        this.#filled = 0;
        this.#onRequest(req);
        if (this.#failed) return;
        continue;
      }
      if (b.length - p < REQUEST_LEN) break;
      const magic = b.readUInt32BE(p);
      if (magic !== REQUEST_MAGIC) {
        this.#fail(`bad request magic 0x${magic.toString(16).padStart(8, '0')}`);
        return;
      }
      const req: NbdRequest = {
        flags: b.readUInt16BE(p + 4),
        type: b.readUInt16BE(p + 6),
        cookie: b.readBigUInt64BE(p + 8),
        // Two 32-bit halves: no BigInt on the hot path; exact below 2^53, huge (out of range) above.
        offset: b.readUInt32BE(p + 16) * 0x100000000 + b.readUInt32BE(p + 20),
        length: b.readUInt32BE(p + 24),
        data: undefined,
      };
      p += REQUEST_LEN;
      if (req.type !== CMD.WRITE) {
        this.#onRequest(req);
        if (this.#failed) return;
        continue;
      }
      if (req.length > MAX_PAYLOAD) {
        this.#fail(`write payload of ${req.length} bytes exceeds the ${MAX_PAYLOAD}-byte maximum`);
        return;
      }
      if (b.length - p >= req.length) {
        // Whole payload in hand: a view, no copy (a pooled copy when the chunk is transient).
        if (this.#transient) {
          req.data = payloadPool.acquire(req.length);
          b.copy(req.data, 0, p, p + req.length);
        } else req.data = b.subarray(p, p + req.length);
        p += req.length;
        this.#onRequest(req);
        if (this.#failed) return;
        continue;
      }
      this.#pending = req;
      // Pooled: the connection gives it back once the backend is done with it.
      this.#payload = payloadPool.acquire(req.length);
      this.#filled = 0;
    }
    if (this.#failed) return;
    b = b.subarray(p);
    // Keep the unparsed tail. A short tail (part of a header) is copied so the big chunk can be freed.
    this.#buf = b.length === 0 ? EMPTY : b.length < REQUEST_LEN || this.#transient ? Buffer.from(b) : b;
  }

  /** Stops parsing (after DISC or when the connection is going away). */
  stop(): void {
    this.#failed = true;
  }

  #fail(reason: string): void {
    this.#failed = true;
    this.#buf = Buffer.alloc(0);
    this.#onError(reason);
  }
}

const EMPTY = Buffer.alloc(0);

/** A simple reply header (16 bytes). */
export function simpleReply(cookie: bigint, error: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

/** A structured reply chunk header (20 bytes) followed by `extra` bytes of space for the fixed payload. */
export function chunkHeader(cookie: bigint, flags: number, type: number, length: number, extra = 0): Buffer {
  const b = Buffer.allocUnsafe(20 + extra);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

/** NBD_REPLY_TYPE_NONE with DONE. */
export function noneChunk(cookie: bigint): Buffer {
  return chunkHeader(cookie, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0);
}

/** Header of an OFFSET_DATA chunk (28 bytes); the `dataLen` data bytes follow. */
export function offsetDataHeader(cookie: bigint, done: boolean, offset: number, dataLen: number): Buffer {
  const b = chunkHeader(cookie, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_DATA, 8 + dataLen, 8);
  b.writeBigUInt64BE(BigInt(offset), 20);
  return b;
}

/** An OFFSET_HOLE chunk (32 bytes). */
export function offsetHoleChunk(cookie: bigint, done: boolean, offset: number, length: number): Buffer {
  const b = chunkHeader(cookie, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_HOLE, 12, 12);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(length, 28);
  return b;
}

/** A BLOCK_STATUS chunk with DONE for one context. */
export function blockStatusChunk(
  cookie: bigint,
  contextId: number,
  extents: readonly { length: number; flags: number }[],
): Buffer {
  const b = chunkHeader(
    cookie,
    REPLY_FLAG_DONE,
    REPLY_TYPE.BLOCK_STATUS,
    4 + 8 * extents.length,
    4 + 8 * extents.length,
  );
  b.writeUInt32BE(contextId, 20);
  let p = 24;
  for (const e of extents) {
    b.writeUInt32BE(e.length, p);
    b.writeUInt32BE(e.flags, p + 4);
    p += 8;
  }
  return b;
}

/** An ERROR chunk with DONE and a message for people (at most 4096 bytes). */
export function errorChunk(cookie: bigint, error: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 1024));
  const b = chunkHeader(cookie, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.length, 6 + msg.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  return b;
}
