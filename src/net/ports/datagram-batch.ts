/**
 * What the batched datagram ports (udp-dgram.ts, unix-dgram.ts) share: one
 * recvmmsg batch from their peer handed to the switch.
 */
import type { NativeAddon } from '../../native/index.js';
import type { PortContext } from '../port.js';
import type { FdPortCore } from './fd-port.js';

/** Offset, length pairs of the datagrams of one batch for `sinkBatch` (grown to the largest batch seen). */
let frames = new Uint32Array(2 * 64);

/**
 * Hands datagrams `0 .. count` of a received batch (datagram i at
 * `rx[i * slot]`, length `lens[i]`) to the sink: with `ctx.sinkBatch`, all
 * of them in one call (the switch then writes each destination once). A datagram from a stranger
 * (`strangers[i] === 1`) is reported with `strangerReason`; one longer than
 * the largest frame or its slot is reported as oversized. Returns how many
 * strangers the batch had. Hot path: nothing allocated per frame.
 */
function deliverBatch(
  ctx: PortContext,
  rx: Buffer,
  slot: number,
  lens: Uint32Array,
  strangers: Uint8Array,
  count: number,
  strangerReason: string,
): number {
  const sink = ctx.sink;
  const batch = ctx.sinkBatch;
  const max = ctx.maxFrameLen;
  let seen = 0;
  let n = 0;
  if (batch !== undefined && frames.length < 2 * count) frames = new Uint32Array(2 * count);
  for (let i = 0; i < count; i++) {
    const len = lens[i] as number;
    if (strangers[i] === 1) {
      seen++;
      ctx.onMalformed(strangerReason);
    } else if (len > max || len > slot) {
      ctx.onMalformed(`datagram of ${len} bytes exceeds the largest frame of ${max}`);
    } else if (batch !== undefined) {
      frames[2 * n] = i * slot;
      frames[2 * n + 1] = len;
      n++;
    } else {
      sink(rx, i * slot, len);
    }
  }
  if (n > 0) (batch as NonNullable<typeof batch>)(rx, frames, n);
  return seen;
}

/**
 * The receive side of a datagram port that serves one peer (udp-dgram.ts,
 * unix-dgram.ts): one recvmmsg batch from an unconnected socket, the
 * sender of each datagram compared in C, the batch to the switch through
 * {@link deliverBatch}. Strangers are counted in {@link strangers}.
 */
export class DatagramReader {
  /** Datagrams from senders other than the peer, dropped. */
  strangers = 0;
  readonly #ctx: PortContext;
  readonly #slot: number;
  readonly #lens: Uint32Array;
  readonly #from: Uint8Array;
  readonly #reason: string;

  /**
   * @param slot receive slot in bytes: the largest frame, 8-byte aligned (a longer datagram is truncated, then dropped)
   * @param batch datagrams per call at most
   * @param strangerReason what a datagram from another sender is reported as (built once, not per datagram)
   */
  constructor(ctx: PortContext, slot: number, batch: number, strangerReason: string) {
    this.#ctx = ctx;
    this.#slot = slot;
    this.#lens = new Uint32Array(batch);
    this.#from = new Uint8Array(batch);
    this.#reason = strangerReason;
  }

  /** One batch from `core.fd` (from `peer`) in `rx` to the sink. Throws what recvmmsg throws. Hot path. */
  read(core: FdPortCore, rx: Buffer, peer: string | Buffer): void {
    const lens = this.#lens;
    const from = this.#from;
    const count = (core.n as NativeAddon).recvBatchFrom(core.fd, rx, this.#slot, lens, peer, from);
    core.rxBatches++;
    core.rxFrames += count;
    this.strangers += deliverBatch(this.#ctx, rx, this.#slot, lens, from, count, this.#reason);
  }
}
