/**
 * A shaped, scheduled egress: frames bound for one shared resource (a busy
 * egress port today, an overlay link tomorrow) wait in one queue per
 * (source, class) flow and leave through the {@link QosScheduler} at the
 * configured rate:
 *
 * - the latency class of every source is strict priority, capped together at
 *   `latencyCap`;
 * - each source's reservation (`min`) is a bucket shared by its classes;
 * - everything else is DWRR by source weight times class weight.
 *
 * The owner (the switch, or a link) identifies a source by a small integer
 * (the port id) and describes it with {@link QosEgress.setSource}. Frames are
 * copied into a per-flow {@link FrameRing} (the port's write copies them
 * again into its own batch: the second copy is the price of holding frames
 * back). Steady state allocates nothing per frame: drains run once per
 * event-loop turn (a pre-bound setImmediate) or on one timer when the shaper
 * or a cap holds everything back.
 */

import { CLASS_COUNT, CLASS_LATENCY, CLASS_WEIGHT } from '../../qos/classes.js';
import { QosScheduler } from '../../qos/scheduler.js';
import { TokenBucket } from '../../qos/token-bucket.js';
import { MAX_FRAME_LEN, type WriteResult } from '../port.js';
import { FrameRing } from './frame-ring.js';

/**
 * Where scheduled frames go. One egress may serve several ports (an overlay
 * link's per-network ports share the link's): the owner tells them apart by
 * the `tag` given to {@link QosEgress.enqueue}, handed back with the frame.
 */
export interface EgressTarget {
  /**
   * Sends (copies) a frame; the result is handed to {@link after}. `tag` is
   * the frame's tag from enqueue, `source` the source it was queued for.
   */
  write(buf: Buffer, off: number, len: number, tag: number, source: number): WriteResult;
  /** Frames the target holds and has not yet handed to the kernel. */
  readonly queued: number;
  /** Called once per frame that left the scheduler, with the write result (counters, capture). */
  after(r: WriteResult, buf: Buffer, off: number, len: number, tag: number): void;
}

/** How one source shares this egress. */
export interface EgressSource {
  /** DWRR weight; default 1. */
  weight?: number | undefined;
  /** Reservation in bytes per second; none by default. */
  min?: number | undefined;
}

export interface QosEgressOptions {
  /** Shaped rate in bytes per second. */
  rate: number;
  /** Shaper burst in bytes; default max(50 ms at rate, 64 KiB). */
  burst?: number | undefined;
  /** Cap of the latency class over all sources, bytes per second; default a tenth of `rate`. */
  latencyCap?: number | undefined;
  /** Frames queued per flow before tail drop; default 256. */
  queueFrames?: number | undefined;
  /**
   * Bytes added to each frame's length when it is charged to the shaper,
   * reservations and DWRR (an overlay link's encapsulation); default 0.
   */
  overhead?: number | undefined;
  /** Frames the target may hold before the drain waits for it; default 128. */
  targetBacklog?: number | undefined;
  /** Milliseconds clock; default performance.now. */
  clock?: (() => number) | undefined;
}

/** What one flow did, for listings. */
export interface EgressFlowView {
  source: number;
  class: number;
  /** Frames and bytes sent. */
  frames: number;
  bytes: number;
  /** Frames dropped because the flow's queue was full. */
  drops: number;
  /** Frames waiting now. */
  queued: number;
}

interface FlowState {
  source: number;
  cls: number;
  ring: FrameRing;
  drops: number;
}

