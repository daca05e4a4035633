/**
 * Backpressure for a stream port (Port.hold / Port.release): the socket is
 * no longer read, and the frames the current read still holds after the
 * hold began are parked here (one copy, bounded by one read) instead of
 * being handed to the switch; at the release they go on first, in order,
 * then the socket is read again. So once held, not one more frame of the
 * peer reaches the full receiver until it has room.
 */
import { FrameArena } from '../frame-arena.js';
import type { BatchSink, FrameSink, PortContext } from '../port.js';

/**
 * Frames handed to the switch per batch after a hold, doubling per batch
 * that was not held up to the deframer's whole batch: the switch holds a
 * sender only between batches, so what one batch brings beyond a full
 * receiver's ring must fit in its backlog (as vhost-user's TX_CHUNK_MIN).
 */
const CHUNK_MIN = 32;
const CHUNK_MAX = 1024;

export class StreamHold {
  /** True while the switch holds the port. */
  held = false;
  /** Times it was held. */
  holds = 0;
  /** Frames parked: read after the hold began (made at the first hold). */
  #parked: FrameArena | undefined;
  readonly #ctx: PortContext;
  readonly #bytes: number;
  readonly #pause: () => void;
  readonly #resume: () => void;
  #replaying: NodeJS.Immediate | undefined;
  readonly #replayBound = (): void => this.#replay();
  /** Frames per batch handed on (CHUNK_MIN after a hold, doubling to CHUNK_MAX). */
  #chunk = CHUNK_MIN;
  /** Offset, length pairs of a part of a batch. */
  readonly #part = new Uint32Array(2 * CHUNK_MAX);
  /** The sink to hand the deframer: the switch's, or the parking lot while held. */
  readonly sink: FrameSink;
  /** Likewise for batches (undefined when the port has no batch sink). */
  readonly sinkBatch: BatchSink | undefined;

  /**
   * @param readBytes most bytes one read brings (the parking lot holds that and one more frame)
   * @param pause stop reading the socket
   * @param resume read the socket again
   */
  constructor(ctx: PortContext, readBytes: number, pause: () => void, resume: () => void) {
    this.#ctx = ctx;
    this.#bytes = readBytes + ctx.maxFrameLen;
    this.#pause = pause;
    this.#resume = resume;
    this.sink = (buf, off, len) => {
      if (this.#waiting()) this.#park(buf, off, len);
      else ctx.sink(buf, off, len);
    };
    const batch = ctx.sinkBatch;
    this.sinkBatch =
      batch === undefined
        ? undefined
        : (buf, frames, count) => {
            if (!this.#waiting() && count <= this.#chunk) {
              batch(buf, frames, count);
              this.#grow();
            } else this.#split(batch, buf, frames, count);
          };
  }

  /** Hands a batch on in parts of at most #chunk frames; parks the rest once held. */
  #split(batch: BatchSink, buf: Buffer, frames: Uint32Array, count: number): void {
    let k = 0;
    while (k < count && !this.#waiting()) {
      const n = Math.min(count - k, this.#chunk);
      const part = this.#part;
      for (let j = 0; j < 2 * n; j++) part[j] = frames[2 * k + j] as number;
      batch(buf, part, n);
      k += n;
      this.#grow();
    }
    for (; k < count; k++) this.#park(buf, frames[2 * k] as number, frames[2 * k + 1] as number);
  }

  #grow(): void {
    this.#chunk = this.held ? CHUNK_MIN : Math.min(2 * this.#chunk, CHUNK_MAX);
  }

  /** Frames parked and not yet handed on. */
  get parked(): number {
    return this.#parked?.queued ?? 0;
  }

  #waiting(): boolean {
    return this.held || (this.#parked !== undefined && this.#parked.queued > 0);
  }

  #park(buf: Buffer, off: number, len: number): void {
    // At most one read's worth arrives after the hold (the socket is paused): the arena fits it.
    this.#parked ??= new FrameArena(Math.ceil(this.#bytes / 16), this.#bytes);
    if (!this.#parked.push(buf, off, len)) this.#ctx.sink(buf, off, len);
  }

  /** Port.hold. */
  hold(): void {
    if (this.held) return;
    this.held = true;
    this.holds++;
    this.#pause();
  }

  /** Port.release: the parked frames go on next turn (not inside the receiver's call), then reading. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.#replaying ??= setImmediate(this.#replayBound);
  }

  #replay(): void {
    this.#replaying = undefined;
    const p = this.#parked;
    const sink = this.#ctx.sink;
    if (p !== undefined) {
      let i = p.head;
      for (; i < p.count && !this.held; i++) sink(p.buf, p.offs[i] as number, p.lens[i] as number);
      p.advance(i);
    }
    if (!this.held) this.#resume();
  }
}
