/**
 * vhost-user messages (docs/interop/vhost-user.rst "Message format"): a
 * 12-byte header (request, flags, size; host byte order) and `size` bytes of
 * payload, with fds passed as SCM_RIGHTS alongside the first bytes.
 *
 * {@link MessageReader} is a state machine fed byte chunks (and the fds that
 * came with each chunk); it never throws: a protocol error is returned, and
 * the caller disconnects the peer. {@link encodeMessage} builds one message.
 */
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  HDR_LEN,
  MAX_PAYLOAD,
  MAX_REGIONS,
  REQ_NAMES,
  Req,
  VERSION,
  VRING_NOFD_MASK,
} from './constants.js';
import { VhostFdError, VhostProtocolError } from './errors.js';

/** One complete message. */
export interface Message {
  request: number;
  flags: number;
  /** The payload (a copy: the message may be kept). */
  payload: Buffer;
  /** fds received with the message; the receiver owns (and must close) them. */
  fds: number[];
}

/** Name of a request for messages and logs, e.g. `SET_MEM_TABLE (5)`. */
export function reqName(request: number): string {
  return `${REQ_NAMES[request] ?? 'unknown request'} (${request})`;
}

/**
 * Splits a byte stream into messages. Fds that arrive with a chunk belong to
 * the message that holds the chunk's last byte: a front-end sends each
 * message (and its fds) with one sendmsg, and Linux's unix stream recvmsg
 * (unix_stream_read_generic) may join earlier messages in front of a message
 * with fds but stops right after it (or inside it, when the buffer is full).
 */
export class MessageReader {
  readonly #hdr = Buffer.alloc(HDR_LEN);
  #hdrHave = 0;
  #payload: Buffer | undefined;
  #payloadHave = 0;
  #request = 0;
  #flags = 0;
  #fds: number[] = [];
  readonly #replies: boolean;

  /** @param replies true on the front-end side: accept replies (flag bit 2), else refuse them. */
  constructor(replies = false) {
    this.#replies = replies;
  }

