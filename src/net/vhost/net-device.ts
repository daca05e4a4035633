/**
 * virtio-net over a vhost-user session (virtio 1.2 §5.1.6): frames the
 * guest transmits (queue 1) go to the switch's sink; frames the switch
 * writes go straight into the guest's receive buffers (queue 0). One copy
 * per frame, guest memory to guest memory between two vhost-user ports: a
 * transmit buffer that is one segment is handed to the sink in place.
 *
 * Every frame carries a 12-byte virtio_net_hdr_v1. Its offload fields
 * (checksum, TSO) are read and written by net-offload.ts: #txFrame turns the
 * transmitted header into the OffloadMeta handed to the sink, and write()
 * takes the metadata of a frame for the received header (the backlog keeps
 * those 10 bytes in front of each queued frame).
 *
 * Receive: write() copies at once when the guest has buffers; otherwise the
 * frame waits in a bounded backlog and the ring asks for a kick (EVENT_IDX
 * avail_event) when the guest adds buffers. Interrupts are sent once per
 * event-loop turn at most, and only when the guest wants one (§2.7.10).
 *
 * Backpressure between co-resident guests: when every frame of a transmit
 * batch went to vhost-user receivers and each of them had to queue it (its
 * receive ring was full), the sender stops reading its transmit ring until
 * one of them has drained its backlog. The frames then wait in the sending
 * guest's ring, as they would behind a slow NIC, instead of being copied
 * into a backlog and dropped when it fills. A sender that also sent
 * elsewhere in the last MIXED_MS is not paused (one slow receiver must not
 * hold up its other traffic), and a receiver that takes nothing for its
 * hold time (port option hold_ms) releases its senders and stops pausing
 * them until it drains (a stuck guest is dropped from, not waited for).
 */

import { FrameArena } from '../frame-arena.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { BatchResult, BatchSink, FrameSink } from '../port.js';
import { countWrite, WriteResult } from '../port.js';
import { NET_HDR_LEN } from './constants.js';
import { VhostMemoryFaultError, VirtqueueError } from './errors.js';
import { VhostOffloads } from './net-offload.js';
import type { VhostSession } from './session.js';
import type { Virtqueue } from './virtqueue.js';

/**
 * Frames taken from a transmit ring per callback before yielding to the
 * event loop: a whole ring (at least this many), so a guest that sleeps
 * between interrupts gets one per ring rather than one per half ring.
 */
const TX_BUDGET_MIN = 256;
const ETH_HLEN = 14;
/** Header bytes kept with each backlog frame: the virtio_net_hdr without num_buffers. */
const RX_HDR = 10;

/**
 * Frames taken from a transmit ring per native call: a sender pauses only
 * between calls, so what one call takes beyond a full receiver's ring must
 * fit in that receiver's backlog. A call takes at most TX_CHUNK_BYTES (the
 * backlog holds at least 4 MiB) and 256 frames (the native maximum); after
 * a pause it starts again at TX_CHUNK_MIN frames and doubles per call that
 * met no full receiver, so a small backlog (queue_len) is not overrun either.
 */
const TX_CHUNK_BYTES = 1 << 20;
const TX_CHUNK_MIN = 32;

/** Frames a receive ring defers during one transmit batch before it copies them. */
const PEND_MAX = 256;

/** A sender that sent to a port other than full vhost-user receivers this recently (ms) is not paused. */
const MIXED_MS = 10;

/** How long a receiver that takes no frame from its backlog holds up its senders by default (ms). */
export const DEFAULT_HOLD_MS = 100;

/**
 * The transmit batch being handed to the switch (one at a time: this runs
 * on one thread): the guest-memory view its frames come from, and the
 * devices that deferred frames from it. A frame from that view stays valid
 * until the batch's used index is published, so a receiving device may defer
 * its copy and do the whole batch in one native call (flushBatch), provided
 * it has counted a free buffer for every deferred frame.
 */
const batch: { src: Buffer | undefined; pending: VhostNetDevice[] } = { src: undefined, pending: [] };

