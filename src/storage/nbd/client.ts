/**
 * A small NBD client: fixed newstyle handshake (structured replies,
 * base:allocation, NBD_OPT_GO; client-handshake.ts) and every transmission
 * command, with many requests in flight on one connection. Used by the remote backend and by
 * the tests as a real peer.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { type Address, formatAddress } from '../../util/address.js';
import type { Extent } from '../backend.js';
import { NbdClientError } from '../errors.js';
import { clientError, clientHandshake, Reader } from './client-handshake.js';
import {
  CMD,
  CMD_FLAG,
  NBD_ERR,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TF,
} from './constants.js';

export interface NbdClientOptions {
  /** Server address (tcp or unix). */
  address: Address;
  /** Export name; default '' (the default export). */
  export?: string;
  /** Negotiate structured replies; default true. */
  structuredReplies?: boolean;
  /** Select base:allocation (needs structured replies); default true. */
  baseAllocation?: boolean;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  data: Buffer | undefined;
  extents: Extent[] | undefined;
  error: number;
  message: string;
  resolve: (p: Pending) => void;
  reject: (e: Error) => void;
}

export class NbdClient {
  /** Export size in bytes. */
  size = 0;
  /** Transmission flags the server sent. */
  flags = 0;
  /** Structured replies are in use. */
  structured = false;
  /** Context id of base:allocation, when selected. */
  metaContextId: number | undefined;
  /** Block size constraints from NBD_INFO_BLOCK_SIZE (min, preferred, max payload), when sent. */
  blockSize: { min: number; preferred: number; max: number } | undefined;

  #socket: Socket;
  #reader = new Reader();
  #pending = new Map<bigint, Pending>();
  #next = 1n;
  #closed = false;
  #where: string;

  private constructor(socket: Socket, where: string) {
    this.#socket = socket;
    this.#where = where;
    socket.on('data', (b: Buffer) => this.#reader.push(b));
    socket.on('error', (err) => this.#fail(err.message));
    socket.on('close', () => this.#fail('connection closed'));
  }

  /** Connects and negotiates; rejects with ERR_NBD_CLIENT and the server's reason. */
  static async connect(o: NbdClientOptions): Promise<NbdClient> {
    const where = formatAddress(o.address);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const a = o.address;
      const s = a.type === 'unix' ? netConnect(a.path) : netConnect(a.port, a.host);
      s.once('connect', () => resolve(s));
      s.once('error', (err) => reject(clientError(`cannot connect to NBD server ${where}: ${err.message}`)));
    });
    socket.setNoDelay(true);
    const c = new NbdClient(socket, where);
    try {
      const n = await clientHandshake(socket, c.#reader, where, {
        name: o.export ?? '',
        structured: o.structuredReplies ?? true,
        baseAllocation: o.baseAllocation ?? true,
      });
      c.size = n.size;
      c.flags = n.flags;
      c.structured = n.structured;
      c.metaContextId = n.metaContextId;
      c.blockSize = n.blockSize;
    } catch (err) {
      socket.destroy();
      throw err;
    }
    void c.#replyLoop();
    return c;
  }

  /** The connection is gone (closed by either side or failed); requests reject at once. */
  get closed(): boolean {
    return this.#closed;
  }

  get readOnly(): boolean {
    return (this.flags & TF.READ_ONLY) !== 0;
  }

  /** Has flag bit `f` (a TF.* value). */
  can(f: number): boolean {
    return (this.flags & f) !== 0;
  }

