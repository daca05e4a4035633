/**
 * Receive of a vhost-user net device: frames the switch writes go straight
 * into the guest's receive buffers (queue 0, virtio 1.2 §5.1.6), one copy
 * per frame. write() copies at once when the guest has buffers; otherwise
 * the frame waits in a bounded backlog (and the port says FULL, net-flow.ts)
 * and the ring asks for a kick (EVENT_IDX avail_event) when the guest adds
 * buffers.
 *
 * Copies in batches: frames of the switch's current batch (BatchContext.src)
 * are deferred and copied in one native call at the end of the batch, and a
 * writeBatch goes into the ring in one native call; backlog frames without
 * offload metadata go in runs, one native call each. The native call takes
 * its source buffer as an argument: nothing is shared with other devices.
 */
import { FrameArena } from '../frame-arena.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import { type BatchContext, type BatchResult, countWrite, type DeferredCopies, WriteResult } from '../port.js';
import { NET_HDR_LEN } from './constants.js';
import type { NetDeviceCore } from './net-core.js';
import { RxFlow } from './net-flow.js';
import type { Virtqueue } from './virtqueue.js';

/** Header bytes kept with each backlog frame: the virtio_net_hdr without num_buffers. */
const RX_HDR = 10;
/** Frames a receive ring defers during one batch before it copies them. */
const PEND_MAX = 256;

/** Outcome of copying one frame into the receive ring. */
const Rx = { OK: 0, NO_ROOM: 1, DROPPED: 2, ERROR: 3 } as const;

export class VhostReceive implements DeferredCopies {
  readonly #d: NetDeviceCore;
  readonly #maxFrameLen: number;
  readonly #hdr = Buffer.alloc(NET_HDR_LEN);
  readonly #backlog: FrameArena;
  /** Frames deferred from the current batch: offset, length pairs in #pendSrc. */
  readonly #pend = new Uint32Array(2 * PEND_MAX);
  #pendN = 0;
  #pendSrc: Buffer | undefined;
  /** Offset, length pairs of backlog frames for rxBatch. */
  readonly #runs = new Uint32Array(2 * 256);
  /** Free receive buffers not yet promised to deferred frames. */
  #room = 0;
  #heads = new Uint16Array(0);
  #headEnd = new Uint32Array(0);
  #headCap = new Float64Array(0);
  /** Backpressure as a receiver: FULL and room announcements. */
  readonly flow: RxFlow;

  constructor(d: NetDeviceCore, maxFrameLen: number, queueLen: number, holdMs: number, onRoom: () => void) {
    this.#d = d;
    this.#maxFrameLen = maxFrameLen;
    // 4 MiB: about 60 large segments (offloads) wait for receive buffers before tail drop.
    this.#backlog = new FrameArena(queueLen, Math.max(4 << 20, 2 * maxFrameLen));
    this.flow = new RxFlow(holdMs, () => d.rxFrames, onRoom);
  }

  /** Frames waiting for receive buffers. */
  get queued(): number {
    return this.#backlog.queued;
  }

  /** Drops the backlog (no receive ring any more); returns how many frames it held. */
  clear(): number {
    const n = this.#backlog.clear();
    this.flow.drained();
    return n;
  }

