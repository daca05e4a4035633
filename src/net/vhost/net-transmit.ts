/**
 * Transmit of a vhost-user net device: frames the guest puts in its
 * transmit rings (odd queues, virtio 1.2 §5.1.6) go to the switch's sink,
 * in place in guest memory: a buffer that is one segment (or a header
 * segment and one frame segment) is handed on where it lies, and its used
 * element is published only after the sink returned, so receivers may copy
 * from it until then (their deferred copies run at the end of the switch's
 * batch, net/port.ts BatchContext).
 *
 * While the switch holds the device (backpressure, net-flow.ts TxPause) it
 * reads no transmit ring: the frames wait in the guest's ring.
 */
import { ETH_HLEN } from '../frame/ethernet.js';
import { NET_HDR_LEN } from './constants.js';
import { VhostMemoryFaultError } from './errors.js';
import type { NetDeviceCore } from './net-core.js';
import { TxPause } from './net-flow.js';
import type { Virtqueue } from './virtqueue.js';

/**
 * Frames taken from a transmit ring per callback before yielding to the
 * event loop: a whole ring (at least this many), so a guest that sleeps
 * between interrupts gets one per ring rather than one per half ring.
 */
const TX_BUDGET_MIN = 256;

/**
 * Frames taken from a transmit ring per native call: a sender is held only
 * between calls, so what one call takes beyond a full receiver's ring must
 * fit in that receiver's backlog. A call takes at most TX_CHUNK_BYTES (the
 * backlog holds at least 4 MiB) and 256 frames (the native maximum); after
 * a hold it starts again at TX_CHUNK_MIN frames and doubles per call that
 * was not held, so a small backlog (queue_len) is not overrun either.
 */
const TX_CHUNK_BYTES = 1 << 20;
const TX_CHUNK_MIN = 32;

export class VhostTransmit {
  readonly #d: NetDeviceCore;
  readonly #staging: Buffer;
  /** Offset, length pairs of one transmit batch for sinkBatch (vringTx takes at most 256 chains a call). */
  readonly #frames = new Uint32Array(2 * 256);
  /** Frames per vringTx call (TX_CHUNK_MIN to 256, see TX_CHUNK_BYTES). */
  #chunk = TX_CHUNK_MIN;
  /** Backpressure: set while the switch holds this device. */
  readonly pause: TxPause;

  constructor(d: NetDeviceCore, maxFrameLen: number) {
    this.#d = d;
    this.#staging = Buffer.allocUnsafe(NET_HDR_LEN + maxFrameLen);
    this.pause = new TxPause(() => d.txResume());
  }

  /** Port.hold: read no transmit ring until {@link release}; the next call after it starts small. */
  hold(): void {
    this.pause.hold();
    this.#chunk = TX_CHUNK_MIN;
  }

  /** Takes what the guest transmitted on `q`, up to a budget; the rest next turn (or at the next kick). */
  run(q: Virtqueue): void {
    const d = this.#d;
    const pause = this.pause;
    if (pause.paused) return; // the release brings us back
    let budget = Math.max(TX_BUDGET_MIN, q.num);
    for (;;) {
      let n = q.availCount();
      if (n < 0) {
        d.fail(q.error);
        return;
      }
      if (n === 0) {
        q.armKick();
        n = q.availCount();
        if (n <= 0) break;
      }
      while (n > 0) {
        // Simple chains move in one native call (vring.c); the first other one is walked below.
        const k = q.txBatch(Math.min(n, budget, this.#chunk), ETH_HLEN, d.ctx.maxFrameLen);
        if (k < 0) {
          // The guest's memory faulted under the ring (its file shrank): the session says where.
          d.failWith(d.session.memoryFault() ?? new VhostMemoryFaultError(`ring ${q.index}: guest memory faulted`));
          return;
        }
        if (k > 0) {
          this.#fast(q, k);
          if (d.dead) return;
          n -= k;
          budget -= k;
          if (budget === 0 || pause.paused) break;
          continue;
        }
        n--;
        const head = q.pop();
        if (head < 0) {
          d.fail(q.error);
          return;
        }
        const segs = q.walk(head, false, 0);
        if (segs < 0) {
          d.fail(q.error);
          return;
        }
        this.#frame(q, segs);
        if (d.dead) return;
        q.pushUsed(head, 0);
        if (--budget === 0 || pause.paused) break;
      }
      q.publish();
      d.published(q);
      if (pause.paused) break; // the release brings us back
      if (budget === 0) {
        // Let other ports and sessions run; carry on next turn without waiting for a kick.
        d.txAgain(q);
        break;
      }
    }
    d.schedule();
  }

  /**
   * Hands the `k` frames of the last txBatch to the sink, in place (their
   * used elements are not yet published): with a batch sink, one call per
   * run of frames in one memory region (nearly always one call).
   */
  #fast(q: Virtqueue, k: number): void {
    const d = this.#d;
    const out = q.txOut;
    const sink = d.ctx.sink;
    const sinkBatch = d.ctx.sinkBatch;
    let bytes = 0;
    try {
      for (let i = 0; i < 3 * k; ) {
        const region = out[i] as number;
        const view = q.regionView(region);
        if (sinkBatch === undefined) {
          bytes += out[i + 2] as number;
          sink(view, out[i + 1] as number, out[i + 2] as number);
          i += 3;
        } else {
          const f = this.#frames;
          let n = 0;
          for (; i < 3 * k && out[i] === region; i += 3, n++) {
            const len = out[i + 2] as number;
            f[2 * n] = out[i + 1] as number;
            f[2 * n + 1] = len;
            bytes += len;
          }
          sinkBatch(view, f, n);
        }
        if (d.dead) return;
      }
      d.txFrames += k;
    } finally {
      // The next call's size, from this one's frames (after a hold it starts small again).
      this.#chunk = this.pause.paused
        ? TX_CHUNK_MIN
        : Math.max(1, Math.min(2 * this.#chunk, 256, Math.floor((TX_CHUNK_BYTES * k) / Math.max(1, bytes))));
    }
  }

  /** Hands the frame in segments [0, segs) to the sink, in place when it is one segment. */
  #frame(q: Virtqueue, segs: number): void {
    const d = this.#d;
    const ctx = d.ctx;
    let total = 0;
    for (let s = 0; s < segs; s++) total += q.segLen[s] as number;
    const len = total - NET_HDR_LEN;
    if (len < ETH_HLEN) {
      ctx.onMalformed(`transmit buffer of ${total} bytes holds no Ethernet frame`);
      return;
    }
    if (len > ctx.maxFrameLen) {
      ctx.onMalformed(`transmitted frame of ${len} bytes exceeds ${ctx.maxFrameLen}`);
      return;
    }
    const sink = ctx.sink;
    if (segs === 1 || (segs === 2 && q.segLen[0] === NET_HDR_LEN)) {
      const meta = d.offloads.readTx(q.view(0), q.segOff[0] as number, len);
      if (meta === null) {
        ctx.onMalformed(d.offloads.reason);
        return;
      }
      d.txFrames++;
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
    const meta = d.offloads.readTx(st, 0, len);
    if (meta === null) {
      // A header with an offload the guest did not negotiate: the frame is dropped and counted.
      ctx.onMalformed(d.offloads.reason);
      return;
    }
    d.txFrames++;
    sink(st, NET_HDR_LEN, len, meta);
  }
}