  async read(offset: number, length: number, flags = 0): Promise<Buffer> {
    const p = await this.#request(CMD.READ, flags, offset, length);
    return p.data ?? Buffer.alloc(0);
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<void> {
    await this.#request(CMD.WRITE, flags, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.#request(CMD.FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, flags = 0): Promise<void> {
    await this.#request(CMD.TRIM, flags, offset, length);
  }

  async writeZeroes(offset: number, length: number, flags = 0): Promise<void> {
    await this.#request(CMD.WRITE_ZEROES, flags, offset, length);
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.#request(CMD.CACHE, 0, offset, length);
  }

  /** base:allocation extents from `offset` (REQ_ONE when `reqOne`). */
  async blockStatus(offset: number, length: number, reqOne = false): Promise<Extent[]> {
    const p = await this.#request(CMD.BLOCK_STATUS, reqOne ? CMD_FLAG.REQ_ONE : 0, offset, length);
    return p.extents ?? [];
  }

  /** Sends NBD_CMD_DISC after in-flight requests are answered, and closes. */
  async disconnect(): Promise<void> {
    if (this.#closed) return;
    await Promise.allSettled([...this.#pending.values()].map((p) => new Promise((r) => waitFor(p, r))));
    const h = requestHeader(CMD.DISC, 0, 0n, 0, 0);
    this.#closed = true;
    await new Promise<void>((resolve) => {
      this.#socket.end(h, () => resolve());
      this.#socket.once('close', () => resolve());
    });
    this.#socket.destroy();
  }

  /** Closes at once; pending requests fail. */
  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
    this.#fail('client destroyed');
  }

  /** Writes raw bytes (tests use this to send malformed requests). */
  writeRaw(b: Buffer): void {
    this.#socket.write(b);
  }

  #request(type: number, flags: number, offset: number, length: number, data?: Buffer): Promise<Pending> {
    if (this.#closed) return Promise.reject(clientError(`NBD connection to ${this.#where} is closed`));
    const cookie = this.#next++;
    return new Promise<Pending>((resolve, reject) => {
      this.#pending.set(cookie, {
        type,
        offset,
        length,
        data: undefined,
        extents: undefined,
        error: 0,
        message: '',
        resolve,
        reject,
      });
      this.#socket.cork();
      this.#socket.write(requestHeader(type, flags, cookie, offset, length));
      if (data) this.#socket.write(data);
      this.#socket.uncork();
    });
  }

  async #replyLoop(): Promise<void> {
    const r = this.#reader;
    try {
      for (;;) {
        const magic = (await r.read(4)).readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          const h = await r.read(12);
          const error = h.readUInt32BE(0);
          const p = this.#take(h.readBigUInt64BE(4));
          if (error === 0 && p.type === CMD.READ) p.data = Buffer.from(await r.read(p.length));
          this.#complete(p, error, '');
        } else if (magic === STRUCTURED_REPLY_MAGIC) {
          await this.#chunk(await r.read(16));
        } else throw clientError(`bad reply magic 0x${magic.toString(16)} from ${this.#where}`);
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err.message : String(err));
    }
  }

  async #chunk(h: Buffer): Promise<void> {
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const cookie = h.readBigUInt64BE(4);
    const len = h.readUInt32BE(12);
    const p = this.#pending.get(cookie);
    if (!p) throw clientError(`reply for unknown cookie ${cookie} from ${this.#where}`);
    const body = len ? await this.#reader.read(len) : Buffer.alloc(0);
    if (type === REPLY_TYPE.OFFSET_DATA || type === REPLY_TYPE.OFFSET_HOLE) {
      const off = Number(body.readBigUInt64BE(0));
      if (!p.data) p.data = Buffer.alloc(p.length);
      if (off < p.offset) throw clientError(`read chunk at ${off} before the requested offset ${p.offset}`);
      if (type === REPLY_TYPE.OFFSET_DATA) body.copy(p.data, off - p.offset, 8);
      else p.data.fill(0, off - p.offset, off - p.offset + body.readUInt32BE(8));
    } else if (type === REPLY_TYPE.BLOCK_STATUS) {
      const ext: Extent[] = [];
      for (let i = 4; i + 8 <= body.length; i += 8)
        ext.push({ length: body.readUInt32BE(i), flags: body.readUInt32BE(i + 4) });
      p.extents = ext;
    } else if (type & 0x8000) {
      p.error = body.readUInt32BE(0) || NBD_ERR.EIO;
      p.message = body.toString('utf8', 6, 6 + body.readUInt16BE(4));
    }
    if (flags & REPLY_FLAG_DONE) {
      this.#pending.delete(cookie);
      this.#complete(p, p.error, p.message);
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (!p) throw clientError(`reply for unknown cookie ${cookie} from ${this.#where}`);
    this.#pending.delete(cookie);
    return p;
  }

  #complete(p: Pending, error: number, message: string): void {
    if (error === 0) p.resolve(p);
    else
      p.reject(
        new NbdClientError(
          'ERR_NBD_REMOTE',
          error,
          `NBD server ${this.#where} answered error ${error}${message ? `: ${message}` : ''}`,
        ),
      );
  }

  #fail(reason: string): void {
    this.#closed = true;
    this.#reader.end(clientError(`NBD connection to ${this.#where} failed: ${reason}`));
    const err = clientError(`NBD connection to ${this.#where} lost with requests in flight: ${reason}`);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

function requestHeader(type: number, flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

function waitFor(p: Pending, done: (v: unknown) => void): void {
  const { resolve, reject } = p;
  p.resolve = (v) => {
    resolve(v);
    done(v);
  };
  p.reject = (e) => {
    reject(e);
    done(e);
  };
}