export class QosEgress {
  readonly #target: EgressTarget;
  readonly #clock: () => number;
  readonly #sched: QosScheduler<number>;
  readonly #queueFrames: number;
  readonly #backlog: number;
  readonly #overhead: number;
  #latency: TokenBucket;
  /** (source * CLASS_COUNT + class) -> flow id, or -1. Grows with the highest source id. */
  #flowOf = new Int32Array(16 * CLASS_COUNT).fill(-1);
  readonly #flows: (FlowState | undefined)[] = [];
  readonly #sources = new Map<number, { weight: number; min: TokenBucket | undefined }>();
  #immediate = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  readonly #drainBound = (): void => {
    this.#immediate = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#drain();
  };

  constructor(target: EgressTarget, opts: QosEgressOptions) {
    this.#target = target;
    this.#clock = opts.clock ?? (() => performance.now());
    this.#queueFrames = Math.max(2, opts.queueFrames ?? 256);
    this.#backlog = Math.max(1, opts.targetBacklog ?? 128);
    this.#overhead = Math.max(0, opts.overhead ?? 0);
    this.#sched = new QosScheduler<number>({ clock: this.#clock, rate: opts.rate, burst: opts.burst });
    this.#latency = new TokenBucket(opts.latencyCap ?? opts.rate / 10, latencyBurst(opts.rate), this.#clock());
  }

  /** Shaped rate in bytes per second. */
  get rate(): number {
    return this.#sched.rate as number;
  }

  /** Latency-class cap in bytes per second. */
  get latencyCap(): number {
    return this.#latency.rate;
  }

  /** Frames waiting over all flows. */
  get queued(): number {
    return this.#sched.size;
  }

  /** Changes the shaped rate and the latency cap. */
  setRate(rate: number, latencyCap?: number, burst?: number): void {
    this.#sched.setRate(rate, burst);
    this.#latency.reconfigure(latencyCap ?? rate / 10, latencyBurst(rate), this.#clock());
  }

  /** Describes (or re-describes) a source; its flows follow at once. */
  setSource(source: number, s: EgressSource): void {
    const now = this.#clock();
    const old = this.#sources.get(source);
    let min = old?.min;
    if (s.min === undefined || s.min <= 0) min = undefined;
    else if (min) min.reconfigure(s.min, latencyBurst(s.min), now);
    else min = new TokenBucket(s.min, latencyBurst(s.min), now);
    this.#sources.set(source, { weight: s.weight ?? 1, min });
    for (let cls = 0; cls < CLASS_COUNT; cls++) {
      const id = this.#flowOf[source * CLASS_COUNT + cls] ?? -1;
      if (id >= 0) this.#sched.setFlow(id, this.#flowOptions(source, cls));
    }
  }

  /** Forgets a source (its port went away): its queued frames are dropped. */
  removeSource(source: number): void {
    for (let cls = 0; cls < CLASS_COUNT; cls++) {
      const k = source * CLASS_COUNT + cls;
      const id = this.#flowOf[k] ?? -1;
      if (id < 0) continue;
      this.#sched.removeFlow(id);
      this.#flows[id] = undefined;
      this.#flowOf[k] = -1;
    }
    this.#sources.delete(source);
  }

  /**
   * Queues a copy of `buf[off .. off+len)` from `source` in class `cls`,
   * with `tag` (handed back to the target; default 0). False when that
   * flow's queue is full (the frame is dropped and counted).
   */
  enqueue(source: number, cls: number, buf: Buffer, off: number, len: number, tag = 0): boolean {
    if (this.#closed) return false;
    const k = source * CLASS_COUNT + cls;
    let id = k < this.#flowOf.length ? (this.#flowOf[k] as number) : -1;
    if (id < 0) id = this.#addFlow(source, cls);
    const f = this.#flows[id] as FlowState;
    if (!f.ring.push(buf, off, len, tag)) {
      f.drops++;
      return false;
    }
    this.#sched.enqueue(id, id, len + this.#overhead);
    // A latency frame does not wait for the shaper's timer (the scheduler lets it through first).
    if (!this.#immediate && (this.#timer === undefined || cls === CLASS_LATENCY)) {
      this.#immediate = true;
      setImmediate(this.#drainBound);
    }
    return true;
  }

  /** Per-flow counters. */
  flows(): EgressFlowView[] {
    const out: EgressFlowView[] = [];
    for (const [id, f] of this.#flows.entries()) {
      if (!f) continue;
      const st = this.#sched.stats(id);
      out.push({
        source: f.source,
        class: f.cls,
        frames: st.items,
        bytes: st.bytes,
        drops: f.drops,
        queued: this.#sched.queued(id),
      });
    }
    return out;
  }

  /** Drops everything queued and stops the timers. Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const [id, f] of this.#flows.entries()) {
      if (!f) continue;
      this.#sched.removeFlow(id);
      f.ring.clear();
    }
  }

  /** Sends what the scheduler allows now; then waits for the earliest time more is allowed. */
  #drain(): void {
    if (this.#closed) return;
    const now = this.#clock();
    const t = this.#target;
    for (let n = 0; n < 512; n++) {
      if (t.queued >= this.#backlog) {
        // The target is behind (its socket is slower than the shaped rate): look again in a millisecond.
        this.#timer = setTimeout(this.#drainBound, 1);
        return;
      }
      const id = this.#sched.dequeue(now);
      if (id === undefined) break;
      const f = this.#flows[id] as FlowState;
      const r = f.ring;
      const off = r.headOff;
      const len = r.headLen;
      const tag = r.headTag;
      t.after(t.write(r.buf, off, len, tag, f.source), r.buf, off, len, tag);
      r.shift();
    }
    if (this.#sched.size === 0) return;
    const at = this.#sched.nextAt(now);
    if (at <= now) {
      this.#immediate = true;
      setImmediate(this.#drainBound);
    } else {
      this.#timer = setTimeout(this.#drainBound, Math.max(1, at - now));
    }
  }

  #addFlow(source: number, cls: number): number {
    const need = (source + 1) * CLASS_COUNT;
    if (need > this.#flowOf.length) {
      const grown = new Int32Array(Math.max(need, this.#flowOf.length * 2)).fill(-1);
      grown.set(this.#flowOf);
      this.#flowOf = grown;
    }
    const id = this.#sched.addFlow(this.#flowOptions(source, cls));
    const ring = new FrameRing(this.#queueFrames, Math.max(this.#queueFrames * 1600, 2 * MAX_FRAME_LEN + 8));
    this.#flows[id] = { source, cls, ring, drops: 0 };
    this.#flowOf[source * CLASS_COUNT + cls] = id;
    return id;
  }

  #flowOptions(source: number, cls: number) {
    const s = this.#sources.get(source);
    if (cls === CLASS_LATENCY) return { priority: true, max: this.#latency, min: s?.min };
    return { weight: (s?.weight ?? 1) * (CLASS_WEIGHT[cls] as number), min: s?.min };
  }
}

/** A bucket depth of 50 ms at `rate`, at least 64 KiB (tokens survive a late drain). */
function latencyBurst(rate: number): number {
  return Math.max(rate / 20, 64 * 1024);
}
