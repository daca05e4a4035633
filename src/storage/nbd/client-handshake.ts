/**
 * The client side of the fixed newstyle handshake (proto.md "Newstyle
 * negotiation"): greeting, client flags, STRUCTURED_REPLY, SET_META_CONTEXT
 * base:allocation and NBD_OPT_GO, over a {@link Reader} of the socket's
 * bytes. Used by NbdClient (client.ts) before its transmission phase.
 */
import type { Socket } from 'node:net';
import { NbdClientError } from '../errors.js';
import {
  BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBD_ERR,
  NBDMAGIC,
  OPT,
  OPT_REPLY_MAGIC,
  REP,
} from './constants.js';

/** What the client's handshake settled. */
export interface ClientNegotiated {
  /** Export size in bytes. */
  size: number;
  /** Transmission flags the server sent. */
  flags: number;
  /** Structured replies are in use. */
  structured: boolean;
  /** Context id of base:allocation, when selected. */
  metaContextId: number | undefined;
  /** Block size constraints from NBD_INFO_BLOCK_SIZE (min, preferred, max payload), when sent. */
  blockSize: { min: number; preferred: number; max: number } | undefined;
}

/** Byte FIFO with awaitable exact reads. */
export class Reader {
  #chunks: Buffer[] = [];
  #len = 0;
  #wait: (() => void) | undefined;
  #ended: Error | undefined;

  push(b: Buffer): void {
    this.#chunks.push(b);
    this.#len += b.length;
    this.#wake();
  }

  end(err: Error): void {
    this.#ended ??= err;
    this.#wake();
  }

  async read(n: number): Promise<Buffer> {
    while (this.#len < n) {
      if (this.#ended) throw this.#ended;
      await new Promise<void>((r) => (this.#wait = r));
    }
    const all = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#chunks = rest.length ? [rest] : [];
    this.#len = rest.length;
    return out;
  }

  #wake(): void {
    const w = this.#wait;
    this.#wait = undefined;
    w?.();
  }
}

/**
 * Negotiates export `o.name` on `socket`, whose bytes arrive in `r`; asks for
 * structured replies and base:allocation when `o` says so. Rejects with
 * ERR_NBD_CLIENT and the server's reason.
 */
export async function clientHandshake(
  socket: Socket,
  r: Reader,
  where: string,
  o: { name: string; structured: boolean; baseAllocation: boolean },
): Promise<ClientNegotiated> {
  const { name } = o;
  const n: ClientNegotiated = { size: 0, flags: 0, structured: false, metaContextId: undefined, blockSize: undefined };
  const option = (opt: number, data: Buffer) => sendOption(socket, r, where, opt, data);
  const g = await r.read(18);
  if (g.readBigUInt64BE(0) !== NBDMAGIC || g.readBigUInt64BE(8) !== IHAVEOPT)
    throw clientError(`${where} is not a newstyle NBD server`);
  const hflags = g.readUInt16BE(16);
  if (!(hflags & FLAG_FIXED_NEWSTYLE)) throw clientError(`${where} does not support fixed newstyle`);
  const cf = Buffer.alloc(4);
  cf.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0));
  socket.write(cf);
  if (o.structured) {
    const [rep] = await option(OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    n.structured = rep?.type === REP.ACK;
  }
  if (n.structured && o.baseAllocation) {
    const q = Buffer.from(BASE_ALLOCATION);
    const nb = Buffer.from(name);
    const d = Buffer.alloc(4 + nb.length + 4 + 4 + q.length);
    d.writeUInt32BE(nb.length, 0);
    nb.copy(d, 4);
    d.writeUInt32BE(1, 4 + nb.length);
    d.writeUInt32BE(q.length, 8 + nb.length);
    q.copy(d, 12 + nb.length);
    for (const rep of await option(OPT.SET_META_CONTEXT, d))
      if (rep.type === REP.META_CONTEXT) n.metaContextId = rep.data.readUInt32BE(0);
  }
  const nb = Buffer.from(name);
  const d = Buffer.alloc(4 + nb.length + 2 + 4);
  d.writeUInt32BE(nb.length, 0);
  nb.copy(d, 4);
  d.writeUInt16BE(2, 4 + nb.length);
  d.writeUInt16BE(INFO.BLOCK_SIZE, 6 + nb.length);
  d.writeUInt16BE(INFO.NAME, 8 + nb.length);
  const reps = await option(OPT.GO, d);
  const last = reps[reps.length - 1];
  if (last?.type !== REP.ACK)
    throw clientError(
      `NBD server ${where} refused export "${name}" (reply 0x${last?.type.toString(16)}${last?.data.length ? `: ${last.data.toString()}` : ''})`,
    );
  for (const rep of reps) {
    if (rep.type !== REP.INFO) continue;
    const t = rep.data.readUInt16BE(0);
    if (t === INFO.EXPORT) {
      n.size = Number(rep.data.readBigUInt64BE(2));
      n.flags = rep.data.readUInt16BE(10);
    } else if (t === INFO.BLOCK_SIZE)
      n.blockSize = {
        min: rep.data.readUInt32BE(2),
        preferred: rep.data.readUInt32BE(6),
        max: rep.data.readUInt32BE(10),
      };
  }
  return n;
}

/** Sends one option and collects replies until a final one (ACK or error). */
async function sendOption(
  socket: Socket,
  reader: Reader,
  where: string,
  opt: number,
  data: Buffer,
): Promise<{ type: number; data: Buffer }[]> {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  socket.write(Buffer.concat([h, data]));
  const out: { type: number; data: Buffer }[] = [];
  for (;;) {
    const rh = await reader.read(20);
    if (rh.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw clientError(`bad option reply magic from ${where}`);
    const type = rh.readUInt32BE(12);
    const len = rh.readUInt32BE(16);
    const body = len ? Buffer.from(await reader.read(len)) : Buffer.alloc(0);
    out.push({ type, data: body });
    if (type === REP.ACK || type >= 0x80000000) return out;
  }
}

/** An ERR_NBD_CLIENT error (EIO) with a message for people. */
export function clientError(message: string): NbdClientError {
  return new NbdClientError('ERR_NBD_CLIENT', NBD_ERR.EIO, message);
}