  /** Port.write on ring `q`. `meta` only for frames the guest's offloads accept; it goes into the header. */
  write(q: Virtqueue, buf: Buffer, off: number, len: number, meta?: OffloadMeta, batch?: BatchContext): WriteResult {
    if (
      meta === undefined &&
      batch !== undefined &&
      buf === batch.src &&
      len <= this.#maxFrameLen &&
      this.#backlog.queued === 0 &&
      q.fast
    ) {
      if (this.#pendN === 0) {
        this.#room = q.availCount();
        if (this.#room > 0) {
          this.#pendSrc = buf;
          batch.defer(this);
        }
      }
      if (this.#room > 0 && this.#pendN < PEND_MAX) {
        const n = this.#pendN++;
        this.#pend[2 * n] = off;
        this.#pend[2 * n + 1] = len;
        this.#room--;
        return WriteResult.OK;
      }
    }
    if (this.#pendN > 0) this.flush();
    if (this.#backlog.queued > 0) return this.#enqueue(q, buf, off, len, meta);
    this.#d.offloads.writeRx(this.#hdr, 0, meta);
    const r = this.#rxFrame(q, buf, off, len);
    if (r === Rx.NO_ROOM) return this.#enqueue(q, buf, off, len, meta);
    if (r === Rx.ERROR) return WriteResult.DOWN;
    return WriteResult.OK;
  }

  /**
   * Port.writeBatch on ring `q`: as many frames as the ring takes in one
   * native call (the frames lie in `buf` for the length of the call); the
   * rest through write() one by one (backlog, FULL).
   */
  writeBatch(q: Virtqueue, buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    let i = 0;
    if (this.#backlog.queued === 0 && q.fast) {
      if (this.#pendN > 0) this.flush();
      i = q.rxBatch(buf, frames, count);
      if (i > 0) {
        this.#d.rxFrames += i;
        res.ok += i;
        for (let k = 1; k < 2 * i; k += 2) res.bytes += frames[k] as number;
        this.#d.published(q);
      }
    }
    for (; i < count; i++) {
      const len = frames[2 * i + 1] as number;
      countWrite(res, this.write(q, buf, frames[2 * i] as number, len), len);
    }
  }

  /** BatchContext: the batch ends. */
  flushBatch(): void {
    this.flush();
  }

  /**
   * Copies the deferred frames into the receive ring (one native call for
   * the simple buffers; the rest one by one, into the backlog when the
   * buffers ran out after all). A frame that finds no room then is counted
   * in rx_dropped.
   */
  flush(): void {
    const n = this.#pendN;
    if (n === 0) return;
    this.#pendN = 0;
    const src = this.#pendSrc as Buffer;
    this.#pendSrc = undefined;
    const d = this.#d;
    const q = d.rxq;
    if (d.dead || q === undefined || !q.ready) {
      d.rxDropped += n;
      return;
    }
    const pend = this.#pend;
    // Deferred frames carry no offload metadata: an all-zero header (but num_buffers).
    const done = q.rxBatch(src, pend, n);
    if (done > 0) {
      d.rxFrames += done;
      d.published(q);
    }
    for (let i = done; i < n; i++) {
      const off = pend[2 * i] as number;
      const len = pend[2 * i + 1] as number;
      let r: number = Rx.NO_ROOM;
      if (this.#backlog.queued === 0) {
        d.offloads.writeRx(this.#hdr, 0, undefined);
        r = this.#rxFrame(q, src, off, len);
        if (r === Rx.ERROR) {
          d.rxDropped += n - i - 1;
          return;
        }
      }
      if (r === Rx.NO_ROOM && this.#enqueue(q, src, off, len, undefined) === WriteResult.QUEUE_FULL) d.rxDropped++;
    }
  }

  #enqueue(q: Virtqueue, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): WriteResult {
    const at = this.#backlog.pushAfter(RX_HDR, buf, off, len);
    if (at < 0) return WriteResult.QUEUE_FULL;
    this.#d.offloads.writeRx(this.#backlog.buf, at, meta);
    q.armKick();
    // The guest may have added buffers before it saw avail_event: look again next turn.
    this.#d.schedule();
    return this.flow.queued();
  }

  /** Copies backlog frames into the ring while it has buffers; an empty backlog announces room. */
  drain(q: Virtqueue): void {
    const b = this.#backlog;
    let i = b.head;
    // Runs of plain frames go in one native call each.
    if (q.fast && i < b.count) i = this.#drainPlain(q, i);
    for (; i < b.count; i++) {
      const at = b.offs[i] as number;
      b.buf.copy(this.#hdr, 0, at, at + RX_HDR);
      const r = this.#rxFrame(q, b.buf, at + RX_HDR, (b.lens[i] as number) - RX_HDR);
      if (r === Rx.NO_ROOM) break;
      if (r === Rx.ERROR) return;
    }
    // Waiting for buffers: the guest's next post kicks us (a post since the last look: try again next turn).
    if (b.advance(i)) this.flow.drained();
    else if (q.armKick()) this.#d.schedule();
  }

  /**
   * Copies backlog frames from `i` on whose kept header is all zero (no
   * offload metadata) into the receive ring with rxBatch, up to 256 a call;
   * returns the first frame not copied (the caller's per-frame loop takes it).
   */
  #drainPlain(q: Virtqueue, i: number): number {
    const b = this.#backlog;
    const bb = b.buf;
    const f = this.#runs;
    const max = this.#maxFrameLen;
    while (i < b.count) {
      let n = 0;
      for (let k = i; k < b.count && n < 256; k++, n++) {
        const at = b.offs[k] as number;
        const len = (b.lens[k] as number) - RX_HDR;
        if (len > max || bb.readUInt32LE(at) !== 0 || bb.readUInt32LE(at + 4) !== 0 || bb.readUInt16LE(at + 8) !== 0)
          break;
        f[2 * n] = at + RX_HDR;
        f[2 * n + 1] = len;
      }
      if (n === 0) return i;
      const done = q.rxBatch(bb, f, n);
      if (done > 0) {
        this.#d.rxFrames += done;
        this.#d.published(q);
      }
      i += done;
      if (done < n) return i;
    }
    return i;
  }

  /** Copies one frame with the header in #hdr into receive buffers (one chain, or several with MRG_RXBUF). */
  #rxFrame(q: Virtqueue, buf: Buffer, off: number, len: number): number {
    const d = this.#d;
    if (len > this.#maxFrameLen) {
      d.rxDropped++;
      return Rx.DROPPED;
    }
    // The native copy writes an all-zero header (but num_buffers): only for frames without offload metadata.
    const hdr = this.#hdr;
    const plain = hdr.readUInt32LE(0) === 0 && hdr.readUInt32LE(4) === 0 && hdr.readUInt16LE(8) === 0;
    const fast = plain ? q.rxOne(buf, off, len) : 2;
    if (fast === 0) {
      d.rxFrames++;
      d.published(q);
      return Rx.OK;
    }
    if (fast === 1) return Rx.NO_ROOM;
    const need = NET_HDR_LEN + len;
    const avail = q.availCount();
    if (avail < 0) return this.#rxFail(q);
    if (avail === 0) return Rx.NO_ROOM;
    if (this.#heads.length < q.num) {
      this.#heads = new Uint16Array(q.num);
      this.#headEnd = new Uint32Array(q.num);
      this.#headCap = new Float64Array(q.num);
    }
    const mrg = d.session.mrg;
    const start = q.lastAvail;
    let cap = 0;
    let segs = 0;
    let h = 0;
    while (cap < need) {
      if (h === avail || (h === 1 && !mrg)) {
        q.lastAvail = start; // nothing taken
        if (avail === q.num || !mrg) {
          // Even every buffer the guest can post is too small: drop this frame.
          d.rxDropped++;
          return Rx.DROPPED;
        }
        return Rx.NO_ROOM;
      }
      const head = q.pop();
      if (head < 0) return this.#rxFail(q);
      const next = q.walk(head, true, segs);
      if (next < 0) return this.#rxFail(q);
      let c = 0;
      for (let s = segs; s < next; s++) c += q.segLen[s] as number;
      this.#heads[h] = head;
      this.#headEnd[h] = next;
      this.#headCap[h] = c;
      cap += c;
      segs = next;
      h++;
    }
    hdr.writeUInt16LE(h, 10); // num_buffers (1 without MRG_RXBUF)
    this.#scatter(q, segs, buf, off, len);
    let left = need;
    for (let k = 0; k < h; k++) {
      const w = Math.min(left, this.#headCap[k] as number);
      q.pushUsed(this.#heads[k] as number, w);
      left -= w;
    }
    q.publish();
    d.rxFrames++;
    d.offloads.delivered(hdr, 0);
    d.published(q);
    return Rx.OK;
  }

  /** Writes header + frame across segments [0, segs). */
  #scatter(q: Virtqueue, segs: number, buf: Buffer, off: number, len: number): void {
    const hdr = this.#hdr;
    let src = 0; // bytes of header+frame written so far
    const total = NET_HDR_LEN + len;
    const log = q.log;
    for (let s = 0; s < segs && src < total; s++) {
      const view = q.view(s);
      let at = q.segOff[s] as number;
      const n = Math.min(q.segLen[s] as number, total - src);
      if (log) log.mark(q.segGpa[s] as number, n);
      let left = n;
      if (src < NET_HDR_LEN) {
        const h = Math.min(NET_HDR_LEN - src, left);
        hdr.copy(view, at, src, src + h);
        at += h;
        src += h;
        left -= h;
      }
      if (left > 0) {
        const from = off + src - NET_HDR_LEN;
        buf.copy(view, at, from, from + left);
        src += left;
      }
    }
  }

  #rxFail(q: Virtqueue): number {
    this.#d.fail(q.error);
    return Rx.ERROR;
  }
}