/**
 * The transmit batch being forwarded, for backpressure: its sender, a
 * sequence number, the vhost-user devices it wrote to, how many frames
 * reached them, and whether any of them could not queue or deliver
 * without the backlog.
 */
const flow: { sender: VhostNetDevice | undefined; seq: number; receivers: VhostNetDevice[]; frames: number } = {
  sender: undefined,
  seq: 0,
  receivers: [],
  frames: 0,
};

function flushBatch(): void {
  const p = batch.pending;
  for (let i = 0; i < p.length; i++) (p[i] as VhostNetDevice).flush();
  p.length = 0;
}

/** Outcome of copying one frame into the receive ring. */
const Rx = { OK: 0, NO_ROOM: 1, DROPPED: 2, ERROR: 3 } as const;

export interface NetDeviceContext {
  sink: FrameSink;
  /** Where a transmit batch of plain frames goes at once (the switch's batch ingress); absent: {@link sink} per frame. */
  sinkBatch?: BatchSink | undefined;
  onMalformed: (reason: string) => void;
  /** Largest frame (Ethernet header included) in either direction. */
  maxFrameLen: number;
  /** Receive backlog bound in frames. */
  queueLen: number;
  /** Backpressure: how long this device may hold up senders without taking a frame (ms); 0: never. */
  holdMs: number;
  /** The guest broke the ring protocol: disconnect it (called once per error). */
  onError: (err: Error) => void;
}

export class VhostNetDevice {
  readonly #s: VhostSession;
  readonly #ctx: NetDeviceContext;
  readonly #staging: Buffer;
  readonly #hdr = Buffer.alloc(NET_HDR_LEN);
  readonly #backlog: FrameArena;
  /** Frames deferred from the current transmit batch: offset, length pairs in batch.src. */
  readonly #pend = new Uint32Array(2 * PEND_MAX);
  /** Offset, length pairs of one transmit batch for sinkBatch (vringTx takes at most 256 chains a call), or of backlog frames for rxBatch. */
  readonly #txFrames = new Uint32Array(2 * 256);
  #pendN = 0;
  /** Frames per vringTx call (TX_CHUNK_MIN to 256, see TX_CHUNK_BYTES). */
  #txChunk = TX_CHUNK_MIN;
  /** Free receive buffers not yet promised to deferred frames. */
  #room = 0;
  #heads = new Uint16Array(0);
  #headEnd = new Uint32Array(0);
  #headCap = new Float64Array(0);
  /** Rings (bit = ring index) that published used entries this turn and may need an interrupt. */
  #callMask = 0;
  #scheduled: NodeJS.Immediate | undefined;
  /** Transmit rings (bit = ring index) with work left over for the next turn. */
  #txAgain = 0;
  /** The receive ring frames go to: the lowest-numbered ready one (queue pair 0 unless the guest disabled it). */
  #rxq: Virtqueue | undefined;
  readonly #turnBound = (): void => this.#turn();
  #dead = false;
  /** Backpressure: set while a full receiver holds this device's transmit rings (see the module comment). */
  #paused = false;
  /** Senders this device holds up until its backlog drains. */
  readonly #waiters = new Set<VhostNetDevice>();
  #stallTimer: NodeJS.Timeout | undefined;
  /** rxFrames when the stall timer was armed: no change by the time it fires means no progress. */
  #stallMark = 0;
  /** Took nothing for its hold time while holding senders: pauses nobody until its backlog drains. */
  #stalled = false;
  /** The {@link flow} sequence number of the batch this device last received from, and last had to queue in. */
  #flowSeq = 0;
  #congestedSeq = 0;
  /** Where this device sent frames lately, and when (performance.now()): vhost-user receivers, null for any other port. */
  readonly #recent = new Map<VhostNetDevice | null, number>();
  /** Negotiated offloads and the header reads and writes. */
  readonly offloads = new VhostOffloads();
  // counters
  rxFrames = 0;
  txFrames = 0;
  rxDropped = 0;
  calls = 0;
  kicks = 0;
  /** Times this device's transmit rings were paused by a full receiver. */
  txPauses = 0;

