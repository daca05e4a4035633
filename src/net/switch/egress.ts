/**
 * Egress, the last stage: a frame to one port, with the port's VLAN tag
 * inserted, cut into segments (or its checksum completed) in software for a
 * port without offloads, queued in the port's shaped egress when it has one,
 * else handed to the transport; counted and captured (tx).
 *
 * Within a batch, the plain frames to a port that takes batches are collected
 * and written with one writeBatch per port at the end of the batch (or when
 * BATCH_MAX are waiting, or before any other frame to that port, so each
 * port's order is the order of the batch).
 *
 * Frames reach transports in exactly two places: {@link Egress.deliver}
 * (Port.write) and {@link Egress.#writeBatch} (Port.writeBatch). The batch
 * being forwarded is described by one reusable object, {@link Egress.batch}
 * (its source port and buffer): what a per-batch context handed to those two
 * calls carries.
 */
import type { Logger } from '../../log.js';
import { pushTag, VLAN_HLEN } from '../frame/vlan.js';
import type { Segmenter } from '../offload/segmenter.js';
import { OffloadMeta } from '../offload/vnet-hdr.js';
import { type BatchResult, MAX_FRAME_LEN, type Port, WriteResult } from '../port.js';
import type { Capture } from './capture.js';
import { type FrameCursor, shiftOffsets } from './checks.js';
import type { Hold } from './hold.js';
import type { EgressTarget } from './qos-egress.js';
import { offloadDrop, type SwitchPort } from './switch-port.js';

/** Frames of one batch a destination port collects before they are written (then it starts again). */
const BATCH_MAX = 256;
const NO_BUFFER = Buffer.alloc(0);

/** The batch being forwarded. One object per switch, refilled by {@link Egress.begin} and {@link Egress.end}. */
export class EgressBatch {
  /** The port the batch came from (undefined between batches). */
  source: SwitchPort | undefined;
  /** The buffer its frames lie in. */
  buf: Buffer = NO_BUFFER;
  /** Frames are collected per destination port (batches of more than one frame). */
  collect = false;
}

export class Egress {
  /** The batch being forwarded (one object, reused). */
  readonly batch = new EgressBatch();
  /** Ports holding collected frames of the current batch: the first {@link #pendingN} entries (a count, not the array's length: setting an array's length is a runtime call). */
  readonly #pending: SwitchPort[] = [];
  #pendingN = 0;
  readonly #res: BatchResult = { ok: 0, bytes: 0, full: 0, down: 0, blocked: 0 };
  /** Scratch for a frame given an 802.1Q tag; ports copy synchronously. */
  readonly #scratch = Buffer.allocUnsafe(MAX_FRAME_LEN + VLAN_HLEN);
  /** Metadata of a frame given a VLAN tag (offsets moved by the tag). */
  readonly #taggedMeta = new OffloadMeta();

  constructor(
    readonly cur: FrameCursor,
    readonly seg: Segmenter,
    readonly capture: Capture,
    readonly clock: () => number,
    readonly log: Logger,
    /** Backpressure: the batch context every write gets, and who was full (hold.ts). */
    readonly hold: Hold,
  ) {}

  /**
   * Starts a batch of `count` frames in `buf` from `src`. What an enclosing
   * batch collected (a port that fed the switch from within a write) is
   * written first; {@link end} gives that batch back its state.
   */
  begin(src: SwitchPort, buf: Buffer, count: number): void {
    this.#flush();
    const b = this.batch;
    b.source = src;
    b.buf = buf;
    b.collect = count > 1;
  }

  /** Ends a batch: writes what was collected, then restores the enclosing batch's state (or none). */
  end(src: SwitchPort | undefined, buf: Buffer, collect: boolean): void {
    this.#flush();
    const b = this.batch;
    b.source = src;
    b.buf = buf;
    b.collect = collect;
  }

