/**
 * What the batched datagram ports (udp-dgram.ts, unix-dgram.ts) share: handing
 * a recvmmsg batch to the switch, and waiting for the egress queue to drain
 * before a graceful close.
 */
import type { PortContext } from '../port.js';

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
export function deliverBatch(
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
 * Resolves when the port calls the callback given to `setDrained` (its queue
 * is empty) or after `graceMs`, whichever comes first; the callback is
 * cleared again before this resolves.
 */
export async function drainWithin(graceMs: number, setDrained: (fn: (() => void) | undefined) => void): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, graceMs);
    setDrained(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  setDrained(undefined);
}
