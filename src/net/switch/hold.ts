/**
 * Backpressure in the switch: the sender of a batch whose every frame went
 * to ports that said they are full (WriteResult.FULL) is held (Port.hold:
 * a guest's transmit ring, a socket or a TAP is no longer read) until one of
 * those receivers announces room (PortContext.onRoom), instead of its
 * frames being copied into the receivers' overflow queues and dropped when
 * they fill. A receiver that gives up waiting (its hold_ms passed without it
 * taking a frame) announces room too, and drops from then on.
 *
 * A sender that also sent to a port that was not full in the last MIXED_MS
 * is not held: one slow receiver must not hold up its other traffic.
 *
 * Per frame this costs one call and two compares ({@link Hold.wrote}); the
 * per-sender bookkeeping is kept only for senders that met a full receiver
 * lately. It allocates nothing per frame; the batch context is one object.
 */
import { BatchContext, type BatchResult, type BatchSink, type FrameSink, type Port, WriteResult } from '../port.js';

/** A sender that sent to a port other than full receivers this recently (ms) is not held. */
const MIXED_MS = 10;
/** A sender's bookkeeping is dropped after this long (ms) without meeting a full receiver. */
const FORGET_MS = 1000;
/** Distinct destinations of one batch tracked; a batch to more is never held. */
const MAX_DESTS = 32;

/** The switch-side view of a port, as the hold logic needs it. */
export interface HoldPort {
  readonly port: Port;
}

/** Bookkeeping of one sender that met a full receiver lately. */
interface SenderState {
  /** Destinations it sent to lately and when (performance.now()); null: a frame that reached no port that could be full. */
  readonly recent: Map<HoldPort | null, number>;
  /** When it last met a full receiver. */
  lastFull: number;
}

export class Hold {
  /** The batch context passed down with every write of the batch being forwarded. */
  readonly ctx = new BatchContext();
  #depth = 0;
  #sender: HoldPort | undefined;
  #count = 0;
  #frames = 0;
  #anyFull = false;
  readonly #dests: (HoldPort | undefined)[] = new Array(MAX_DESTS).fill(undefined);
  readonly #destFull = new Uint8Array(MAX_DESTS);
  #nDests = 0;
  #overflow = false;
  #last: HoldPort | undefined;
  #lastAt = 0;
  readonly #senders = new Map<HoldPort, SenderState>();
  /** Receiver -> the senders held for it. */
  readonly #waiters = new Map<HoldPort, Set<HoldPort>>();

  /** Wraps the switch's ingress of `sp`: each frame is a batch of one. */
  sink(sp: HoldPort, ingress: FrameSink): FrameSink {
    return (buf, off, len, meta) => {
      this.begin(sp, buf, 1);
      try {
        ingress(buf, off, len, meta);
      } finally {
        this.end();
      }
    };
  }

  /** Wraps the switch's batch ingress of `sp`. */
  batchSink(sp: HoldPort, ingress: BatchSink): BatchSink {
    return (buf, frames, count) => {
      this.begin(sp, buf, count);
      try {
        ingress(buf, frames, count);
      } finally {
        this.end();
      }
    };
  }

