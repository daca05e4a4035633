/**
 * The QEMU side of the test vhost-user front-end (vhost-frontend.ts): the
 * memfd guest memory and its layout, the control socket, messages and their
 * replies, feature negotiation, eventfd calls, and teardown. The guest
 * driver's side (descriptors, rings, frames) is {@link TestFrontend}.
 */
import { closeSync, ftruncateSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { type NativeAddon, native } from '../../src/native/index.js';
import { bit, F, FLAG_NEED_REPLY, ProtoF, Req } from '../../src/net/vhost/constants.js';
import { encodeMessage, type Message, MessageReader } from '../../src/net/vhost/message.js';

export const GPA_BASE = 0x4000_0000;
export const UVA_BASE = 0x7f12_3400_0000;
const RING_STRIDE = 0x40000;

export interface FrontendOptions {
  /** Queue size of both rings; default 256. */
  queueSize?: number;
  /** Size of each buffer in bytes; default 2048 (room for a 1514-byte frame and its header). */
  bufSize?: number;
  /** Size of each receive buffer in bytes (with MRG_RXBUF a frame may fill several); default `bufSize`. */
  rxBufSize?: number;
  /** Features to ask for; default VERSION_1 + PROTOCOL_FEATURES + EVENT_IDX. */
  features?: number;
  /** Protocol features to ask for; default REPLY_ACK. */
  protocolFeatures?: number;
  /** Queue pairs to set up (rings 2p receive, 2p+1 transmit); default 1. */
  pairs?: number;
  /** Ask for used-ring dirty logging in SET_VRING_ADDR (flag bit 0, log = the used ring's guest address). */
  logRings?: boolean;
  /** Seal the memory file against shrinking and growing, as QEMU's memfd backend does by default; default false. */
  sealed?: boolean;
}

export const DEFAULT_FEATURES = bit(F.VERSION_1) + bit(F.PROTOCOL_FEATURES) + bit(F.RING_EVENT_IDX);

export interface Ring {
  desc: number;
  avail: number;
  used: number;
  kick: number;
  call: number;
  /** Next avail index we publish. */
  availIdx: number;
  /** Used entries consumed. */
  lastUsed: number;
}

/** A front-end's memory, control connection and ring layout; {@link TestFrontend} drives the rings. */
export class FrontendControl {
  readonly n: NativeAddon;
  readonly fd: number;
  readonly mem: Buffer;
  readonly memBytes: number;
  readonly num: number;
  readonly bufSize: number;
  readonly rxBufSize: number;
  readonly rings: Ring[] = [];
  /** MRG_RXBUF asked for in {@link negotiate}: a received frame may span several buffers. */
  protected mrg = false;
  /** The memory as u16s: indexes the back-end changes are read with one load (Buffer reads bytes and can tear). */
  protected readonly u16: Uint16Array;
  protected readonly u32: Uint32Array;
  protected readonly memfd: number;
  protected readonly ab: ArrayBuffer;
  readonly #reader = new MessageReader(true);
  readonly #recv = Buffer.alloc(4096);
  readonly #replies: Message[] = [];
  #eof = false;
  protected readonly bufBase: number;
  readonly pairs: number;

  /** @param path the back-end's socket to connect to, or `{ fd }`: a connection already made (QEMU as the server). */
  constructor(path: string | { fd: number }, opts: FrontendOptions = {}) {
    const n = native();
    this.n = n;
    this.num = opts.queueSize ?? 256;
    this.bufSize = opts.bufSize ?? 2048;
    this.rxBufSize = opts.rxBufSize ?? this.bufSize;
    this.pairs = opts.pairs ?? 1;
    this.bufBase = 2 * this.pairs * RING_STRIDE;
    this.memBytes = this.bufBase + this.pairs * this.num * (this.rxBufSize + this.bufSize);
    this.memfd = n.memfdCreate('vhost-test-guest', opts.sealed === true);
    ftruncateSync(this.memfd, this.memBytes);
    if (opts.sealed) n.addSeals(this.memfd, n.F_SEAL_SHRINK | n.F_SEAL_GROW);
    this.ab = n.mmap(this.memfd, this.memBytes, 0, true);
    this.mem = Buffer.from(this.ab);
    this.u16 = new Uint16Array(this.ab);
    this.u32 = new Uint32Array(this.ab);
    if (typeof path === 'string') {
      this.fd = n.socket(n.SOCK_STREAM);
      try {
        n.connect(this.fd, path);
      } catch (err) {
        // Nothing of this front-end outlives a failed connect (EAGAIN: the listen backlog is full; try again).
        closeSync(this.fd);
        closeSync(this.memfd);
        n.munmap(this.ab);
        throw err;
      }
    } else {
      this.fd = path.fd;
    }
    for (let i = 0; i < 2 * this.pairs; i++) {
      const base = i * RING_STRIDE;
      this.rings.push({
        desc: base,
        avail: base + 16 * this.num,
        used: base + ((16 * this.num + 6 + 2 * this.num + 4095) & ~4095),
        kick: n.eventfd(0, false),
        call: n.eventfd(0, false),
        availIdx: 0,
        lastUsed: 0,
      });
    }
  }

  /**
   * Shrinks the memory file to `bytes` under the back-end (what a front-end
   * that did not seal it can do). Our own accesses beyond the new end then
   * land in private pages (the addon's guard), so the back-end sees none of them.
   */
  truncateMemory(bytes: number): void {
    ftruncateSync(this.memfd, bytes);
  }

  /** Sends one request (with `fds`); `needReply` sets the REPLY_ACK flag. */
  send(request: number, payload?: Buffer, fds: number[] = [], needReply = false): void {
    const b = encodeMessage(request, needReply ? FLAG_NEED_REPLY : 0, payload);
    this.n.sendFds(this.fd, b, fds);
  }

  /** Sends raw bytes (for broken messages). */
  sendRaw(b: Buffer, fds: number[] = []): void {
    this.n.sendFds(this.fd, b, fds);
  }

  /** Waits for the next reply; rejects when the back-end closed the connection or after `timeoutMs`. */
  async reply(timeoutMs = 5000): Promise<Message> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      this.#pump();
      const m = this.#replies.shift();
      if (m) return m;
      if (this.#eof) throw new Error('the back-end closed the connection');
      if (Date.now() > until) throw new Error(`no reply within ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  /** Resolves true once the back-end has closed the connection, false after `timeoutMs`. */
  async closedByPeer(timeoutMs = 5000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      this.#pump();
      if (this.#eof) return true;
      await sleep(5);
    }
    return false;
  }

  #pump(): void {
    for (;;) {
      let r: ReturnType<NativeAddon['recvFds']>;
      try {
        r = this.n.recvFds(this.fd, this.#recv);
      } catch {
        this.#eof = true;
        return;
      }
      if (r === null) return;
      if (r.bytes === 0) {
        this.#eof = true;
        return;
      }
      const err = this.#reader.feed(this.#recv, 0, r.bytes, r.fds, (m) => this.#replies.push(m));
      if (err) throw err;
    }
  }

  /** A u64 payload. */
  static u64(v: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return b;
  }

  /** A vring state payload (index, num). */
  static state(index: number, num: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(index, 0);
    b.writeUInt32LE(num, 4);
    return b;
  }

  /** SET_MEM_TABLE payload for our one region (or the given ones). */
  memTable(regions = [{ gpa: GPA_BASE, size: this.memBytes, uva: UVA_BASE, offset: 0 }]): Buffer {
    const b = Buffer.alloc(8 + 32 * regions.length);
    b.writeUInt32LE(regions.length, 0);
    regions.forEach((r, i) => {
      b.writeBigUInt64LE(BigInt(r.gpa), 8 + 32 * i);
      b.writeBigUInt64LE(BigInt(r.size), 16 + 32 * i);
      b.writeBigUInt64LE(BigInt(r.uva), 24 + 32 * i);
      b.writeBigUInt64LE(BigInt(r.offset), 32 + 32 * i);
    });
    return b;
  }

  /** The start-up messages before SET_MEM_TABLE: features, protocol features (REPLY_ACK by default), owner. */
  async negotiate(opts: FrontendOptions = {}): Promise<{ features: bigint; protocolFeatures: bigint }> {
    this.send(Req.GET_FEATURES);
    const features = (await this.reply()).payload.readBigUInt64LE(0);
    this.send(Req.GET_PROTOCOL_FEATURES);
    const protocolFeatures = (await this.reply()).payload.readBigUInt64LE(0);
    this.send(Req.SET_PROTOCOL_FEATURES, FrontendControl.u64(opts.protocolFeatures ?? bit(ProtoF.REPLY_ACK)));
    this.send(Req.SET_OWNER);
    const want = opts.features ?? DEFAULT_FEATURES;
    this.mrg = Math.floor(want / 2 ** F.NET_MRG_RXBUF) % 2 === 1;
    this.send(Req.SET_FEATURES, FrontendControl.u64(want));
    return { features, protocolFeatures };
  }

  /** SET_MEM_TABLE with the given table and fds, waiting for the REPLY_ACK; rejects when it is refused. */
  async memTableWith(table: Buffer, fds: number[]): Promise<void> {
    await this.ack(Req.SET_MEM_TABLE, table, fds);
  }

  /** Sends a request with need_reply and waits for a zero REPLY_ACK. */
  async ack(request: number, payload?: Buffer, fds: number[] = []): Promise<void> {
    this.send(request, payload, fds, true);
    const m = await this.reply();
    if (m.request !== request || m.payload.readBigUInt64LE(0) !== 0n)
      throw new Error(`request ${request} was not acked (reply ${m.request}, ${m.payload.toString('hex')})`);
  }

  /** Calls `cb` whenever the back-end interrupts ring `ring`; returns a stop function. */
  onCall(ring: number, cb: () => void): () => void {
    const fd = (this.rings[ring] as Ring).call;
    const p = new this.n.Poller(fd, () => {
      this.n.eventfdRead(fd);
      cb();
    });
    p.start(this.n.READABLE);
    return () => p.close();
  }

  /** Closes the connection and frees the memory. Idempotent. */
  close(): void {
    if (this.rings.length === 0) return;
    for (const r of this.rings) {
      closeSync(r.kick);
      closeSync(r.call);
    }
    this.rings.length = 0;
    closeSync(this.fd);
    closeSync(this.memfd);
    this.n.munmap(this.ab);
  }
}
