/**
 * Copy-on-write backend: a writable overlay over a read-only base. A bitmap
 * with one bit per block (default 64 KiB) says which blocks live in the
 * overlay. The first write to a block copies the block up (base bytes merged
 * with the new ones, one overlay write) under a per-block lock, so
 * concurrent first writes to one block cannot lose each other's data.
 *
 * With `bitmapPath` the bitmap is persisted on FLUSH and FUA (written and
 * fsync'ed after the overlay is), so an overlay file plus its bitmap file
 * survive a restart.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { type BlockBackend, checkRange, checkWritable, type Extent, pushExtent, type ZeroOptions } from '../backend.js';
import { IoError, NotFastError, StorageError } from '../errors.js';

export interface CowBackendOptions {
  /** The read-only base image (any backend; it is never written). */
  base: BlockBackend;
  /** Where written blocks go; same size as the base, writable. */
  overlay: BlockBackend;
  /** Copy-up granularity in bytes, a power of two >= 512; default 65536. */
  blockSize?: number;
  /** File that keeps the block bitmap across restarts; default: bitmap in memory only. */
  bitmapPath?: string;
}

export class CowBackend implements BlockBackend {
  readonly kind = 'cow';
  readonly size: number;
  readonly readOnly = false;
  readonly canMultiConn: boolean;
  readonly cheapExtents: boolean;
  #base: BlockBackend;
  #overlay: BlockBackend;
  #bs: number;
  #bits: Uint8Array;
  #locks = new Map<number, Promise<void>>();
  #bitmapPath: string | undefined;
  #dirty = false;
  /** Bitmap saves run one at a time. */
  #saving: Promise<void> = Promise.resolve();
  /** Union of the bitmaps saved so far. */
  #persisted: Uint8Array;

  private constructor(o: CowBackendOptions, bits: Uint8Array) {
    this.#base = o.base;
    this.#overlay = o.overlay;
    this.#bs = o.blockSize ?? 65536;
    this.size = o.base.size;
    this.#bits = bits;
    this.#persisted = new Uint8Array(bits);
    this.#bitmapPath = o.bitmapPath;
    this.canMultiConn = o.base.canMultiConn && o.overlay.canMultiConn;
    this.cheapExtents = o.base.cheapExtents && o.overlay.cheapExtents;
  }

  /** Builds the backend, loading the bitmap file when it exists. Throws ERR_COW_INVALID on mismatched parts. */
  static async create(o: CowBackendOptions): Promise<CowBackend> {
    const bs = o.blockSize ?? 65536;
    if (!(bs >= 512) || (bs & (bs - 1)) !== 0)
      throw new StorageError('ERR_COW_INVALID', `copy-on-write block size ${bs} must be a power of two >= 512`);
    if (o.overlay.readOnly) throw new StorageError('ERR_COW_INVALID', 'the copy-on-write overlay must be writable');
    if (o.overlay.size !== o.base.size)
      throw new StorageError(
        'ERR_COW_INVALID',
        `overlay size ${o.overlay.size} differs from base size ${o.base.size}; create the overlay with the base's size`,
      );
    const nbits = Math.ceil(o.base.size / bs);
    let bits = new Uint8Array(Math.ceil(nbits / 8));
    if (o.bitmapPath) {
      try {
        const saved = await readFile(o.bitmapPath);
        if (saved.length !== bits.length)
          throw new StorageError(
            'ERR_COW_INVALID',
            `bitmap "${o.bitmapPath}" has ${saved.length} bytes, expected ${bits.length} for this image and block size`,
          );
        bits = new Uint8Array(saved);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ENOENT') throw err;
      }
    }
    return new CowBackend(o, bits);
  }

  /** Blocks held in the overlay. */
  get allocatedBlocks(): number {
    let n = 0;
    for (const byte of this.#bits) for (let v = byte; v; v &= v - 1) n++;
    return n;
  }

  #has(b: number): boolean {
    return ((this.#bits[b >> 3] as number) & (1 << (b & 7))) !== 0;
  }

  #set(b: number): void {
    this.#bits[b >> 3] = (this.#bits[b >> 3] as number) | (1 << (b & 7));
    this.#dirty = true;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange('read', offset, length, this.size);
    const out = Buffer.allocUnsafe(length);
    await this.#runs(offset, length, async (inOverlay, off, len) => {
      const part = await (inOverlay ? this.#overlay : this.#base).read(off, len);
      part.copy(out, off - offset);
    });
    return out;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    checkWritable(this, 'write', offset, data.length);
    await this.#modify(offset, data.length, fua, (off, len) => data.subarray(off - offset, off - offset + len));
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    checkWritable(this, 'write zeroes', offset, length);
    // Zeroing may need copy-ups that are no faster than writes: refuse FAST_ZERO outright.
    if (opts.fastZero) throw new NotFastError();
    await this.#modify(offset, length, opts.fua, (_off, len) => Buffer.alloc(len));
  }