  /** A batch of `count` frames from `sp`, lying in `src`, starts. Nested batches (a port answering inside a write) are part of the outer one. */
  begin(sp: HoldPort, src: Buffer, count: number): void {
    if (this.#depth++ !== 0) return;
    this.ctx.begin(sp.port, src);
    this.#sender = sp;
    this.#count = count;
    this.#frames = 0;
    this.#anyFull = false;
    this.#nDests = 0;
    this.#overflow = false;
    this.#last = undefined;
  }

  /** `n` frames of the batch were handed to `dst`'s port, with result `r` (for a batch: FULL when any was). */
  wrote(dst: HoldPort, r: WriteResult, n: number): void {
    if (this.#depth !== 1) return;
    this.#frames += n;
    let at = this.#lastAt;
    if (dst !== this.#last) at = this.#dest(dst);
    if (r === WriteResult.FULL) {
      this.#anyFull = true;
      if (at >= 0 && this.#destFull[at] === 0) {
        this.#destFull[at] = 1;
        this.ctx.full.push(dst.port);
      }
    } else if (r === WriteResult.DOWN) this.#frames -= n; // reached nobody
  }

  /** What one writeBatch did to `dst`. */
  wroteBatch(dst: HoldPort, res: BatchResult): void {
    // Frames refused by a full queue reached the port all the same (it is full: that is what counts here).
    const n = res.ok + res.full;
    if (n !== 0) this.wrote(dst, res.blocked > 0 ? WriteResult.FULL : WriteResult.OK, n);
  }

  /** The index of `dst` among this batch's destinations (added if new), -1 beyond MAX_DESTS. */
  #dest(dst: HoldPort): number {
    this.#last = dst;
    this.#lastAt = this.#find(dst);
    return this.#lastAt;
  }

  #find(dst: HoldPort): number {
    const ds = this.#dests;
    for (let i = 0; i < this.#nDests; i++) if (ds[i] === dst) return i;
    if (this.#nDests === MAX_DESTS) {
      this.#overflow = true;
      return -1;
    }
    const i = this.#nDests++;
    ds[i] = dst;
    this.#destFull[i] = 0;
    return i;
  }

  /** The batch ends: deferred copies are done, and the sender is held when every frame went to full receivers. */
  end(): void {
    if (--this.#depth !== 0) return;
    this.ctx.end();
    const sp = this.#sender as HoldPort;
    this.#sender = undefined;
    let st = this.#senders.size === 0 ? undefined : this.#senders.get(sp);
    if (!this.#anyFull && st === undefined) {
      this.#clearDests();
      return;
    }
    if (sp.port.hold === undefined) {
      this.#clearDests();
      return;
    }
    const now = performance.now();
    if (st === undefined) {
      st = { recent: new Map(), lastFull: now };
      this.#senders.set(sp, st);
    }
    let all = this.#anyFull && !this.#overflow && this.#frames >= this.#count;
    if (this.#frames < this.#count) st.recent.set(null, now);
    for (let i = 0; i < this.#nDests; i++) {
      st.recent.set(this.#dests[i] as HoldPort, now);
      if (this.#destFull[i] === 0) all = false;
    }
    if (this.#anyFull) st.lastFull = now;
    else if (now - st.lastFull >= FORGET_MS && !this.#isWaiting(sp)) this.#senders.delete(sp);
    // Not when it also sent elsewhere lately: to another port, or to a receiver that is not full now.
    for (const [dst, at] of st.recent) {
      if (now - at >= MIXED_MS) st.recent.delete(dst);
      else if (all && (dst === null || !this.#fullNow(dst))) all = false;
    }
    if (all) this.#hold(sp);
    this.#clearDests();
  }

  #fullNow(dst: HoldPort): boolean {
    for (let i = 0; i < this.#nDests; i++) if (this.#dests[i] === dst) return this.#destFull[i] === 1;
    return false;
  }

  #clearDests(): void {
    for (let i = 0; i < this.#nDests; i++) this.#dests[i] = undefined;
    this.#nDests = 0;
    this.#last = undefined;
  }

  #isWaiting(sp: HoldPort): boolean {
    for (const set of this.#waiters.values()) if (set.has(sp)) return true;
    return false;
  }

  #hold(sp: HoldPort): void {
    (sp.port.hold as () => void).call(sp.port);
    for (let i = 0; i < this.#nDests; i++) {
      const r = this.#dests[i] as HoldPort;
      const set = this.#waiters.get(r);
      if (set === undefined) this.#waiters.set(r, new Set([sp]));
      else set.add(sp);
    }
  }

  /** `rx` announced room (PortContext.onRoom): the senders held for it read again. */
  room(rx: HoldPort): void {
    const set = this.#waiters.get(rx);
    if (set === undefined || set.size === 0) return;
    for (const s of set) s.port.release?.();
    set.clear();
  }

  /** `sp` leaves the switch: the senders it held go on, and it is forgotten as a sender. */
  forget(sp: HoldPort): void {
    this.room(sp);
    this.#waiters.delete(sp);
    this.#senders.delete(sp);
    for (const set of this.#waiters.values()) set.delete(sp);
  }
}
