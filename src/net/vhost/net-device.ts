/**
 * virtio-net over a vhost-user session (virtio 1.2 §5.1.6): frames the
 * guest transmits (odd queues) go to the switch's sink (net-transmit.ts);
 * frames the switch writes go straight into the guest's receive buffers
 * (queue 0, net-receive.ts). One copy per frame, guest memory to guest
 * memory between two vhost-user ports.
 *
 * Every frame carries a 12-byte virtio_net_hdr_v1. Its offload fields
 * (checksum, TSO) are read and written by net-offload.ts.
 *
 * Backpressure goes through the Port contract (net-flow.ts): a full receive
 * ring says FULL and announces room; the switch holds senders. Interrupts are
 * sent once per event-loop turn at most, and only when the guest wants one
 * (§2.7.10).
 */

import { RARP_REQUEST_REVERSE, writeArp } from '../frame/arp.js';
import { BROADCAST_MAC, ETH_HLEN, ETHERTYPE_RARP, macAt, writeEthHeader } from '../frame/ethernet.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { BatchContext, BatchResult } from '../port.js';
import { WriteResult } from '../port.js';
import { VirtqueueError } from './errors.js';
import type { NetDeviceContext, NetDeviceCore } from './net-core.js';
import { VhostOffloads } from './net-offload.js';
import { VhostReceive } from './net-receive.js';
import { VhostTransmit } from './net-transmit.js';
import type { VhostSession } from './session.js';
import type { Virtqueue } from './virtqueue.js';

export { DEFAULT_HOLD_MS } from './net-flow.js';

export class VhostNetDevice implements NetDeviceCore {
  /** @internal the session, for the transmit and receive parts */
  readonly session: VhostSession;
  /** @internal */
  readonly ctx: NetDeviceContext;
  readonly #tx: VhostTransmit;
  readonly #rx: VhostReceive;
  /** Rings (bit = ring index) that published used entries this turn and may need an interrupt. */
  #callMask = 0;
  #scheduled: NodeJS.Immediate | undefined;
  /** Transmit rings (bit = ring index) with work left over for the next turn. */
  #txAgain = 0;
  /** The receive ring frames go to: the lowest-numbered ready one (queue pair 0 unless the guest disabled it). */
  #rxq: Virtqueue | undefined;
  readonly #turnBound = (): void => this.#turn();
  #dead = false;
  /** Negotiated offloads and the header reads and writes. */
  readonly offloads = new VhostOffloads();
  // counters
  rxFrames = 0;
  txFrames = 0;
  rxDropped = 0;
  calls = 0;
  kicks = 0;

  constructor(session: VhostSession, ctx: NetDeviceContext) {
    this.session = session;
    this.ctx = ctx;
    this.#tx = new VhostTransmit(this, ctx.maxFrameLen);
    this.#rx = new VhostReceive(this, ctx.maxFrameLen, ctx.queueLen, ctx.holdMs, ctx.onRoom);
  }

  /** True when the guest's receive ring can take frames. */
  get rxReady(): boolean {
    return this.#rxq !== undefined && !this.#dead;
  }

  /** @internal the receive ring, if any */
  get rxq(): Virtqueue | undefined {
    return this.#rxq;
  }

  /** @internal true once stopped */
  get dead(): boolean {
    return this.#dead;
  }

  /** Frames waiting for receive buffers. */
  get queued(): number {
    return this.#rx.queued;
  }

  /** True while the switch holds this device's transmit rings (a full receiver). */
  get paused(): boolean {
    return this.#tx.pause.paused;
  }

  /** Times this device's transmit rings were held by a full receiver. */
  get txPauses(): number {
    return this.#tx.pause.pauses;
  }

