/**
 * Reusable memory for large payloads: READ replies of the file backend and
 * WRITE payloads that arrive in several socket reads. A fresh 1 MiB Buffer
 * is a fresh mapping the kernel must fault in and zero page by page, which
 * measured as a large part of a 1 MiB request; a pooled one is warm.
 * Buffers are handed out in power-of-two classes from 64 KiB. Smaller ones
 * are carved one after the other from a 1 MiB slab (Node's own slab stops
 * below 4 KiB, so every 4 KiB request had its own ArrayBuffer and GC
 * bookkeeping); a slab is left to the GC once full and its views are gone.
 */

/** Smallest pooled size (bytes); smaller requests come from the slab. */
const MIN_POOLED = 64 * 1024;
const SLAB = 1024 * 1024;

export class BufferPool {
  readonly #maxRetained: number;
  readonly #free = new Map<number, ArrayBuffer[]>();
  /** Memory handed out and not yet released: only these are taken back. */
  readonly #out = new WeakSet<ArrayBuffer>();
  #retained = 0;
  #slab = new ArrayBuffer(0);
  #slabUsed = 0;

  /** @param maxRetainedBytes most memory kept in free lists (default 64 MiB); more is left to the GC. */
  constructor(maxRetainedBytes = 64 * 1024 * 1024) {
    this.#maxRetained = maxRetainedBytes;
  }

  /** Free memory kept for reuse, in bytes. */
  get retained(): number {
    return this.#retained;
  }

  /** A Buffer of exactly `length` bytes (contents undefined). */
  acquire(length: number): Buffer {
    if (length < MIN_POOLED) {
      if (this.#slabUsed + length > this.#slab.byteLength) {
        this.#slab = new ArrayBuffer(SLAB);
        this.#slabUsed = 0;
      }
      const b = Buffer.from(this.#slab, this.#slabUsed, length);
      this.#slabUsed += (length + 7) & ~7;
      return b;
    }
    const cls = 2 ** Math.ceil(Math.log2(length));
    const ab = this.#free.get(cls)?.pop();
    if (ab) this.#retained -= cls;
    const mem = ab ?? new ArrayBuffer(cls);
    this.#out.add(mem);
    return Buffer.from(mem, 0, length);
  }

  /**
   * Gives a Buffer from {@link acquire} back once nothing uses it any more
   * (its socket write completed, its backend write resolved). Anything else,
   * or a second release, is ignored.
   */
  release(buf: Buffer): void {
    const mem = buf.buffer;
    if (buf.byteOffset !== 0 || !(mem instanceof ArrayBuffer) || !this.#out.has(mem)) return;
    this.#out.delete(mem);
    const cls = mem.byteLength;
    if (this.#retained + cls > this.#maxRetained) return;
    let list = this.#free.get(cls);
    if (!list) {
      list = [];
      this.#free.set(cls, list);
    }
    list.push(mem);
    this.#retained += cls;
  }
}

/** The pool shared by NBD connections and file backends of this process. */
export const payloadPool = new BufferPool();
