/**
 * Backpressure of a vhost-user device (docs/vhost-user.md "Backpressure"),
 * both ends of it, behind the Port contract (net/port.ts):
 *
 * - As a receiver ({@link RxFlow}): a frame that has to wait in the receive
 *   backlog (the guest's receive ring is full) is answered
 *   WriteResult.FULL, and the device promises to announce room
 *   (PortContext.onRoom) when its backlog is empty again. A guest that takes
 *   no frame for its hold time (port option hold_ms) is given up on: the
 *   device announces room at once and answers OK (then QUEUE_FULL, a drop,
 *   when the backlog is full) until its backlog has drained.
 * - As a sender ({@link TxPause}): the switch holds the device (Port.hold)
 *   when every frame of a transmit batch went to full receivers; the device
 *   stops reading its transmit rings, so the frames wait in the sending
 *   guest's ring, until the switch releases it (Port.release).
 *
 * Which senders wait for which receiver is the switch's business
 * (net/switch/hold.ts): a device knows no other device.
 */
import { WriteResult } from '../port.js';

/** How long a receiver that takes no frame from its backlog holds up its senders by default (ms). */
export const DEFAULT_HOLD_MS = 100;

/** The receiving side: when to say FULL, and when to announce room. */
export class RxFlow {
  readonly #holdMs: number;
  readonly #progress: () => number;
  readonly #announce: () => void;
  #timer: NodeJS.Timeout | undefined;
  /** progress() when the timer was armed: no change by the time it fires means no progress. */
  #mark = 0;
  /** Said FULL since the last announcement: owes one. */
  #owe = false;
  /** Took nothing for its hold time: says FULL to nobody until its backlog drains. */
  #stalled = false;

  /**
   * @param holdMs how long the guest may take nothing while senders wait (ms); 0: never say FULL
   * @param progress frames delivered into the guest so far (a counter)
   * @param announce PortContext.onRoom
   */
  constructor(holdMs: number, progress: () => number, announce: () => void) {
    this.#holdMs = holdMs;
    this.#progress = progress;
    this.#announce = announce;
  }

  /** A frame was put in the backlog: FULL (room will be announced), or OK when backpressure is off or given up. */
  queued(): WriteResult {
    if (this.#holdMs === 0 || this.#stalled) return WriteResult.OK;
    this.#owe = true;
    if (this.#timer === undefined) this.#arm();
    return WriteResult.FULL;
  }

  #arm(): void {
    this.#mark = this.#progress();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#owe) return;
      if (this.#progress() !== this.#mark) {
        this.#arm(); // slow, not stuck
        return;
      }
      this.#stalled = true;
      this.#pay();
    }, this.#holdMs);
    this.#timer.unref();
  }

  /** The backlog is empty (drained, or cleared because the ring went away): room again. */
  drained(): void {
    this.#stalled = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pay();
  }

  #pay(): void {
    if (!this.#owe) return;
    this.#owe = false;
    this.#announce();
  }
}

/** The sending side: a device the switch holds reads none of its transmit rings. */
export class TxPause {
  /** True while held. */
  paused = false;
  /** Times it was held. */
  pauses = 0;
  readonly #resume: () => void;

  /** @param resume called on release: read the transmit rings again */
  constructor(resume: () => void) {
    this.#resume = resume;
  }

  /** Port.hold. */
  hold(): void {
    if (this.paused) return;
    this.paused = true;
    this.pauses++;
  }

  /** Port.release. */
  release(): void {
    if (!this.paused) return;
    this.paused = false;
    this.#resume();
  }
}