  /** A kick (or ring start) on ring `q`. */
  kick(q: Virtqueue): void {
    if (this.#dead) return;
    this.kicks++;
    if (q.index & 1) this.#tx.run(q);
    else if (q === this.#rxq) this.#rx.drain(q);
  }

  /** Rings changed: pick the receive ring again; drop the backlog when there is none. */
  ringsChanged(): void {
    this.offloads.setFeatures(this.session.features);
    this.#rxq = undefined;
    for (const q of this.session.rings) {
      if ((q.index & 1) === 0) q.mrgRx = this.session.mrg;
      if ((q.index & 1) === 0 && q.ready) {
        this.#rxq = q;
        break;
      }
    }
    if (!this.rxReady) this.rxDropped += this.#rx.clear();
  }

  /** Stops all work (session closed); senders held for this device go on. */
  stop(): void {
    this.#dead = true;
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    this.#rx.clear();
  }

  /** Port.write of the vhost-user port. `meta` only for frames the guest's offloads accept (VhostOffloads.accepts). */
  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta, batch?: BatchContext): WriteResult {
    const q = this.#rxq;
    if (this.#dead || q === undefined || !q.ready) return WriteResult.DOWN;
    return this.#rx.write(q, buf, off, len, meta, batch);
  }

  /** Port.writeBatch of the vhost-user port. */
  writeBatch(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    const q = this.#rxq;
    if (this.#dead || q === undefined || !q.ready) res.down += count;
    else this.#rx.writeBatch(q, buf, frames, count, res);
  }

  /** Port.hold: read no transmit ring until {@link release}. */
  hold(): void {
    this.#tx.hold();
  }

  /** Port.release. */
  release(): void {
    this.#tx.pause.release();
  }

  /** @internal released: every ready transmit ring is read again next turn. */
  txResume(): void {
    if (this.#dead) return;
    const rings = this.session.rings;
    for (let i = 1; i < rings.length; i += 2) if ((rings[i] as Virtqueue).ready) this.#txAgain |= 1 << i;
    this.#schedule();
  }

  /** @internal transmit ring `q` has work left for the next turn. */
  txAgain(q: Virtqueue): void {
    this.#txAgain |= 1 << q.index;
  }

  /** @internal the guest broke the ring protocol. */
  fail(msg: string): void {
    this.failWith(new VirtqueueError(msg));
  }

  /** @internal */
  failWith(err: Error): void {
    if (this.#dead) return;
    this.stop();
    this.ctx.onError(err);
  }

  /** @internal runs {@link #turn} once this event-loop turn. */
  schedule(): void {
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled === undefined && !this.#dead) this.#scheduled = setImmediate(this.#turnBound);
  }

  // ---- once per event-loop turn: interrupts, carried-over work ----

  #turn(): void {
    this.#scheduled = undefined;
    if (this.#dead) return;
    const rings = this.session.rings;
    const rx = this.#rxq;
    if (this.#rx.queued > 0 && rx?.ready) this.#rx.drain(rx);
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
      if ((again >>> i) & 1 && q.ready && !this.#dead) this.#tx.run(q);
    }
    // Frames still waiting for receive buffers: the receive kick brings us back (no busy loop).
  }

  /** @internal used entries were published on `q`: the guest gets an interrupt at the end of this turn if it asked. */
  published(q: Virtqueue): void {
    this.#callMask |= 1 << q.index;
    this.#schedule();
  }

  #call(q: Virtqueue): void {
    this.calls++;
    this.session.call(q);
  }
}

/** Length of the RARP announce: the Ethernet minimum without FCS. */
const RARP_FRAME_LEN = 60;

/**
 * A RARP announcement (RFC 903, as QEMU's qemu_announce_self builds it) for
 * `mac` (6 bytes): broadcast, "request reverse" with `mac` as sender and
 * target hardware address and zero IPv4 addresses, padded to 60 bytes.
 */
export function rarpFrame(mac: Buffer): Buffer {
  const f = Buffer.alloc(RARP_FRAME_LEN);
  const m = macAt(mac, 0);
  writeEthHeader(f, 0, BROADCAST_MAC, m, ETHERTYPE_RARP);
  writeArp(f, ETH_HLEN, RARP_REQUEST_REVERSE, m, 0, m, 0);
  return f;
}
