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
 * Frames from another stream port arrive in batches that still lie in that
 * port's read buffer with their length prefixes ({@link StreamEgress.writeBatch}):
 * when nothing is queued they are written from there with one writev, so a
 * byte crosses the daemon with two copies (from the kernel, to the kernel)
 * instead of three.
 *
 * One object per connection: callbacks of a dead connection cannot disturb
 * the counters of the next one.
 */
import type { Socket } from 'node:net';
import { type DirectWrite, directWriter } from '../../util/sockets.js';
import { type BatchResult, countWrite, WriteResult } from '../port.js';
import { PREFIX_LEN } from './deframer.js';

const EMPTY = Buffer.alloc(0);

/** Initial batch buffer size in bytes; batches grow while the socket is blocked. */
const BATCH_BYTES = 256 * 1024;
/** Batch buffers kept for reuse after their write completes. */
const POOL_MAX = 4;
/** A batch this large is written at once instead of at the end of the turn. */
const FLUSH_BYTES = 64 * 1024;

export class StreamEgress {
  readonly #socket: Socket;
  /** Writes straight to the socket's fd ({@link writeBatch}), if it has one and the addon is there. */
  readonly #direct: DirectWrite | undefined;
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
    this.#direct = directWriter(socket);
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

  /**
   * {@link write} for frames `frames[2k]` (offset), `frames[2k+1]` (length)
   * of `buf`. A run of frames that lie back to back in `buf`, each with its
   * length prefix already in place before it (frames another stream port
   * just read), goes to the socket's fd straight from `buf` in one write,
   * with no copy, when nothing is queued ahead of it; what the kernel does
   * not take at once is copied into the pending batch. Every other frame is
   * copied as by {@link write}.
   */
  writeBatch(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    let k = 0;
    while (k < count) {
      const off = frames[2 * k] as number;
      const len = frames[2 * k + 1] as number;
      if (off >= PREFIX_LEN && buf.readUInt32BE(off - PREFIX_LEN) === len && this.#canWriteDirect()) {
        let j = k + 1;
        let end = off + len;
        let bytes = len;
        while (j < count) {
          const o = frames[2 * j] as number;
          const l = frames[2 * j + 1] as number;
          if (o !== end + PREFIX_LEN || buf.readUInt32BE(end) !== l) break;
          end = o + l;
          bytes += l;
          j++;
        }
        const start = off - PREFIX_LEN;
        const n = (this.#direct as DirectWrite)(buf, start, end - start, EMPTY, 0, 0);
        if (n < end - start) this.#queueRest(buf, frames, k, j, start + Math.max(0, n), end);
        this.batches++;
        res.ok += j - k;
        res.bytes += bytes;
        k = j;
        continue;
      }
      countWrite(res, this.write(buf, off, len), len);
      k++;
    }
  }

  /** True when a direct write to the fd cannot overtake anything: nothing pending, nothing in the socket. */
  #canWriteDirect(): boolean {
    if (this.#direct === undefined || this.#dead || this.#blocked || this.#pendingFrames !== 0) return false;
    return this.#socket.writableLength === 0 && this.#socket.writable;
  }

  /**
   * Puts `buf[from .. end)` (the unwritten tail of a direct write: whole
   * frames with their prefixes, the first possibly cut) into the pending
   * batch, as raw bytes, counting the frames of k..j-1 that end after `from`.
   */
  #queueRest(buf: Buffer, frames: Uint32Array, k: number, j: number, from: number, end: number): void {
    let n = 0;
    for (let i = k; i < j; i++) if ((frames[2 * i] as number) + (frames[2 * i + 1] as number) > from) n++;
    const need = end - from;
    if (this.#batch.length - this.#used < need) this.#makeRoom(need);
    buf.copy(this.#batch, this.#used, from, end);
    this.#used += need;
    this.#pendingFrames += n;
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flushBound);
    }
  }

  /**
   * Hands the pending batch to the socket now, unless it is blocked. When
   * nothing is queued in the socket, the batch goes to the fd in one native
   * write and the buffer is kept for the next batch; only what the kernel
   * does not take at once goes through the socket's queue.
   */
  flush(): void {
    if (this.#dead || this.#blocked || this.#pendingFrames === 0) return;
    const batch = this.#batch;
    const frames = this.#pendingFrames;
    const bytes = this.#used;
    let from = 0;
    if (this.#direct !== undefined && this.#socket.writableLength === 0 && this.#socket.writable) {
      const n = this.#direct(batch, 0, bytes, EMPTY, 0, 0);
      this.batches++;
      if (n >= bytes) {
        this.#used = 0;
        this.#pendingFrames = 0;
        return;
      }
      // Short write: the rest (whole frames but the first) goes through the socket; an error is reported there.
      if (n > 0) from = n;
    }
    this.#batch = this.#pool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    this.#pendingFrames = 0;
    this.#flightFrames.push(frames);
    this.#flightBufs.push(batch);
    this.#flightBytes.push(bytes - from);
    this.#flightTotalBytes += bytes - from;
    this.#inflight += frames;
    if (from === 0) this.batches++;
    // One subarray per batch (not per frame): the socket keeps it until written.
    if (!this.#socket.write(batch.subarray(from, bytes), this.#onWritten)) this.#blocked = true;
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
