/**
 * A vhost-user front-end written for tests and benchmarks: it plays QEMU's
 * part (memfd guest memory, the set-up messages, eventfd kicks and calls)
 * and the guest driver's part (descriptors, available and used rings) over
 * the real control socket. Besides the well-behaved driver it exposes the raw
 * pieces (descriptors, ring indexes, arbitrary messages), so tests can break
 * each rule on purpose.
 *
 * This module is the guest driver's side; the QEMU side (memory, control
 * socket, negotiation) is vhost-frontend-control.ts.
 *
 * Memory layout (one region, guest-physical GPA_BASE, front-end virtual
 * UVA_BASE): ring i at i * RING_STRIDE (descriptors, then the available ring,
 * then the used ring at the next 4 KiB), buffers after the rings: for each
 * queue pair its receive buffers (`rxBufSize` bytes each), then its transmit
 * buffers (`bufSize` bytes each).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { NET_HDR_LEN, Req } from '../../src/net/vhost/constants.js';
import { FrontendControl, type FrontendOptions, GPA_BASE, type Ring, UVA_BASE } from './vhost-frontend-control.js';

export { DEFAULT_FEATURES, GPA_BASE, UVA_BASE } from './vhost-frontend-control.js';

export class TestFrontend extends FrontendControl {
  #txNext: number[] = [];

  /** The whole QEMU start-up sequence, then posts every receive buffer. Rejects when a step fails. */
  async setup(opts: FrontendOptions = {}): Promise<{ features: bigint; protocolFeatures: bigint }> {
    const { features, protocolFeatures } = await this.negotiate(opts);
    await this.ack(Req.SET_MEM_TABLE, this.memTable(), [this.memfd]);
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
    return this.bufBase + pair * this.num * (this.rxBufSize + this.bufSize) + i * this.rxBufSize;
  }
  txBuf(i: number, pair = 0): number {
    return (
      this.bufBase + pair * this.num * (this.rxBufSize + this.bufSize) + this.num * this.rxBufSize + i * this.bufSize
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
    const used = this.u16[(r.used + 2) >> 1] as number;
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
    return this.u16[((this.rings[1] as Ring).used + 2) >> 1] as number;
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
    const idx = this.u16[(r.used + 2) >> 1] as number;
    let reposted = false;
    let parts: Buffer[] = [];
    let left = 0;
    while (r.lastUsed !== idx) {
      const e = r.used + 4 + 8 * (r.lastUsed % this.num);
      const id = this.mem.readUInt32LE(e);
      const len = this.mem.readUInt32LE(e + 4);
      const off = this.rxBuf(id, pair);
      if (left === 0) {
        left = this.mrg ? this.mem.readUInt16LE(off + 10) : 1;
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
    const used = this.u16[(r.used + 2) >> 1] as number;
    const free = this.num - ((r.availIdx - used) & 0xffff);
    if (free === 0) return 0;
    const old = r.availIdx;
    const u16 = this.u16;
    const ring = (r.avail + 4) >> 1;
    for (let k = 0; k < free; k++) {
      const slot = r.availIdx % this.num;
      u16[ring + slot] = slot;
      r.availIdx = (r.availIdx + 1) & 0xffff;
    }
    u16[ring + this.num] = (used + ((3 * this.num) >> 2)) & 0xffff; // used_event
    Atomics.store(this.u16, (r.avail + 2) >> 1, r.availIdx);
    const event = this.u16[(r.used + 4 + 8 * this.num) >> 1] as number;
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
    const idx = this.u16[(r.used + 2) >> 1] as number;
    let frames = 0;
    let bytes = 0;
    const old = r.availIdx;
    const mrg = this.mrg;
    // Aligned views (the used ring is 4-aligned, buffers 64-aligned): no bounds-checked Buffer reads per entry.
    const u16 = this.u16;
    const u32 = this.u32;
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
    Atomics.store(this.u16, (r.avail + 2) >> 1, r.availIdx);
    if (r.availIdx !== old) {
      const event = this.u16[(r.used + 4 + 8 * this.num) >> 1] as number;
      if (((r.availIdx - event - 1) & 0xffff) < ((r.availIdx - old) & 0xffff)) this.kick(0);
    }
    return { frames, bytes };
  }

  /** Used entries still owed to the frame drainRx is in the middle of (MRG_RXBUF). */
  #rxLeft = 0;
}
