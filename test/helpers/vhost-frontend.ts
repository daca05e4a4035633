/**
 * A vhost-user front-end written for tests and benchmarks: it plays QEMU's
 * part (memfd guest memory, the set-up messages, eventfd kicks and calls)
 * and the guest driver's part (descriptors, available and used rings) over
 * the real control socket. Besides the well-behaved driver it exposes the raw
 * pieces (descriptors, ring indexes, arbitrary messages), so tests can break
 * each rule on purpose.
 *
 * Memory layout (one region, guest-physical GPA_BASE, front-end virtual
 * UVA_BASE): ring i at i * RING_STRIDE (descriptors, then the available ring,
 * then the used ring at the next 4 KiB), buffers after the rings: for each
 * queue pair its receive buffers (`rxBufSize` bytes each), then its transmit
 * buffers (`bufSize` bytes each).
 */
import { closeSync, ftruncateSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { type NativeAddon, native } from '../../src/native/index.js';
import { bit, F, FLAG_NEED_REPLY, NET_HDR_LEN, ProtoF, Req } from '../../src/net/vhost/constants.js';
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

interface Ring {
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

export class TestFrontend {
  readonly n: NativeAddon;
  readonly fd: number;
  readonly mem: Buffer;
  readonly memBytes: number;
  readonly num: number;
  readonly bufSize: number;
  readonly rxBufSize: number;
  readonly rings: Ring[] = [];
  /** The memory as u16s: indexes the back-end changes are read with one load (Buffer reads bytes and can tear). */
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #memfd: number;
  readonly #ab: ArrayBuffer;
  readonly #reader = new MessageReader(true);
  readonly #recv = Buffer.alloc(4096);
  readonly #replies: Message[] = [];
  #eof = false;
  #txNext: number[] = [];
  readonly #bufBase: number;
  readonly pairs: number;

  /** @param path the back-end's socket to connect to, or `{ fd }`: a connection already made (QEMU as the server). */
  constructor(path: string | { fd: number }, opts: FrontendOptions = {}) {
    const n = native();
    this.n = n;
    this.num = opts.queueSize ?? 256;
    this.bufSize = opts.bufSize ?? 2048;
    this.rxBufSize = opts.rxBufSize ?? this.bufSize;
    this.pairs = opts.pairs ?? 1;
    this.#bufBase = 2 * this.pairs * RING_STRIDE;
    this.memBytes = this.#bufBase + this.pairs * this.num * (this.rxBufSize + this.bufSize);
    this.#memfd = n.memfdCreate('vhost-test-guest', opts.sealed === true);
    ftruncateSync(this.#memfd, this.memBytes);
    if (opts.sealed) n.addSeals(this.#memfd, n.F_SEAL_SHRINK | n.F_SEAL_GROW);
    this.#ab = n.mmap(this.#memfd, this.memBytes, 0, true);
    this.mem = Buffer.from(this.#ab);
    this.#u16 = new Uint16Array(this.#ab);
    this.#u32 = new Uint32Array(this.#ab);
    if (typeof path === 'string') {
      this.fd = n.socket(n.SOCK_STREAM);
      try {
        n.connect(this.fd, path);
      } catch (err) {
        // Nothing of this front-end outlives a failed connect (EAGAIN: the listen backlog is full; try again).
        closeSync(this.fd);
        closeSync(this.#memfd);
        n.munmap(this.#ab);
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
    ftruncateSync(this.#memfd, bytes);
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

  /** The whole QEMU start-up sequence, then posts every receive buffer. Rejects when a step fails. */
  #mrg = false;

  async setup(opts: FrontendOptions = {}): Promise<{ features: bigint; protocolFeatures: bigint }> {
    const { features, protocolFeatures } = await this.negotiate(opts);
    await this.ack(Req.SET_MEM_TABLE, this.memTable(), [this.#memfd]);
    for (let i = 0; i < 2 * this.pairs; i++) {
      const r = this.rings[i] as Ring;
      this.send(Req.SET_VRING_NUM, TestFrontend.state(i, this.num));
      this.send(Req.SET_VRING_BASE, TestFrontend.state(i, 0));
      const a = Buffer.alloc(40);
      a.writeUInt32LE(i, 0);
      a.writeBigUInt64LE(BigInt(UVA_BASE + r.desc), 8);
      a.writeBigUInt64LE(BigInt(UVA_BASE + r.used), 16);
      a.writeBigUInt64LE(BigInt(UVA_BASE + r.avail), 24);
      if (opts.logRings) {
        a.writeUInt32LE(1, 4);
        a.writeBigUInt64LE(BigInt(this.gpa(r.used)), 32);
      }
      this.send(Req.SET_VRING_ADDR, a);
      this.send(Req.SET_VRING_CALL, TestFrontend.u64(i), [r.call]);
      this.send(Req.SET_VRING_KICK, TestFrontend.u64(i), [r.kick]);
      await this.ack(Req.SET_VRING_ENABLE, TestFrontend.state(i, 1));
    }
    for (let p = 0; p < this.pairs; p++) this.postRx(this.num, p);
    return { features, protocolFeatures };
  }

  /** The start-up messages before SET_MEM_TABLE: features, protocol features (REPLY_ACK by default), owner. */
  async negotiate(opts: FrontendOptions = {}): Promise<{ features: bigint; protocolFeatures: bigint }> {
    this.send(Req.GET_FEATURES);
    const features = (await this.reply()).payload.readBigUInt64LE(0);
    this.send(Req.GET_PROTOCOL_FEATURES);
    const protocolFeatures = (await this.reply()).payload.readBigUInt64LE(0);
    this.send(Req.SET_PROTOCOL_FEATURES, TestFrontend.u64(opts.protocolFeatures ?? bit(ProtoF.REPLY_ACK)));
    this.send(Req.SET_OWNER);
    const want = opts.features ?? DEFAULT_FEATURES;
    this.#mrg = Math.floor(want / 2 ** F.NET_MRG_RXBUF) % 2 === 1;
    this.send(Req.SET_FEATURES, TestFrontend.u64(want));
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

  // ---- the driver's side ----

  /** Guest-physical address of memory offset `off`. */
  gpa(off: number): number {
    return GPA_BASE + off;
  }

  writeDesc(ring: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const d = (this.rings[ring] as Ring).desc + 16 * i;
    this.mem.writeBigUInt64LE(BigInt(addr), d);
    this.mem.writeUInt32LE(len, d + 8);
    this.mem.writeUInt16LE(flags, d + 12);
    this.mem.writeUInt16LE(next, d + 14);
  }

  /** Makes `head` available on `ring` (ring entry, then the index). */
  pushAvail(ring: number, head: number): void {
    const r = this.rings[ring] as Ring;
    this.mem.writeUInt16LE(head, r.avail + 4 + 2 * (r.availIdx % this.num));
    r.availIdx = (r.availIdx + 1) & 0xffff;
    this.mem.writeUInt16LE(r.availIdx, r.avail + 2);
  }

  /** Sets the available index directly (to break the rules). */
  setAvailIdx(ring: number, idx: number): void {
    (this.rings[ring] as Ring).availIdx = idx & 0xffff;
    this.mem.writeUInt16LE(idx & 0xffff, (this.rings[ring] as Ring).avail + 2);
  }

  kick(ring: number): void {
    this.n.eventfdWrite((this.rings[ring] as Ring).kick, 1);
  }

  /** Offset of receive buffer i / transmit buffer i. */
  rxBuf(i: number, pair = 0): number {
    return this.#bufBase + pair * this.num * (this.rxBufSize + this.bufSize) + i * this.rxBufSize;
  }
  txBuf(i: number, pair = 0): number {
    return (
      this.#bufBase + pair * this.num * (this.rxBufSize + this.bufSize) + this.num * this.rxBufSize + i * this.bufSize
    );
  }

  /** Posts `count` receive buffers (descriptor i = buffer i, device-writable). */
  postRx(count: number, pair = 0): void {
    for (let i = 0; i < count; i++) {
      this.writeDesc(2 * pair, i, this.gpa(this.rxBuf(i, pair)), this.rxBufSize, 2, 0);
      this.pushAvail(2 * pair, i);
    }
    this.kick(2 * pair);
  }

  /**
   * Transmits one frame: header + frame in one buffer (or split at `split`
   * bytes into two chained descriptors). `hdr`: the first bytes of the
   * virtio_net_hdr (offload fields); all zero when absent. `kick` false:
   * the frame waits in the ring until the next kick.
   */
  sendFrame(frame: Buffer, split?: number, pair = 0, hdr?: Buffer, kick = true): void {
    const ring = 2 * pair + 1;
    const r = this.rings[ring] as Ring;
    const used = this.#u16[(r.used + 2) >> 1] as number;
    if (((r.availIdx - used) & 0xffff) >= this.num / 2) throw new Error('transmit ring full');
    const slot = this.#txNext[pair] ?? 0;
    this.#txNext[pair] = (slot + 2) % this.num;
    const off = this.txBuf(slot, pair);
    this.mem.fill(0, off, off + NET_HDR_LEN);
    hdr?.copy(this.mem, off, 0, Math.min(hdr.length, NET_HDR_LEN));
    frame.copy(this.mem, off + NET_HDR_LEN);
    const total = NET_HDR_LEN + frame.length;
    if (split !== undefined && split > 0 && split < total) {
      this.writeDesc(ring, slot, this.gpa(off), split, 1, slot + 1);
      this.writeDesc(ring, slot + 1, this.gpa(off + split), total - split, 0, 0);
    } else {
      this.writeDesc(ring, slot, this.gpa(off), total, 0, 0);
    }
    this.pushAvail(ring, slot);
    if (kick) this.kick(ring);
  }

  /** Transmit buffers the back-end has returned so far. */
  txUsed(): number {
    return this.#u16[((this.rings[1] as Ring).used + 2) >> 1] as number;
  }

  /** The virtio_net_hdr of every frame {@link receive} returned, in order (12 bytes each). */
  readonly rxHeaders: Buffer[] = [];

  /**
   * Frames received since the last call (headers stripped; with MRG_RXBUF the
   * num_buffers buffers of a frame are joined); their buffers are posted again.
   */
  receive(pair = 0): Buffer[] {
    const r = this.rings[2 * pair] as Ring;
    const out: Buffer[] = [];
    const idx = this.#u16[(r.used + 2) >> 1] as number;
    let reposted = false;
    let parts: Buffer[] = [];
    let left = 0;
    while (r.lastUsed !== idx) {
      const e = r.used + 4 + 8 * (r.lastUsed % this.num);
      const id = this.mem.readUInt32LE(e);
      const len = this.mem.readUInt32LE(e + 4);
      const off = this.rxBuf(id, pair);
      if (left === 0) {
        left = this.#mrg ? this.mem.readUInt16LE(off + 10) : 1;
        this.rxHeaders.push(Buffer.from(this.mem.subarray(off, off + NET_HDR_LEN)));
        parts = [Buffer.from(this.mem.subarray(off + NET_HDR_LEN, off + len))];
      } else {
        parts.push(Buffer.from(this.mem.subarray(off, off + len)));
      }
      if (--left === 0) out.push(Buffer.concat(parts));
      r.lastUsed = (r.lastUsed + 1) & 0xffff;
      this.pushAvail(2 * pair, id);
      reposted = true;
    }
    if (left > 0) throw new Error(`a frame announced more buffers than were used (${left} missing)`);
    if (reposted) this.kick(2 * pair);
    return out;
  }

  /** Waits until at least `count` frames arrived (or `timeoutMs`); returns them all. */
  async waitFrames(count: number, timeoutMs = 5000, pair = 0): Promise<Buffer[]> {
    const got: Buffer[] = [];
    const until = Date.now() + timeoutMs;
    while (got.length < count && Date.now() < until) {
      got.push(...this.receive(pair));
      if (got.length < count) await sleep(2);
    }
    return got;
  }

  // ---- bulk traffic for benchmarks: fixed descriptor per slot, no copies per frame ----

  /** Writes `frame` (after a zero header) into every transmit buffer; descriptor i of ring 1 is buffer i. */
  fillTx(frame: Buffer): void {
    for (let i = 0; i < this.num; i++) {
      const off = this.txBuf(i);
      this.mem.fill(0, off, off + NET_HDR_LEN);
      frame.copy(this.mem, off + NET_HDR_LEN);
      this.writeDesc(1, i, this.gpa(off), NET_HDR_LEN + frame.length, 0, 0);
    }
  }

  /**
   * Makes every free transmit slot available again (the back-end completes
   * in order, so slot = index mod size), kicks only when the back-end asked
   * (EVENT_IDX avail_event), and asks for an interrupt when three quarters
   * of the ring are done (as Linux's virtqueue_enable_cb_delayed does for
   * transmit completions). Returns the frames made available.
   */
  pumpTx(): number {
    const r = this.rings[1] as Ring;
    const used = this.#u16[(r.used + 2) >> 1] as number;
    const free = this.num - ((r.availIdx - used) & 0xffff);
    if (free === 0) return 0;
    const old = r.availIdx;
    const u16 = this.#u16;
    const ring = (r.avail + 4) >> 1;
    for (let k = 0; k < free; k++) {
      const slot = r.availIdx % this.num;
      u16[ring + slot] = slot;
      r.availIdx = (r.availIdx + 1) & 0xffff;
    }
    u16[ring + this.num] = (used + ((3 * this.num) >> 2)) & 0xffff; // used_event
    Atomics.store(this.#u16, (r.avail + 2) >> 1, r.availIdx);
    const event = this.#u16[(r.used + 4 + 8 * this.num) >> 1] as number;
    if (((r.availIdx - event - 1) & 0xffff) < ((r.availIdx - old) & 0xffff)) this.kick(1);
    return free;
  }

  /**
   * Counts received frames and bytes, posts their buffers again, and asks
   * for an interrupt at the next frame. With MRG_RXBUF a frame is the
   * num_buffers used entries its first buffer's header announces (read as
   * Linux's receive_mergeable does). Every used entry is read and its buffer
   * reposted.
   */
  drainRx(): { frames: number; bytes: number } {
    const r = this.rings[0] as Ring;
    const idx = this.#u16[(r.used + 2) >> 1] as number;
    let frames = 0;
    let bytes = 0;
    const old = r.availIdx;
    const mrg = this.#mrg;
    // Aligned views (the used ring is 4-aligned, buffers 64-aligned): no bounds-checked Buffer reads per entry.
    const u16 = this.#u16;
    const u32 = this.#u32;
    const usedAt = (r.used + 4) >> 2;
    const availAt = (r.avail + 4) >> 1;
    const num = this.num;
    let left = this.#rxLeft;
    while (r.lastUsed !== idx) {
      const e = usedAt + 2 * (r.lastUsed % num);
      const id = u32[e] as number;
      const len = u32[e + 1] as number;
      if (left === 0) {
        left = mrg ? (u16[(this.rxBuf(id) + 10) >> 1] as number) : 1;
        bytes -= NET_HDR_LEN;
      }
      bytes += len;
      if (--left === 0) frames++;
      u16[availAt + (r.availIdx % num)] = id;
      r.availIdx = (r.availIdx + 1) & 0xffff;
      r.lastUsed = (r.lastUsed + 1) & 0xffff;
    }
    this.#rxLeft = left;
    u16[availAt + num] = r.lastUsed; // used_event: call me at the next frame
    Atomics.store(this.#u16, (r.avail + 2) >> 1, r.availIdx);
    if (r.availIdx !== old) {
      const event = this.#u16[(r.used + 4 + 8 * this.num) >> 1] as number;
      if (((r.availIdx - event - 1) & 0xffff) < ((r.availIdx - old) & 0xffff)) this.kick(0);
    }
    return { frames, bytes };
  }

  /** Used entries still owed to the frame drainRx is in the middle of (MRG_RXBUF). */
  #rxLeft = 0;

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
    closeSync(this.#memfd);
    this.n.munmap(this.#ab);
  }
}
