/**
 * Raw image file backend on one file descriptor. FLUSH and FUA are fdatasync.
 *
 * Through the native addon (src/native, when it is built):
 * - reads and writes first try preadv2/pwritev2 with RWF_NOWAIT on the event
 *   loop: what the page cache can serve costs one syscall instead of a trip
 *   through libuv's thread pool (4 KiB reads: the pool hop was most of the
 *   time); only what would wait for the disk goes to the pool;
 * - TRIM punches holes (fallocate PUNCH_HOLE|KEEP_SIZE), WRITE_ZEROES punches
 *   or, with NO_HOLE, uses ZERO_RANGE, so FAST_ZERO is honoured;
 * - block status reports holes and data (lseek SEEK_DATA / SEEK_HOLE).
 * Where the addon or the file system lacks one of them, the backend falls back
 * to portable behaviour: pool I/O; TRIM is advisory except at the end of the
 * file (shrink-and-regrow ftruncate); zeroes are written (FAST_ZERO: ENOTSUP);
 * the whole file is reported as data (status 0 is always allowed).
 */
import { fdatasync, read as fsRead, write as fsWrite, writeSync } from 'node:fs';
import { constants, type FileHandle, open, realpath } from 'node:fs/promises';
import { sep } from 'node:path';
import { type NativeAddon, native } from '../../native/index.js';
import { type BlockBackend, checkRange, checkWritable, type Extent, ZEROES, type ZeroOptions } from '../backend.js';
import { payloadPool } from '../buffer-pool.js';
import { IoError, NotFastError, StorageError } from '../errors.js';
import { STATE_HOLE, STATE_ZERO } from '../nbd/constants.js';
import { FileBatcher } from './file-batch.js';

/** The addon, or undefined when it is not built (portable fallbacks then). */
function addon(): NativeAddon | undefined {
  try {
    return native();
  } catch {
    return undefined;
  }
}

/**
 * Reads up to this size try RWF_NOWAIT on the event loop first; bigger ones
 * go to the pool, where the copy of a large reply runs beside the event loop
 * (1 MiB reads: about 0.5 of nbdkit copied on the loop, more through the pool).
 */
const NOWAIT_READ_MAX = 128 * 1024;
/**
 * Writes up to this size go straight into the page cache with a synchronous
 * pwrite on the event loop: a copy of a few microseconds, where any hand-off
 * to a pool thread cost more CPU than the write itself (ext4 has no
 * RWF_NOWAIT for buffered writes, which would make this exact). A write the
 * kernel does make wait (dirty-page throttling, a journal commit) shows in
 * its duration: after one slower than SYNC_WRITE_SLOW_MS, writes go through
 * the pool (batched) for SYNC_WRITE_BACKOFF_MS, so a slow disk cannot hold
 * the event loop, and every other export with it, for long.
 */
const SYNC_WRITE_MAX = 64 * 1024;
const SYNC_WRITE_SLOW_MS = 5;
const SYNC_WRITE_BACKOFF_MS = 2000;
/** Writes up to this size are batched through the addon (FileBatcher); bigger ones go alone. */
const BATCH_WRITE_MAX = 256 * 1024;

/** Most extents one block status call returns (a shorter answer is allowed; the client asks again). */
const MAX_EXTENTS = 4096;

export interface FileBackendOptions {
  /** Path of the raw image. */
  path: string;
  /** Create the file with this size (bytes) if it does not exist; an existing file keeps its size. */
  size?: number;
  /** Open read-only; default false. */
  readOnly?: boolean;
  /**
   * Real paths of the directories the opened file must lie in, checked on
   * the open file itself (/proc/self/fd), so a path swapped for a symlink
   * after the caller checked it is refused (ERR_FILE_OUTSIDE_ROOTS); default: anywhere.
   */
  within?: readonly string[] | undefined;
}