  /**
   * A frame to port `o`, tagged with `vid` (0: untagged). A frame with
   * offload metadata goes whole to a port that takes offloads, and is cut into
   * segments (or has its checksum completed) in software for any other port.
   */
  output(o: SwitchPort, vid: number, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): void {
    if (meta === undefined) {
      this.#one(o, vid, buf, off, len, undefined);
      return;
    }
    const c = o.counters;
    // A shaped port queues plain frames (its queues keep no metadata): large segments are cut for it.
    if (o.port.offloads === true && o.egress === undefined) {
      let m = meta;
      if (vid !== 0) {
        // The tag inserted after the MACs moves every header offset by 4.
        m = this.#taggedMeta;
        m.copyFrom(meta);
        shiftOffsets(m, VLAN_HLEN);
      }
      if (this.#one(o, vid, buf, off, len, m) && meta.isGso) c.txGso++;
      return;
    }
    const seg = this.seg;
    if (!seg.start(buf, off, len, meta)) {
      // Checked at ingress; only a port changing the bytes under the switch gets here.
      offloadDrop(o, seg.reason, this.log, this.clock());
      return;
    }
    if (meta.isGso) o.counters.txSegmented++;
    else o.counters.txCsum++;
    for (let l = seg.next(); l > 0; l = seg.next()) this.#one(o, vid, seg.out, 0, l, undefined);
  }

  /** One frame to one port; true when it was queued (or collected). */
  #one(o: SwitchPort, vid: number, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): boolean {
    let b = buf;
    let p = off;
    let l = len;
    if (vid !== 0) {
      b = this.#scratch;
      l = pushTag(buf, off, len, vid, b);
      p = 0;
    }
    if (o.egress !== undefined) {
      // Shaped (never with metadata, see output): the frame waits in its (source, class) flow; counted when it leaves.
      if (o.egress.enqueue(this.batch.source?.id ?? 0, this.cur.cls, b, p, l, o.egressTag)) return true;
      o.counters.queue_full++;
      return false;
    }
    if (b === this.batch.buf && this.collects(o, vid, meta)) {
      this.collect(o, p, l);
      return true;
    }
    // Frames collected for this port go first: each port's order is the batch's.
    if (o.batchN !== 0) this.#writeBatch(o);
    return this.sent(o, this.deliver(o, b, p, l, meta), b, p, l, meta);
  }

  /**
   * True when the plain frames of the current batch to `o` (tagged `vid`,
   * with `meta`) are collected for one writeBatch: a batch of more than one
   * frame, untagged, no metadata, a port with writeBatch, not shaped, not
   * captured. Depends on the port, so the batch loop asks once per destination.
   */
  collects(o: SwitchPort, vid: number, meta: OffloadMeta | undefined): boolean {
    return (
      this.batch.collect &&
      vid === 0 &&
      meta === undefined &&
      o.egress === undefined &&
      o.port.writeBatch !== undefined &&
      o.taps.length === 0
    );
  }

  /** Collects frame `batch.buf[off .. off+len)` for `o` (when {@link collects} said so). */
  collect(o: SwitchPort, off: number, len: number): void {
    let f = o.batchFrames;
    if (f === undefined) f = o.batchFrames = new Uint32Array(2 * BATCH_MAX);
    if (o.batchN === 0) this.#pending[this.#pendingN++] = o;
    else if (o.batchN === BATCH_MAX) this.#writeBatch(o);
    f[2 * o.batchN] = off;
    f[2 * o.batchN + 1] = len;
    o.batchN++;
  }

  /** Hands one frame to a port's transport (the one Port.write call of the switch). */
  deliver(o: SwitchPort, b: Buffer, off: number, len: number, meta: OffloadMeta | undefined): WriteResult {
    const r = o.port.write(b, off, len, meta, this.hold.ctx);
    this.hold.wrote(o, r, 1);
    return r;
  }

  /** Writes the frames collected for `o` (the one Port.writeBatch call of the switch) and counts them. */
  #writeBatch(o: SwitchPort): void {
    const n = o.batchN;
    o.batchN = 0;
    const r = this.#res;
    r.ok = r.bytes = r.full = r.down = r.blocked = 0;
    (o.port.writeBatch as NonNullable<Port['writeBatch']>)(
      this.batch.buf,
      o.batchFrames as Uint32Array,
      n,
      r,
      this.hold.ctx,
    );
    this.hold.wroteBatch(o, r);
    const c = o.counters;
    c.txFrames += r.ok;
    c.txBytes += r.bytes;
    c.queue_full += r.full;
    c.down += r.down;
  }

  /** Writes what every port collected in the current batch. */
  #flush(): void {
    const ps = this.#pending;
    const n = this.#pendingN;
    this.#pendingN = 0;
    for (let i = 0; i < n; i++) {
      const o = ps[i] as SwitchPort;
      if (o.batchN !== 0) this.#writeBatch(o);
    }
  }

  /** Counts one frame handed to `o`'s transport (and captures it); true when it was queued. */
  sent(o: SwitchPort, r: WriteResult, b: Buffer, off: number, len: number, meta: OffloadMeta | undefined): boolean {
    const c = o.counters;
    // FULL: queued, and the port will announce room (backpressure).
    if (r === WriteResult.OK || r === WriteResult.FULL) {
      c.txFrames++;
      c.txBytes += len;
      if (o.taps.length !== 0) this.capture.frames(o, b, off, len, meta, 'tx');
      return true;
    }
    if (r === WriteResult.QUEUE_FULL) c.queue_full++;
    else c.down++;
    return false;
  }

  /** Where the shaped egress of port `o` sends the frames its scheduler lets go. */
  shapedTarget(o: SwitchPort): EgressTarget {
    return {
      write: (b, off, len) => this.deliver(o, b, off, len, undefined),
      get queued() {
        return o.port.queued;
      },
      after: (r, b, off, len) => {
        this.sent(o, r, b, off, len, undefined);
      },
    };
  }
}