  async trim(offset: number, length: number, _fua: boolean): Promise<void> {
    // Advisory (proto.md NBD_CMD_TRIM): keeping the current content is allowed.
    checkWritable(this, 'trim', offset, length);
  }

  async flush(): Promise<void> {
    // Snapshot the bitmap before flushing the overlay: every bit in it was set after its
    // block's overlay write completed, so that flush covers it (never persist a bit whose data may be lost).
    const snapshot = this.#bitmapPath && this.#dirty ? Buffer.from(this.#bits) : undefined;
    if (snapshot) this.#dirty = false;
    try {
      await this.#overlay.flush();
      if (snapshot) {
        this.#saving = this.#saving.catch(() => {}).then(() => this.#saveBitmap(snapshot));
        await this.#saving;
      }
    } catch (err) {
      if (snapshot) this.#dirty = true;
      throw err;
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    checkRange('cache', offset, length, this.size);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange('block status', offset, length, this.size);
    // Answer for the first run only (overlay or base); the caller asks again from where it ends.
    const first = this.#firstRun(offset, length);
    const ext = await (first.inOverlay ? this.#overlay : this.#base).extents(offset, first.length);
    const out: Extent[] = [];
    let left = first.length;
    for (const e of ext) {
      const n = Math.min(e.length, left);
      pushExtent(out, n, e.flags);
      left -= n;
      if (left === 0) break;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.flush().catch(() => {});
    await this.#overlay.close();
    await this.#base.close();
  }

  /** Applies `dataFor(off, len)` to the overlay over the range, copying up blocks not yet there. */
  async #modify(offset: number, length: number, fua: boolean, dataFor: (off: number, len: number) => Buffer) {
    const bs = this.#bs;
    const jobs: Promise<void>[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const bEnd = Math.min((b + 1) * bs, this.size);
      const len = Math.min(bEnd, end) - pos;
      const off = pos;
      if (this.#has(b)) jobs.push(this.#overlay.write(off, dataFor(off, len), false));
      else jobs.push(this.#copyUp(b, off, len, dataFor));
      pos += len;
    }
    await Promise.all(jobs);
    if (fua) await this.flush();
  }

  /** First write to block `b`: one overlay write of base bytes merged with the new ones, then set the bit. */
  async #copyUp(b: number, off: number, len: number, dataFor: (off: number, len: number) => Buffer): Promise<void> {
    for (let held = this.#locks.get(b); held; held = this.#locks.get(b)) await held;
    if (this.#has(b)) return this.#overlay.write(off, dataFor(off, len), false);
    let release = (): void => {};
    this.#locks.set(b, new Promise<void>((r) => (release = r)));
    try {
      const start = b * this.#bs;
      const bLen = Math.min(this.#bs, this.size - start);
      let block: Buffer;
      if (len === bLen) block = dataFor(off, len);
      else {
        block = await this.#base.read(start, bLen);
        dataFor(off, len).copy(block, off - start);
      }
      await this.#overlay.write(start, block, false);
      this.#set(b);
    } finally {
      this.#locks.delete(b);
      release();
    }
  }

  /** Calls fn for each maximal run of blocks that are all in the overlay or all in the base. */
  async #runs(offset: number, length: number, fn: (inOverlay: boolean, off: number, len: number) => Promise<void>) {
    const jobs: Promise<void>[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const r = this.#firstRun(pos, end - pos);
      jobs.push(fn(r.inOverlay, pos, r.length));
      pos += r.length;
    }
    await Promise.all(jobs);
  }

  #firstRun(offset: number, length: number): { inOverlay: boolean; length: number } {
    const bs = this.#bs;
    const end = offset + length;
    let b = Math.floor(offset / bs);
    const inOverlay = this.#has(b);
    let pos = Math.min((b + 1) * bs, end);
    while (pos < end && this.#has(++b) === inOverlay) pos = Math.min((b + 1) * bs, end);
    return { inOverlay, length: pos - offset };
  }

  /** Writes the bitmap to a temporary file, syncs it and renames it over the old one (atomic on crash). */
  async #saveBitmap(snapshotIn: Buffer): Promise<void> {
    const path = this.#bitmapPath as string;
    let snapshot = snapshotIn;
    // Bits are only ever set, so the union of every flushed snapshot is safe to persist,
    // whichever order concurrent flushes finish in.
    for (let i = 0; i < snapshot.length; i++)
      this.#persisted[i] = (this.#persisted[i] as number) | (snapshot[i] as number);
    snapshot = Buffer.from(this.#persisted);
    try {
      const fh = await open(`${path}.tmp`, 'w', 0o600);
      try {
        await fh.write(snapshot, 0, snapshot.length, 0);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(`${path}.tmp`, path);
    } catch (err) {
      throw new IoError(`saving copy-on-write bitmap "${path}"`, err);
    }
  }
}
