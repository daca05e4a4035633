/**
 * Egress batching for one stream connection (QEMU stream/socket framing).
 *
 * {@link StreamEgress.write} copies a frame, with its 4-byte big-endian
 * length prefix, into the pending batch. The batch is handed to the socket
 * when the code that switched the frame returns (process.nextTick with a
 * pre-bound function: every frame of one read batch from a port shares it,
 * and a lone frame leaves at once rather than at the end of the event-loop
 * turn) as ONE socket write: many frames per syscall. While the socket reports
 * backpressure (write() returned false) nothing more is written until
 * 'drain'; frames keep collecting in the batch up to the queue bound.
 *
 * The bound counts frames in the pending batch plus frames handed to the
 * socket whose write has not completed. Completed writes are tracked with a
 * FIFO of batch sizes and one pre-bound write callback (socket write
 * callbacks run in order), so no closure is allocated per frame or batch.
 * Write callbacks run a tick after the write; a burst of reads (libuv reads
 * up to 32 chunks per poll) would hit the bound before any ran, so at the
 * bound the FIFO is first reclaimed from `socket.writableLength`, which
 * Node updates as soon as bytes reach the kernel.
 *
 * A batch is handed to the socket as soon as it holds FLUSH_BYTES, so the
 * reader on the other side works in parallel with a long burst.
 *
 * One object per connection: callbacks of a dead connection cannot disturb
 * the counters of the next one.
 */
import type { Socket } from 'node:net';
import { PREFIX_LEN } from './deframer.js';
import { WriteResult } from './port.js';

/** Initial batch buffer size in bytes; batches grow while the socket is blocked. */
const BATCH_BYTES = 256 * 1024;
/** Batch buffers kept for reuse after their write completes. */
const POOL_MAX = 4;
/** A batch this large is written at once instead of at the end of the turn. */
const FLUSH_BYTES = 64 * 1024;

export class StreamEgress {
  readonly #socket: Socket;
  readonly #queueLen: number;
  /** The batch being filled. */
  #batch: Buffer;
  #used = 0;
  #pendingFrames = 0;
  /** Frames and buffers handed to the socket, oldest first (parallel FIFOs). */
  readonly #flightFrames: number[] = [];
  readonly #flightBufs: Buffer[] = [];
  readonly #flightBytes: number[] = [];
  #flightTotalBytes = 0;
  #inflight = 0;
  /** Write callbacks still to come for batches already reclaimed by #reclaim. */
  #skip = 0;
  readonly #pool: Buffer[] = [];
  #scheduled = false;
  #blocked = false;
  #dead = false;
  /** Frames dropped because the connection died with them queued. */
  lost = 0;
  /** Socket writes issued (batches). */
  batches = 0;

  readonly #flushBound = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  readonly #onWritten = (err?: Error | null): void => {
    if (this.#skip > 0) {
      this.#skip--;
      return;
    }
    const n = this.#flightFrames.shift() ?? 0;
    const buf = this.#flightBufs.shift();
    this.#flightTotalBytes -= this.#flightBytes.shift() ?? 0;
    this.#inflight -= n;
    if (err) {
      this.lost += n;
      return;
    }
    this.#recycle(buf);
  };

  readonly #onDrain = (): void => {
    this.#blocked = false;
    if (this.#pendingFrames > 0) this.flush();
  };

  /**
   * @param socket the connected socket; this object listens for its 'drain'
   * @param queueLen bound in frames (pending plus not yet written)
   */
  constructor(socket: Socket, queueLen: number) {
    this.#socket = socket;
    this.#queueLen = queueLen;
    this.#batch = Buffer.allocUnsafe(BATCH_BYTES);
    socket.on('drain', this.#onDrain);
  }

  /** Frames queued: in the pending batch, or handed to the socket and not yet written. */
  get queued(): number {
    return this.#pendingFrames + this.#inflight;
  }

  /** True while the socket reports backpressure. */
  get blocked(): boolean {
    return this.#blocked;
  }

  /** Copies `buf[off .. off+len)` with its length prefix into the pending batch. */
  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.#dead) return WriteResult.DOWN;
    if (this.#pendingFrames + this.#inflight >= this.#queueLen) {
      this.#reclaim();
      if (this.#pendingFrames + this.#inflight >= this.#queueLen) return WriteResult.QUEUE_FULL;
    }
    const need = PREFIX_LEN + len;
    if (this.#batch.length - this.#used < need) this.#makeRoom(need);
    const b = this.#batch;
    b.writeUInt32BE(len, this.#used);
    buf.copy(b, this.#used + PREFIX_LEN, off, off + len);
    this.#used += need;
    this.#pendingFrames++;
    if (this.#used >= FLUSH_BYTES && !this.#blocked) {
      this.flush();
      return WriteResult.OK;
    }
    if (!this.#scheduled && !this.#blocked) {
      this.#scheduled = true;
      process.nextTick(this.#flushBound);
    }
    return WriteResult.OK;
  }

  /** Hands the pending batch to the socket now, unless it is blocked. */
  flush(): void {
    if (this.#dead || this.#blocked || this.#pendingFrames === 0) return;
    const batch = this.#batch;
    const frames = this.#pendingFrames;
    const bytes = this.#used;
    this.#batch = this.#pool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    this.#pendingFrames = 0;
    this.#flightFrames.push(frames);
    this.#flightBufs.push(batch);
    this.#flightBytes.push(bytes);
    this.#flightTotalBytes += bytes;
    this.#inflight += frames;
    this.batches++;
    // One subarray per batch (not per frame): the socket keeps it until written.
    if (!this.#socket.write(batch.subarray(0, bytes), this.#onWritten)) this.#blocked = true;
  }

  /** Stops using the socket: pending frames are dropped (counted in {@link lost}). */
  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.lost += this.#pendingFrames;
    this.#pendingFrames = 0;
    this.#used = 0;
    this.#socket.off('drain', this.#onDrain);
  }

  /**
   * Releases batches the kernel already took: Node's writableLength counts
   * only bytes not yet written, and batches complete in order, so every
   * batch older than the newest `writableLength` bytes is done. Their write
   * callbacks, still to come, are skipped.
   */
  #reclaim(): void {
    const outstanding = this.#socket.writableLength;
    while (this.#flightFrames.length > 0 && this.#flightTotalBytes - (this.#flightBytes[0] as number) >= outstanding) {
      this.#inflight -= this.#flightFrames.shift() as number;
      this.#flightTotalBytes -= this.#flightBytes.shift() as number;
      this.#recycle(this.#flightBufs.shift());
      this.#skip++;
    }
  }

  /** Keeps normal-sized buffers for reuse; a batch grown while blocked is let go. */
  #recycle(buf: Buffer | undefined): void {
    if (buf !== undefined && buf.length === BATCH_BYTES && this.#pool.length < POOL_MAX) this.#pool.push(buf);
  }

  /** Makes room for `need` more bytes: write the batch now, or grow it while blocked. */
  #makeRoom(need: number): void {
    if (!this.#blocked && this.#pendingFrames > 0) {
      this.flush();
      if (this.#batch.length - this.#used >= need) return;
    }
    // Blocked (or a frame larger than a batch): grow. Bounded by queueLen frames.
    const grown = Buffer.allocUnsafe(Math.max(this.#batch.length * 2, this.#used + need));
    this.#batch.copy(grown, 0, 0, this.#used);
    this.#batch = grown;
  }
}