export class FileBackend implements BlockBackend {
  readonly kind = 'file';
  readonly size: number;
  readonly readOnly: boolean;
  /** One file handle shared by all connections: fdatasync covers every connection's writes. */
  readonly canMultiConn = true;
  readonly cheapExtents = false;
  /** Reads come from payloadPool; writes keep nothing once resolved. */
  readonly pooledBuffers = true;
  readonly path: string;
  #fh: FileHandle;
  #fd: number;
  #closed = false;
  /** The addon's calls each stay on until the file system says it cannot do them (EOPNOTSUPP). */
  #native: NativeAddon | undefined;
  #nowaitRead: boolean;
  #nowaitWrite: boolean;
  #punch: boolean;
  #zeroRange: boolean;
  #seek: boolean;
  /** Small writes gathered per event-loop turn into one pool trip; undefined without the addon. */
  #writes: FileBatcher | undefined;
  /** performance.now() before which small writes are not made synchronously (see SYNC_WRITE_MAX). */
  #syncWritesFrom = 0;

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean) {
    this.path = path;
    this.#fh = fh;
    this.#fd = fh.fd;
    this.size = size;
    this.readOnly = readOnly;
    this.#native = addon();
    const n = this.#native !== undefined;
    this.#nowaitRead = n;
    this.#nowaitWrite = n;
    this.#punch = n;
    this.#zeroRange = n;
    this.#seek = n;
    if (this.#native && !readOnly) this.#writes = new FileBatcher(this.#native, this.#fd, true);
  }

  /** Opens (or creates, when `size` is given) the image. Throws ERR_FILE_BACKEND with the path and reason. */
  static async open(opts: FileBackendOptions): Promise<FileBackend> {
    const ro = opts.readOnly ?? false;
    let fh: FileHandle;
    try {
      const flags = ro ? constants.O_RDONLY : constants.O_RDWR | (opts.size !== undefined ? constants.O_CREAT : 0);
      fh = await open(opts.path, flags, 0o600);
    } catch (err) {
      throw new StorageError(
        'ERR_FILE_BACKEND',
        `cannot open image "${opts.path}": ${(err as Error).message}${opts.size === undefined ? ' (give a size to create it)' : ''}`,
        { cause: err },
      );
    }
    if (opts.within !== undefined) await checkWithin(fh, opts.path, opts.within);
    let size = (await fh.stat()).size;
    if (size === 0 && opts.size !== undefined && !ro) {
      await fh.truncate(opts.size);
      size = opts.size;
    }
    return new FileBackend(opts.path, fh, size, ro);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange('read', offset, length, this.size);
    // The connection releases it once the reply is written (see releasesBuffers).
    const buf = payloadPool.acquire(length);
    let done = 0;
    try {
      if (this.#nowaitRead && length > 0 && length <= NOWAIT_READ_MAX) {
        const r = (this.#native as NativeAddon).preadNoWait(this.#fd, buf, 0, length, offset);
        if (r === -2) this.#nowaitRead = false;
        else if (r > 0) done = r;
        if (done === length) return buf;
      }
      while (done < length) {
        const bytesRead = await pread(this.#fd, buf, done, length - done, offset + done);
        if (bytesRead === 0) {
          // The file shrank under us: what is missing reads as zeroes.
          buf.fill(0, done);
          break;
        }
        done += bytesRead;
      }
    } catch (err) {
      throw new IoError(`read of ${length} bytes at ${offset} from "${this.path}"`, err);
    }
    return buf;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    checkWritable(this, 'write', offset, data.length);
    try {
      let done = 0;
      if (this.#nowaitWrite && data.length > 0) {
        const r = (this.#native as NativeAddon).pwriteNoWait(this.#fd, data, 0, data.length, offset);
        if (r === -2) this.#nowaitWrite = false;
        else if (r > 0) done = r;
      } else if (data.length <= SYNC_WRITE_MAX && data.length > 0 && performance.now() >= this.#syncWritesFrom) {
        const t0 = performance.now();
        done = writeSync(this.#fd, data, 0, data.length, offset);
        const took = performance.now() - t0;
        if (took > SYNC_WRITE_SLOW_MS) this.#syncWritesFrom = t0 + took + SYNC_WRITE_BACKOFF_MS;
      } else if (this.#writes && data.length <= BATCH_WRITE_MAX && data.length > 0) {
        done = await this.#writes.submit(data, offset);
      }
      while (done < data.length) {
        done += await pwrite(this.#fd, data, done, data.length - done, offset + done);
      }
      if (fua) await datasync(this.#fd);
    } catch (err) {
      throw new IoError(`write of ${data.length} bytes at ${offset} to "${this.path}"`, err);
    }
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    checkWritable(this, 'write zeroes', offset, length);
    try {
      // A hole reads as zeroes (unless the client wants the space kept: NO_HOLE); ZERO_RANGE keeps it allocated.
      const done =
        length === 0 ||
        (opts.noHole ? this.#fallocate('zero', offset, length) : this.#fallocate('punch', offset, length));
      if (!done) {
        const tail = offset + length === this.size && !opts.noHole;
        if (opts.fastZero && !tail) throw new NotFastError();
        if (tail) await this.#punchTail(offset);
        else await this.#writeZeroes(offset, length);
      }
      if (opts.fua) await datasync(this.#fd);
    } catch (err) {
      if (err instanceof NotFastError) throw err;
      throw new IoError(`write zeroes of ${length} bytes at ${offset} to "${this.path}"`, err);
    }
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    checkWritable(this, 'trim', offset, length);
    if (length === 0) return;
    try {
      // TRIM is advisory (proto.md): without hole punching only the tail can be freed.
      if (!this.#fallocate('punch', offset, length)) {
        if (offset + length !== this.size) return;
        await this.#punchTail(offset);
      }
      if (fua) await datasync(this.#fd);
    } catch (err) {
      throw new IoError(`trim of ${length} bytes at ${offset} in "${this.path}"`, err);
    }
  }

  async flush(): Promise<void> {
    if (this.#closed) return;
    try {
      await datasync(this.#fd);
    } catch (err) {
      throw new IoError(`flush of "${this.path}"`, err);
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    checkRange('cache', offset, length, this.size);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange('block status', offset, length, this.size);
    const n = this.#native;
    if (!this.#seek || !n) return [{ length, flags: 0 }];
    const out: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    try {
      while (pos < end && out.length < MAX_EXTENTS) {
        const data = n.seekData(this.#fd, pos);
        if (data < 0 || data >= end) {
          out.push({ length: end - pos, flags: STATE_HOLE | STATE_ZERO });
          break;
        }
        if (data > pos) out.push({ length: data - pos, flags: STATE_HOLE | STATE_ZERO });
        const hole = n.seekHole(this.#fd, data);
        const stop = hole < 0 ? end : Math.min(hole, end);
        out.push({ length: stop - data, flags: 0 });
        pos = stop;
      }
    } catch (err) {
      // A file system that cannot tell (EINVAL/EOPNOTSUPP): everything is data from now on.
      const code = (err as { code?: unknown }).code;
      if (code !== 'EINVAL' && code !== 'EOPNOTSUPP' && code !== 'ENOTSUP')
        throw new IoError(`block status of ${length} bytes at ${offset} in "${this.path}"`, err);
      this.#seek = false;
      return [{ length, flags: 0 }];
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.readOnly) await this.#fh.datasync().catch(() => {});
    await this.#fh.close();
  }

  /**
   * fallocate PUNCH_HOLE|KEEP_SIZE (`punch`) or ZERO_RANGE|KEEP_SIZE (`zero`)
   * on the event loop (metadata work, no data copied). False when the addon
   * or the file system cannot (then not tried again); other errors are thrown.
   */
  #fallocate(op: 'punch' | 'zero', offset: number, length: number): boolean {
    const n = this.#native;
    if (!n || !(op === 'punch' ? this.#punch : this.#zeroRange)) return false;
    const mode = n.FALLOC_FL_KEEP_SIZE | (op === 'punch' ? n.FALLOC_FL_PUNCH_HOLE : n.FALLOC_FL_ZERO_RANGE);
    try {
      n.fallocate(this.#fd, mode, offset, length);
      return true;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code !== 'EOPNOTSUPP' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
      if (op === 'punch') this.#punch = false;
      else this.#zeroRange = false;
      return false;
    }
  }

  async #writeZeroes(offset: number, length: number): Promise<void> {
    for (let p = 0; p < length; p += ZEROES.length) {
      const n = Math.min(ZEROES.length, length - p);
      let done = 0;
      while (done < n) done += await pwrite(this.#fd, ZEROES, done, n - done, offset + p + done);
    }
  }

  /** Frees everything from `offset` to the end: shrink, then grow back (the regrown part is a hole). */
  async #punchTail(offset: number): Promise<void> {
    await this.#fh.truncate(offset);
    await this.#fh.truncate(this.size);
  }
}

// fd-based callbacks: markedly cheaper per call than FileHandle methods on the small-I/O path.
function pread(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

function pwrite(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fsWrite(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

/** Closes `fh` and throws unless the file it opened lies under one of `within` (real directory paths). */
async function checkWithin(fh: FileHandle, path: string, within: readonly string[]): Promise<void> {
  let real: string;
  try {
    real = await realpath(`/proc/self/fd/${fh.fd}`);
  } catch (err) {
    await fh.close();
    throw new StorageError('ERR_FILE_BACKEND', `cannot tell where image "${path}" lies: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (within.some((d) => real.startsWith(d.endsWith(sep) ? d : d + sep))) return;
  await fh.close();
  throw new StorageError(
    'ERR_FILE_OUTSIDE_ROOTS',
    `image "${path}" opened as ${real}, outside the directories exports may use [${within.join(', ')}] (was it replaced by a symlink?)`,
  );
}
