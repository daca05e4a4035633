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
 * On a plain TCP socket with nothing queued, writes skip Node's stream
 * machinery: a batch goes to the kernel with one native writev, and a large
 * frame (a 64 KB segment) is not even copied into the batch: its record
 * header and the frame, where the port read it, go in one writev. Whatever
 * the kernel does not take at once is copied into a batch and handed to the
 * socket's queue, and later frames queue behind it until it is written.
 *
 * Batch buffers come back to a pool when their write completes (write
 * callbacks run in order, one pre-bound callback and a FIFO: nothing
 * allocated per write), so a steady flow copies into the same few buffers,
 * warm in the cache, instead of fresh pages the kernel must fault in (and
 * that V8 counts as external memory, forcing collections).
 */

import type { Writable } from 'node:stream';
import type { DirectWrite } from '../../util/sockets.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import { WriteResult } from '../port.js';
import { HEADER_LEN, OFFLOAD_HLEN, TYPE_FRAME, TYPE_FRAME_OFFLOAD, writeHeader, writeOffloadHeader } from './codec.js';

/** Size of a batch buffer, bytes: larger than any frame record. */
const BATCH_BYTES = 256 * 1024;
/** A batch this large is written at once instead of when switching returns (about three 64 KB segments: fewer, larger writes; measured 5-10% less CPU per byte than one segment per write). */
const FLUSH_BYTES = 192 * 1024;
/** Batch buffers kept for reuse (2 MB). */
const POOL_MAX = 8;
/** Frames at least this long go out without a copy when the socket takes them at once. */
const DIRECT_MIN = 16 * 1024;
const EMPTY = Buffer.alloc(0);

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
  readonly #direct: DirectWrite | undefined;
  /** Record and offload header of a frame written directly. */
  readonly #hdr = Buffer.alloc(HEADER_LEN + OFFLOAD_HLEN);
  #scheduled = false;
  #blocked = false;
  #dead = false;
  /** Kernel writes issued (each a batch, or one large frame). */
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
   * @param direct writes straight to the socket's fd (plain TCP only: a TLS socket must encrypt)
   */
  constructor(sock: Writable, limit = DEFAULT_QUEUE_BYTES, direct?: DirectWrite) {
    this.#sock = sock;
    this.#limit = limit;
    this.#direct = direct;
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
    if (len >= DIRECT_MIN && this.#used === 0 && this.#idle()) return this.#frameDirect(vni, buf, off, len, meta);
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

  /**
   * True when a write may go straight to the fd: nothing of ours waits in
   * Node's queue or libuv, and the socket is still writable (after end() or
   * destroy() its fd may be closed, and its number reused by another file).
   */
  #idle(): boolean {
    return this.#direct !== undefined && !this.#blocked && this.#sock.writableLength === 0 && this.#sock.writable;
  }

  /** Writes header and frame with one writev, no copy; the rest, if any, through a batch. */
  #frameDirect(vni: number, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): WriteResult {
    const h = this.#hdr;
    const hl = meta === undefined ? HEADER_LEN : HEADER_LEN + OFFLOAD_HLEN;
    if (meta === undefined) writeHeader(h, 0, len, TYPE_FRAME, vni);
    else {
      writeHeader(h, 0, OFFLOAD_HLEN + len, TYPE_FRAME_OFFLOAD, vni);
      writeOffloadHeader(h, HEADER_LEN, meta);
    }
    const n = Math.max(0, (this.#direct as DirectWrite)(h, 0, hl, buf, off, len));
    this.txFrames++;
    this.txBytes += len;
    if (n === hl + len) {
      this.writes++;
      return WriteResult.OK;
    }
    // The kernel took part (or nothing): the rest goes first through the socket's queue.
    if (n < hl) h.copy(this.#batch, 0, n, hl);
    const from = Math.max(0, n - hl);
    buf.copy(this.#batch, Math.max(0, hl - n), off + from, off + len);
    this.#used = hl + len - n;
    this.#handOver(false);
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
   * Writes the pending batch: straight to the fd when idle (unless `direct`
   * is false: right after the kernel took only part of a write, its buffer is
   * full), else through the socket, also while blocked (the socket queues it
   * and writes its queue in one writev on 'drain'), starting a fresh batch.
   */
  #handOver(direct = true): void {
    if (this.#used === 0) return;
    const batch = this.#batch;
    let from = 0;
    if (direct && this.#idle()) {
      from = Math.max(0, (this.#direct as DirectWrite)(batch, 0, this.#used, EMPTY, 0, 0));
      if (from === this.#used) {
        this.writes++;
        this.#used = 0;
        return;
      }
    }
    const out = batch.subarray(from, this.#used);
    // The socket keeps the batch until written: take another (it comes back in #onWritten).
    this.#batch = this.#pool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    this.writes++;
    this.#flight.push(batch);
    if (!this.#sock.write(out, this.#onWritten)) this.#blocked = true;
  }
}
