/**
 * Aggregation of one link connection's egress (Menon: per-packet cost
 * dominates, so carry many frames per kernel write).
 *
 * {@link LinkEgress.frame} copies a frame with its record header into the
 * pending batch; the batch goes to the socket as ONE write when the code
 * that switched it returns (a pre-bound process.nextTick: every frame of one
 * read batch from a port, or of one read from another link, shares the
 * write, and a lone frame leaves at once instead of waiting for the rest of
 * the event-loop turn), or at once when it holds FLUSH_BYTES so the peer
 * works in parallel with a long burst.
 *
 * While the socket reports backpressure, frames collect in the batch; a
 * full batch joins the socket's own queue (which writes all it holds with one
 * writev on 'drain') and the next frames go to a fresh batch, so nothing is
 * copied twice. Beyond the byte bound (batch plus the socket's unwritten
 * bytes) frames are dropped: the switch drops, it does not buffer without
 * bound.
 *
 * Batch buffers come back to a pool when their write completes (write
 * callbacks run in order, one pre-bound callback and a FIFO: nothing
 * allocated per write), so a steady flow copies into the same few buffers,
 * warm in the cache, instead of fresh pages the kernel must fault in (and
 * that V8 counts as external memory, forcing collections).
 */
import type { Writable } from 'node:stream';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import { WriteResult } from '../ports/port.js';
import { HEADER_LEN, OFFLOAD_HLEN, TYPE_FRAME, TYPE_FRAME_OFFLOAD, writeHeader, writeOffloadHeader } from './codec.js';

/** Size of a batch buffer, bytes: larger than any frame record. */
const BATCH_BYTES = 256 * 1024;
/** A batch this large is written at once instead of when switching returns (about three 64 KB segments: fewer, larger writes; measured 5-10% less CPU per byte than one segment per write). */
const FLUSH_BYTES = 192 * 1024;
/** Batch buffers kept for reuse (2 MB). */
const POOL_MAX = 8;
/** Default bound on bytes queued (pending batch plus the socket's unwritten bytes). */
export const DEFAULT_QUEUE_BYTES = 8 * 1024 * 1024;

export class LinkEgress {
  readonly #sock: Writable;
  readonly #limit: number;
  #batch: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
  #used = 0;
  /** Buffers handed to the socket, oldest first, and buffers free for reuse. */
  readonly #flight: Buffer[] = [];
  readonly #pool: Buffer[] = [];
  #scheduled = false;
  #blocked = false;
  #dead = false;
  /** Kernel writes issued (each a batch). */
  writes = 0;
  txFrames = 0;
  txBytes = 0;
  dropsQueueFull = 0;

  readonly #flushBound = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  readonly #onWritten = (): void => {
    const buf = this.#flight.shift();
    if (buf !== undefined && buf.length === BATCH_BYTES && this.#pool.length < POOL_MAX) this.#pool.push(buf);
  };

  readonly #onDrain = (): void => {
    this.#blocked = false;
    if (this.#used > 0) this.flush();
  };

  /**
   * @param sock the connected socket (plain or TLS)
   * @param limit bound on queued bytes; default {@link DEFAULT_QUEUE_BYTES}
   */
  constructor(sock: Writable, limit = DEFAULT_QUEUE_BYTES) {
    this.#sock = sock;
    this.#limit = limit;
    sock.on('drain', this.#onDrain);
  }

  /** Bytes accepted and not yet handed to the kernel. */
  get queuedBytes(): number {
    return this.#used + this.#sock.writableLength;
  }

  /**
   * Queues one frame record; with `meta` (a frame needing offload work), an
   * offload record (type 3) carrying it. Only for a peer that announced offloads.
   */
  frame(vni: number, buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    if (this.#dead) return WriteResult.DOWN;
    const ohl = meta === undefined ? 0 : OFFLOAD_HLEN;
    const need = HEADER_LEN + ohl + len;
    if (this.#used + this.#sock.writableLength + need > this.#limit) {
      this.dropsQueueFull++;
      return WriteResult.QUEUE_FULL;
    }
    if (BATCH_BYTES - this.#used < need) this.#handOver();
    if (meta === undefined) writeHeader(this.#batch, this.#used, len, TYPE_FRAME, vni);
    else {
      writeHeader(this.#batch, this.#used, OFFLOAD_HLEN + len, TYPE_FRAME_OFFLOAD, vni);
      writeOffloadHeader(this.#batch, this.#used + HEADER_LEN, meta);
    }
    buf.copy(this.#batch, this.#used + HEADER_LEN + ohl, off, off + len);
    this.#used += need;
    this.txFrames++;
    this.txBytes += len;
    this.#kick();
    return WriteResult.OK;
  }

  /** Queues an encoded record (control messages), in order with the frames. */
  raw(rec: Buffer): boolean {
    if (this.#dead) return false;
    if (BATCH_BYTES - this.#used < rec.length) this.#handOver();
    if (rec.length > BATCH_BYTES) {
      // A control record larger than a batch (the peer refuses it anyway): as it is, in order.
      this.writes++;
      this.#flight.push(rec);
      if (!this.#sock.write(rec, this.#onWritten)) this.#blocked = true;
      return true;
    }
    rec.copy(this.#batch, this.#used);
    this.#used += rec.length;
    this.#kick();
    return true;
  }

  #kick(): void {
    if (this.#blocked) return;
    if (this.#used >= FLUSH_BYTES) {
      this.flush();
      return;
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flushBound);
    }
  }

  /** Hands the pending batch to the socket now, unless it is blocked. */
  flush(): void {
    if (this.#dead || this.#blocked || this.#used === 0) return;
    this.#handOver();
  }

  /** Stops using the socket; pending bytes are dropped. */
  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#used = 0;
    this.#sock.off('drain', this.#onDrain);
  }

  /**
   * Writes the pending batch (also while blocked: the socket queues it and
   * writes its queue in one writev on 'drain') and starts a fresh one.
   */
  #handOver(): void {
    if (this.#used === 0) return;
    const batch = this.#batch;
    const out = batch.subarray(0, this.#used);
    // The socket keeps the batch until written: take another (it comes back in #onWritten).
    this.#batch = this.#pool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    this.writes++;
    this.#flight.push(batch);
    if (!this.#sock.write(out, this.#onWritten)) this.#blocked = true;
  }
}