  constructor(session: VhostSession, ctx: NetDeviceContext) {
    this.#s = session;
    this.#ctx = ctx;
    this.#staging = Buffer.allocUnsafe(NET_HDR_LEN + ctx.maxFrameLen);
    // 4 MiB: about 60 large segments (offloads) wait for receive buffers before tail drop.
    this.#backlog = new FrameArena(ctx.queueLen, Math.max(4 << 20, 2 * ctx.maxFrameLen));
  }

  /** True when the guest's receive ring can take frames. */
  get rxReady(): boolean {
    return this.#rxq !== undefined && !this.#dead;
  }

  /** Frames waiting for receive buffers. */
  get queued(): number {
    return this.#backlog.queued;
  }

  /** A kick (or ring start) on ring `q`. */
  kick(q: Virtqueue): void {
    if (this.#dead) return;
    this.kicks++;
    if (q.index & 1) this.#tx(q);
    else if (q === this.#rxq) this.#drainBacklog(q);
  }

  /** Rings changed: pick the receive ring again; drop the backlog when there is none. */
  ringsChanged(): void {
    this.offloads.setFeatures(this.#s.features);
    this.#rxq = undefined;
    for (const q of this.#s.rings) {
      if ((q.index & 1) === 0) q.mrgRx = this.#s.mrg;
      if ((q.index & 1) === 0 && q.ready) {
        this.#rxq = q;
        break;
      }
    }
    if (!this.rxReady) {
      this.rxDropped += this.#backlog.clear();
      this.#releaseWaiters();
    }
  }

  /** Stops all work (session closed). */
  stop(): void {
    this.#dead = true;
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    this.#backlog.clear();
    this.#releaseWaiters();
  }

  /** True while a full receiver holds this device's transmit rings. */
  get paused(): boolean {
    return this.#paused;
  }

  // ---- transmit: guest -> switch ----

  #tx(q: Virtqueue): void {
    if (this.#paused) return; // a receiver's drain resumes us
    let budget = Math.max(TX_BUDGET_MIN, q.num);
    for (;;) {
      let n = q.availCount();
      if (n < 0) {
        this.#fail(q.error);
        return;
      }
      if (n === 0) {
        q.armKick();
        n = q.availCount();
        if (n <= 0) break;
      }
      while (n > 0) {
        // Simple chains move in one native call (vring.c); the first other one is walked below.
        const k = q.txBatch(Math.min(n, budget, this.#txChunk), ETH_HLEN, this.#ctx.maxFrameLen);
        if (k < 0) {
          // The guest's memory faulted under the ring (its file shrank): the session says where.
          this.#failWith(this.#s.memoryFault() ?? new VhostMemoryFaultError(`ring ${q.index}: guest memory faulted`));
          return;
        }
        if (k > 0) {
          this.#txFast(q, k);
          if (this.#dead) return;
          n -= k;
          budget -= k;
          if (budget === 0 || this.#paused) break;
          continue;
        }
        n--;
        const head = q.pop();
        if (head < 0) {
          this.#fail(q.error);
          return;
        }
        const segs = q.walk(head, false, 0);
        if (segs < 0) {
          this.#fail(q.error);
          return;
        }
        this.#flowStart();
        this.#txFrame(q, segs);
        this.#flowEnd(1);
        if (this.#dead) return;
        q.pushUsed(head, 0);
        if (--budget === 0 || this.#paused) break;
      }
      q.publish();
      this.#published(q);
      if (this.#paused) break; // the receiver that drains first brings us back (#resume)
      if (budget === 0) {
        // Let other ports and sessions run; carry on next turn without waiting for a kick.
        this.#txAgain |= 1 << q.index;
        break;
      }
    }
    this.#schedule();
  }

  /**
   * Hands the `k` frames of the last txBatch to the sink, in place (their
   * used elements are not yet published): with a batch sink, one call per
   * run of frames in one memory region (nearly always one call).
   */
  #txFast(q: Virtqueue, k: number): void {
    const out = q.txOut;
    const sink = this.#ctx.sink;
    const sinkBatch = this.#ctx.sinkBatch;
    let bytes = 0;
    this.#flowStart();
    try {
      for (let i = 0; i < 3 * k; ) {
        const region = out[i] as number;
        const view = q.regionView(region);
        if (view !== batch.src) {
          flushBatch();
          batch.src = q.rxSource(view) ? view : undefined;
        }
        if (sinkBatch === undefined) {
          bytes += out[i + 2] as number;
          sink(view, out[i + 1] as number, out[i + 2] as number);
          i += 3;
        } else {
          const f = this.#txFrames;
          let n = 0;
          for (; i < 3 * k && out[i] === region; i += 3, n++) {
            const len = out[i + 2] as number;
            f[2 * n] = out[i + 1] as number;
            f[2 * n + 1] = len;
            bytes += len;
          }
          sinkBatch(view, f, n);
        }
        if (this.#dead) return;
      }
      this.txFrames += k;
    } finally {
      // Deferred copies happen before the caller publishes these transmit buffers.
      flushBatch();
      if (batch.src) q.rxSource(undefined);
      batch.src = undefined;
      // The next call's size, from this one's frames (a pause in #flowEnd starts it small again).
      this.#txChunk = Math.max(
        1,
        Math.min(2 * this.#txChunk, 256, Math.floor((TX_CHUNK_BYTES * k) / Math.max(1, bytes))),
      );
      this.#flowEnd(k);
    }
  }

  // ---- backpressure (see the module comment) ----

  #flowStart(): void {
    flow.sender = this;
    flow.seq = (flow.seq + 1) | 0 || 1;
    flow.receivers.length = 0;
    flow.frames = 0;
  }

  /** After `k` frames were forwarded: pauses this sender when all went to vhost-user receivers that all had to queue. */
  #flowEnd(k: number): void {
    flow.sender = undefined;
    const rs = flow.receivers;
    const now = performance.now();
    const recent = this.#recent;
    let full = flow.frames >= k;
    if (!full) recent.set(null, now);
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i] as VhostNetDevice;
      recent.set(r, now);
      if (r.#congestedSeq !== flow.seq) full = false;
    }
    if (!full || this.#dead) {
      // Devices of guests long gone must not pile up here.
      if (recent.size > 16) for (const [dst, at] of recent) if (now - at >= MIXED_MS) recent.delete(dst);
      return;
    }
    // Not when it also sent elsewhere lately: to another port, or to a receiver that is not full.
    for (const [dst, at] of recent) {
      if (now - at >= MIXED_MS) recent.delete(dst);
      else if (dst === null || dst.#congestedSeq !== flow.seq) full = false;
    }
    if (!full) return;
    this.#paused = true;
    this.#txChunk = Math.min(this.#txChunk, TX_CHUNK_MIN);
    this.txPauses++;
    for (let i = 0; i < rs.length; i++) (rs[i] as VhostNetDevice).#hold(this);
  }

  /** Notes a frame from the current transmit batch (if any) reaching this device. */
  #noteFlow(frames: number): void {
    if (flow.sender === undefined) return;
    if (this.#flowSeq !== flow.seq) {
      this.#flowSeq = flow.seq;
      flow.receivers.push(this);
    }
    flow.frames += frames;
  }

  /** The frame being written must wait in (or is refused by) the backlog: the sender may pause. */
  #noteCongested(): void {
    if (flow.sender !== undefined && !this.#stalled && this.#ctx.holdMs > 0) this.#congestedSeq = flow.seq;
  }

  /** Holds `sender` until this device's backlog drains, or it stalls. */
  #hold(sender: VhostNetDevice): void {
    this.#waiters.add(sender);
    if (this.#stallTimer === undefined) this.#armStall();
  }

  #armStall(): void {
    this.#stallMark = this.rxFrames;
    this.#stallTimer = setTimeout(() => {
      this.#stallTimer = undefined;
      if (this.#waiters.size === 0) return;
      if (this.rxFrames !== this.#stallMark) {
        this.#armStall(); // slow, not stuck
        return;
      }
      this.#stalled = true;
      this.#releaseWaiters();
    }, this.#ctx.holdMs);
  }

  #releaseWaiters(): void {
    if (this.#stallTimer !== undefined) clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    if (this.#waiters.size === 0) return;
    for (const w of this.#waiters) w.#resume();
    this.#waiters.clear();
  }

  /** A receiver that held us drained: read the transmit rings again. */
  #resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#dead) return;
    const rings = this.#s.rings;
    for (let i = 1; i < rings.length; i += 2) if ((rings[i] as Virtqueue).ready) this.#txAgain |= 1 << i;
    this.#schedule();
  }

  /** Hands the frame in segments [0, segs) to the sink, in place when it is one segment. */
  #txFrame(q: Virtqueue, segs: number): void {
    let total = 0;
    for (let s = 0; s < segs; s++) total += q.segLen[s] as number;
    const len = total - NET_HDR_LEN;
    if (len < ETH_HLEN) {
      this.#ctx.onMalformed(`transmit buffer of ${total} bytes holds no Ethernet frame`);
      return;
    }
    if (len > this.#ctx.maxFrameLen) {
      this.#ctx.onMalformed(`transmitted frame of ${len} bytes exceeds ${this.#ctx.maxFrameLen}`);
      return;
    }
    const sink = this.#ctx.sink;
    if (segs === 1 || (segs === 2 && q.segLen[0] === NET_HDR_LEN)) {
      const meta = this.offloads.readTx(q.view(0), q.segOff[0] as number, len);
      if (meta === null) {
        this.#badHeader();
        return;
      }
      this.txFrames++;
      if (segs === 1) sink(q.view(0), (q.segOff[0] as number) + NET_HDR_LEN, len, meta);
      else sink(q.view(1), q.segOff[1] as number, len, meta);
      return;
    }
    const st = this.#staging;
    let at = 0;
    for (let s = 0; s < segs; s++) {
      const off = q.segOff[s] as number;
      at += q.view(s).copy(st, at, off, off + (q.segLen[s] as number));
    }
    const meta = this.offloads.readTx(st, 0, len);
    if (meta === null) {
      this.#badHeader();
      return;
    }
    this.txFrames++;
    sink(st, NET_HDR_LEN, len, meta);
  }

  /** A transmitted header used an offload the guest did not negotiate: the frame is dropped and counted. */
  #badHeader(): void {
    this.#ctx.onMalformed(this.offloads.reason);
  }

  // ---- receive: switch -> guest ----

  /**
   * The Port.write of the vhost-user port. `meta` only for frames the
   * guest's offloads accept (VhostOffloads.accepts); it goes into the header.
   */
  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    const q = this.#rxq;
    if (this.#dead || q === undefined || !q.ready) return WriteResult.DOWN;
    this.#noteFlow(1);
    return this.#write(q, buf, off, len, meta);
  }

  #write(q: Virtqueue, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): WriteResult {
    if (
      meta === undefined &&
      buf === batch.src &&
      len <= this.#ctx.maxFrameLen &&
      this.#backlog.queued === 0 &&
      q.fast
    ) {
      if (this.#pendN === 0) {
        this.#room = q.availCount();
        if (this.#room > 0) batch.pending.push(this);
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
    this.offloads.writeRx(this.#hdr, 0, meta);
    const r = this.#rxFrame(q, buf, off, len);
    if (r === Rx.NO_ROOM) return this.#enqueue(q, buf, off, len, meta);
    if (r === Rx.ERROR) return WriteResult.DOWN;
    return WriteResult.OK;
  }

  /**
   * Port.writeBatch: frames from the switch's batch ingress. Frames of the
   * transmit batch being handed on (another guest's memory) go into the
   * receive ring in one native call, as many as it takes; the rest, and
   * frames from anywhere else, take write() one by one.
   */
  writeBatch(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    const q = this.#rxq;
    if (this.#dead || q === undefined || !q.ready) {
      res.down += count;
      return;
    }
    this.#noteFlow(count);
    let i = 0;
    if (buf === batch.src && this.#backlog.queued === 0 && q.fast) {
      if (this.#pendN > 0) this.flush();
      i = q.rxBatch(frames, count);
      if (i > 0) {
        this.rxFrames += i;
        res.ok += i;
        for (let k = 1; k < 2 * i; k += 2) res.bytes += frames[k] as number;
        this.#published(q);
      }
    }
    for (; i < count; i++) {
      const len = frames[2 * i + 1] as number;
      countWrite(res, this.#write(q, buf, frames[2 * i] as number, len, undefined), len);
    }
  }

  /**
   * Copies the frames deferred from the current transmit batch into the
   * receive ring (one native call for the simple buffers; the rest one by
   * one, into the backlog when the buffers ran out after all). A frame that
   * finds no room then is counted in rx_dropped.
   */
  flush(): void {
    const n = this.#pendN;
    if (n === 0) return;
    this.#pendN = 0;
    const q = this.#rxq;
    const src = batch.src;
    if (this.#dead || q === undefined || !q.ready || src === undefined) {
      this.rxDropped += n;
      return;
    }
    const pend = this.#pend;
    const done = q.rxBatch(pend, n);
    // Deferred frames carry no offload metadata: an all-zero header (but num_buffers).
    if (done > 0) {
      this.rxFrames += done;
      this.#published(q);
    }
    for (let i = done; i < n; i++) {
      const off = pend[2 * i] as number;
      const len = pend[2 * i + 1] as number;
      let r: number = Rx.NO_ROOM;
      if (this.#backlog.queued === 0) {
        this.offloads.writeRx(this.#hdr, 0, undefined);
        r = this.#rxFrame(q, src, off, len);
        if (r === Rx.ERROR) {
          this.rxDropped += n - i - 1;
          return;
        }
      }
      if (r === Rx.NO_ROOM && this.#enqueue(q, src, off, len, undefined) !== WriteResult.OK) this.rxDropped++;
    }
  }

  #enqueue(q: Virtqueue, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): WriteResult {
    this.#noteCongested();
    const at = this.#backlog.pushAfter(RX_HDR, buf, off, len);
    if (at < 0) return WriteResult.QUEUE_FULL;
    this.offloads.writeRx(this.#backlog.buf, at, meta);
    q.armKick();
    // The guest may have added buffers before it saw avail_event: look again next turn.
    this.#schedule();
    return WriteResult.OK;
  }

  #drainBacklog(q: Virtqueue): void {
    const b = this.#backlog;
    let i = b.head;
    // Outside a transmit batch the native source is free: runs of plain frames go in one call each.
    if (q.fast && batch.src === undefined && i < b.count && q.rxSource(b.buf)) {
      try {
        i = this.#drainPlain(q, i);
      } finally {
        q.rxSource(undefined);
      }
    }
    for (; i < b.count; i++) {
      const at = b.offs[i] as number;
      b.buf.copy(this.#hdr, 0, at, at + RX_HDR);
      const r = this.#rxFrame(q, b.buf, at + RX_HDR, (b.lens[i] as number) - RX_HDR);
      if (r === Rx.NO_ROOM) break;
      if (r === Rx.ERROR) return;
    }
    // Waiting for buffers: the guest's next post kicks us (a post since the last look: try again next turn).
    if (b.advance(i)) {
      this.#stalled = false;
      this.#releaseWaiters();
    } else if (q.armKick()) this.#schedule();
  }

  /**
   * Copies backlog frames from `i` on whose kept header is all zero (no
   * offload metadata) into the receive ring with rxBatch, up to 256 a call;
   * returns the first frame not copied (the caller's per-frame loop takes it).
   */
  #drainPlain(q: Virtqueue, i: number): number {
    const b = this.#backlog;
    const bb = b.buf;
    const f = this.#txFrames;
    const max = this.#ctx.maxFrameLen;
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
      const done = q.rxBatch(f, n);
      if (done > 0) {
        this.rxFrames += done;
        this.#published(q);
      }
      i += done;
      if (done < n) return i;
    }
    return i;
  }

  /** Copies one frame with the header in #hdr into receive buffers (one chain, or several with MRG_RXBUF). */
  #rxFrame(q: Virtqueue, buf: Buffer, off: number, len: number): number {
    if (len > this.#ctx.maxFrameLen) {
      this.rxDropped++;
      return Rx.DROPPED;
    }
    // The native copy writes an all-zero header (but num_buffers): only for frames without offload metadata.
    const hdr = this.#hdr;
    const plain = hdr.readUInt32LE(0) === 0 && hdr.readUInt32LE(4) === 0 && hdr.readUInt16LE(8) === 0;
    const fast = plain ? q.rxOne(buf, off, len) : 2;
    if (fast === 0) {
      this.rxFrames++;
      this.#published(q);
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
    const mrg = this.#s.mrg;
    const start = q.lastAvail;
    let cap = 0;
    let segs = 0;
    let h = 0;
    while (cap < need) {
      if (h === avail || (h === 1 && !mrg)) {
        q.lastAvail = start; // nothing taken
        if (avail === q.num || !mrg) {
          // Even every buffer the guest can post is too small: drop this frame.
          this.rxDropped++;
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
    this.#hdr.writeUInt16LE(h, 10); // num_buffers (1 without MRG_RXBUF)
    this.#scatter(q, segs, buf, off, len);
    let left = need;
    for (let k = 0; k < h; k++) {
      const w = Math.min(left, this.#headCap[k] as number);
      q.pushUsed(this.#heads[k] as number, w);
      left -= w;
    }
    q.publish();
    this.rxFrames++;
    this.offloads.delivered(this.#hdr, 0);
    this.#published(q);
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
    this.#fail(q.error);
    return Rx.ERROR;
  }

  #fail(msg: string): void {
    this.#failWith(new VirtqueueError(msg));
  }

  #failWith(err: Error): void {
    if (this.#dead) return;
    this.stop();
    this.#ctx.onError(err);
  }

  // ---- once per event-loop turn: interrupts, carried-over work ----

  #schedule(): void {
    if (this.#scheduled === undefined && !this.#dead) this.#scheduled = setImmediate(this.#turnBound);
  }

  #turn(): void {
    this.#scheduled = undefined;
    if (this.#dead) return;
    const rings = this.#s.rings;
    const rx = this.#rxq;
    if (this.#backlog.queued > 0 && rx?.ready) this.#drainBacklog(rx);
    const calls = this.#callMask;
    this.#callMask = 0;
    for (let i = 0; calls >>> i !== 0; i++) {
      const q = rings[i] as Virtqueue;
      if ((calls >>> i) & 1 && q.needsCall()) this.#call(q);
    }
    const again = this.#txAgain;
    this.#txAgain = 0;
    for (let i = 1; again >>> i !== 0; i += 2) {
      const q = rings[i] as Virtqueue;
      if ((again >>> i) & 1 && q.ready && !this.#dead) this.#tx(q);
    }
    // Frames still waiting for receive buffers: the receive kick brings us back (no busy loop).
  }

  /** Used entries were published on `q`: the guest gets an interrupt at the end of this turn if it asked (#turn). */
  #published(q: Virtqueue): void {
    this.#callMask |= 1 << q.index;
    this.#schedule();
  }

  #call(q: Virtqueue): void {
    this.calls++;
    this.#s.call(q);
  }
}

/** A RARP announcement (RFC 903, as QEMU's qemu_announce_self builds it) for `mac`: 60 bytes. */
export function rarpFrame(mac: Buffer): Buffer {
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  mac.copy(f, 6, 0, 6);
  f.writeUInt16BE(0x8035, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(0x0800, 16); // IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(3, 20); // reverse request
  mac.copy(f, 22, 0, 6);
  mac.copy(f, 32, 0, 6);
  return f;
}
