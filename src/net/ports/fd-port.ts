/**
 * What the fd-based ports (tap.ts, host.ts, udp-dgram.ts, unix-dgram.ts)
 * share, as a helper object each port owns: the port state and its report to
 * the switch, the flush scheduled once per event-loop turn, the batch
 * counters of describe(), and the order of teardown (cancel the flush, drop
 * the egress, release the port's own fds and pollers, report `closed`).
 *
 * The hot paths read and write its fields directly (`core.scheduled`,
 * `core.rxFrames += count`): no extra call per frame.
 */
import { closeSync } from 'node:fs';
import type { Poller } from '../../native/index.js';
import type { FrameArena } from '../frame-arena.js';
import type { PortContext, PortState } from '../port.js';

export class FdPortCore {
  /** The state the port reports (Port.state). */
  state: PortState = 'closed';
  /** Set once by teardown; the port cannot be opened again. */
  closed = false;
  /** The flush set up for the end of this event-loop turn, if any. */
  scheduled: NodeJS.Immediate | undefined;
  /** The last error met, for describe() ('' for none). */
  lastError = '';
  rxFrames = 0;
  rxBatches = 0;
  txFrames = 0;
  txBatches = 0;
  /** The port's flush, bound once (for setImmediate). */
  readonly flushBound: () => void;
  readonly #ctx: PortContext;
  readonly #tx: FrameArena;

  /**
   * @param ctx the port's context (onState is called on every state change)
   * @param tx the port's egress queue (cleared at teardown)
   * @param flush the port's flush; it must set `scheduled` back to undefined
   */
  constructor(ctx: PortContext, tx: FrameArena, flush: () => void) {
    this.#ctx = ctx;
    this.#tx = tx;
    this.flushBound = flush;
  }

  setState(state: PortState, reason: string): void {
    this.state = state;
    this.#ctx.onState(state, reason);
  }

  /** Cancels the scheduled flush (before flushing at once, or at teardown). */
  cancelFlush(): void {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  /** The batch counters of describe(). */
  counters(): { rx_frames: number; rx_batches: number; tx_frames: number; tx_batches: number } {
    return {
      rx_frames: this.rxFrames,
      rx_batches: this.rxBatches,
      tx_frames: this.txFrames,
      tx_batches: this.txBatches,
    };
  }

  /**
   * Closes the port once: cancels the flush, drops the egress queue, calls
   * `release` (the port closes its own pollers and fds), then reports
   * `closed` with `reason` unless the port never came up. Idempotent.
   */
  teardown(reason: string, release: () => void): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelFlush();
    this.#tx.clear();
    release();
    if (this.state !== 'closed') this.setState('closed', reason);
  }
}

/** The reason destroy(err) reports. */
export function destroyReason(err?: Error): string {
  return err ? `destroyed: ${err.message}` : 'destroyed';
}

/** Closes a poller and its fd (if open); returns -1 for the fd field. */
export function releaseFd(poller: Poller | undefined, fd: number): number {
  poller?.close();
  if (fd >= 0) closeSync(fd);
  return -1;
}