  /**
   * Consumes `chunk[start .. end)` and the fds that came with it, calling
   * `onMessage` for each complete message. Returns the first protocol error
   * (the rest of the chunk is ignored; the stream is unusable after it), else null.
   */
  feed(chunk: Buffer, start: number, end: number, fds: number[], onMessage: (m: Message) => void): Error | null {
    let pending = fds;
    let i = start;
    while (i < end || (this.#payload !== undefined && this.#payload.length === 0)) {
      if (this.#payload === undefined) {
        const n = Math.min(HDR_LEN - this.#hdrHave, end - i);
        chunk.copy(this.#hdr, this.#hdrHave, i, i + n);
        this.#hdrHave += n;
        i += n;
        if (this.#hdrHave < HDR_LEN) break;
        const err = this.#header();
        if (err) {
          this.#fds.push(...pending);
          return err;
        }
      }
      const payload = this.#payload as Buffer;
      const n = Math.min(payload.length - this.#payloadHave, end - i);
      chunk.copy(payload, this.#payloadHave, i, i + n);
      this.#payloadHave += n;
      i += n;
      if (this.#payloadHave === payload.length) {
        if (i === end && pending.length) {
          this.#fds.push(...pending);
          pending = [];
        }
        this.#emit(onMessage);
      }
    }
    if (pending.length) this.#fds.push(...pending);
    return null;
  }

  /** fds received but not yet handed out with a message (close them when dropping the reader). */
  takeFds(): number[] {
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }

  #header(): Error | null {
    const h = this.#hdr;
    this.#request = h.readUInt32LE(0);
    this.#flags = h.readUInt32LE(4);
    const size = h.readUInt32LE(8);
    if ((this.#flags & FLAG_VERSION_MASK) !== VERSION)
      return new VhostProtocolError(
        `${reqName(this.#request)}: protocol version ${this.#flags & FLAG_VERSION_MASK} in flags 0x${this.#flags.toString(16)}, expected ${VERSION}`,
      );
    if (((this.#flags & FLAG_REPLY) !== 0) !== this.#replies)
      return new VhostProtocolError(
        `${reqName(this.#request)}: ${this.#replies ? 'expected a reply' : 'a reply flag on a request'} (flags 0x${this.#flags.toString(16)})`,
      );
    if (size > MAX_PAYLOAD)
      return new VhostProtocolError(`${reqName(this.#request)}: payload size ${size} exceeds ${MAX_PAYLOAD} bytes`);
    this.#payload = Buffer.alloc(size);
    this.#payloadHave = 0;
    return null;
  }

  #emit(onMessage: (m: Message) => void): void {
    const m: Message = {
      request: this.#request,
      flags: this.#flags,
      payload: this.#payload as Buffer,
      fds: this.#fds,
    };
    this.#fds = [];
    this.#payload = undefined;
    this.#hdrHave = 0;
    onMessage(m);
  }
}

/** One message: header (version 1, `flags` added) and payload. */
export function encodeMessage(request: number, flags: number, payload?: Buffer): Buffer {
  const len = payload?.length ?? 0;
  const b = Buffer.alloc(HDR_LEN + len);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(VERSION | flags, 4);
  b.writeUInt32LE(len, 8);
  payload?.copy(b, HDR_LEN);
  return b;
}

/** A reply carrying a u64 (GET_FEATURES, REPLY_ACK, ...). */
export function encodeU64Reply(request: number, value: number | bigint): Buffer {
  const p = Buffer.alloc(8);
  p.writeBigUInt64LE(BigInt(value));
  return encodeMessage(request, FLAG_REPLY, p);
}

/** True when the front-end asked for a REPLY_ACK. */
export function needsReply(m: Message): boolean {
  return (m.flags & FLAG_NEED_REPLY) !== 0;
}

/** Payload sizes each request must have: an exact size, a list of allowed sizes, or a check. */
const SIZES: Record<number, number | number[] | ((size: number) => boolean)> = {
  [Req.GET_FEATURES]: [0, 8],
  [Req.SET_FEATURES]: 8,
  [Req.SET_OWNER]: [0, 8],
  [Req.RESET_OWNER]: [0, 8],
  [Req.SET_MEM_TABLE]: (s) => s >= 8 && (s - 8) % 32 === 0 && (s - 8) / 32 <= MAX_REGIONS,
  [Req.SET_LOG_BASE]: 16,
  [Req.SET_LOG_FD]: [0, 8],
  [Req.SET_VRING_NUM]: 8,
  [Req.SET_VRING_ADDR]: 40,
  [Req.SET_VRING_BASE]: 8,
  [Req.GET_VRING_BASE]: 8,
  [Req.SET_VRING_KICK]: 8,
  [Req.SET_VRING_CALL]: 8,
  [Req.SET_VRING_ERR]: 8,
  [Req.GET_PROTOCOL_FEATURES]: [0, 8],
  [Req.SET_PROTOCOL_FEATURES]: 8,
  [Req.GET_QUEUE_NUM]: [0, 8],
  [Req.SET_VRING_ENABLE]: 8,
  [Req.SEND_RARP]: 8,
  [Req.NET_SET_MTU]: 8,
};

/** fds each request carries: exact count, or a function of the payload. */
function expectedFds(m: Message): number {
  switch (m.request) {
    case Req.SET_MEM_TABLE:
      return m.payload.readUInt32LE(0);
    case Req.SET_LOG_BASE:
    case Req.SET_LOG_FD:
      return 1;
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR:
      return m.payload.readUInt32LE(0) & VRING_NOFD_MASK ? 0 : 1;
    default:
      return 0;
  }
}

/**
 * Checks a request's payload size and fd count against the spec. Returns the
 * error for an unknown request, a wrong size or wrong fds; null when fine.
 */
export function validateMessage(m: Message): Error | null {
  const rule = SIZES[m.request];
  const size = m.payload.length;
  if (rule === undefined) return new VhostProtocolError(`unknown request ${m.request} (payload ${size} bytes)`);
  const ok = typeof rule === 'number' ? size === rule : Array.isArray(rule) ? rule.includes(size) : rule(size);
  if (!ok) {
    const want = typeof rule === 'number' ? `${rule}` : Array.isArray(rule) ? rule.join(' or ') : 'another size';
    return new VhostProtocolError(`${reqName(m.request)}: payload of ${size} bytes, expected ${want}`);
  }
  if (m.request === Req.SET_MEM_TABLE && m.payload.readUInt32LE(0) !== (size - 8) / 32)
    return new VhostProtocolError(
      `SET_MEM_TABLE: ${m.payload.readUInt32LE(0)} regions announced but ${(size - 8) / 32} sent`,
    );
  const fds = expectedFds(m);
  if (m.fds.length !== fds)
    return new VhostFdError(`${reqName(m.request)}: ${m.fds.length} fds received, expected ${fds}`);
  return null;
}
