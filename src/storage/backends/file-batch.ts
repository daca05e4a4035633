/**
 * Gathers the positional writes (or reads) a file backend is asked for in one
 * turn of the event loop and hands them to the native addon as one batch: one
 * hand-off to its I/O threads for all of them (fileBatch). NBD clients send
 * requests in bursts (a queue depth of 16 arrives in one socket read), and
 * with one libuv pool trip per 4 KiB write the hand-offs cost more than the
 * writes.
 */
import { getSystemErrorName } from 'node:util';
import type { NativeAddon } from '../../native/index.js';

interface Op {
  buf: Buffer;
  pos: number;
  resolve: (bytes: number) => void;
  reject: (err: Error) => void;
}

/** Most operations in one batch (a bigger burst is split, so several pool threads share it). */
const MAX_BATCH = 16;

export class FileBatcher {
  readonly #native: NativeAddon;
  readonly #fd: number;
  readonly #write: boolean;
  #ops: Op[] = [];
  #scheduled = false;
  /**
   * Position/result arrays of finished batches, reused: a fresh Float64Array
   * costs an ArrayBuffer allocation, which measured more than the rest of the call.
   */
  #spare: Float64Array[] = [];

  constructor(addon: NativeAddon, fd: number, write: boolean) {
    this.#native = addon;
    this.#fd = fd;
    this.#write = write;
  }

  /** Queues one operation; resolves with the bytes moved, rejects with an errno error (code, syscall). */
  submit(buf: Buffer, pos: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#ops.push({ buf, pos, resolve, reject });
      if (this.#ops.length >= MAX_BATCH) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        // After this turn's microtasks: every request parsed from the same socket read is in.
        process.nextTick(this.#flush);
      }
    });
  }

  #flush = (): void => {
    this.#scheduled = false;
    const ops = this.#ops;
    if (ops.length === 0) return;
    this.#ops = [];
    // One array: positions in the first half, results in the second.
    const arr = this.#spare.pop() ?? new Float64Array(2 * MAX_BATCH);
    const positions = arr.subarray(0, MAX_BATCH);
    const results = arr.subarray(MAX_BATCH);
    const bufs = ops.map((o, i) => {
      positions[i] = o.pos;
      return o.buf;
    });
    const syscall = this.#write ? 'pwrite' : 'pread';
    this.#native.fileBatch(this.#fd, this.#write, bufs, positions, results, () => {
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i] as Op;
        const r = results[i] as number;
        if (r >= 0) op.resolve(r);
        else {
          const code = getSystemErrorName(r);
          const err = Object.assign(new Error(`${code}: ${syscall} failed`), { code, errno: r, syscall });
          op.reject(err);
        }
      }
      if (this.#spare.length < 8) this.#spare.push(arr);
    });
  };
}
