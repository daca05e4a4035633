/**
 * Raw image file backend. Positional reads and writes on one file handle
 * (libuv thread pool); FLUSH and FUA are fdatasync.
 *
 * Node has neither fallocate(2) nor lseek(SEEK_DATA/SEEK_HOLE), so until the
 * native addon (src/native) provides them:
 * - TRIM is advisory and does nothing, except at the end of the file where a
 *   shrink-and-regrow ftruncate frees the blocks (a real hole);
 * - WRITE_ZEROES writes zeroes (same tail exception), and FAST_ZERO fails
 *   with ENOTSUP, as the spec asks when zeroing is no faster than writing;
 * - block status reports the whole file as data (status 0 is always
 *   allowed: proto.md "base:allocation").
 */
import { fdatasync, read as fsRead, write as fsWrite } from 'node:fs';
import { constants, type FileHandle, open } from 'node:fs/promises';
import { type BlockBackend, checkRange, checkWritable, type Extent, ZEROES, type ZeroOptions } from '../backend.js';
import { IoError, NotFastError, StorageError } from '../errors.js';

export interface FileBackendOptions {
  /** Path of the raw image. */
  path: string;
  /** Create the file with this size (bytes) if it does not exist; an existing file keeps its size. */
  size?: number;
  /** Open read-only; default false. */
  readOnly?: boolean;
}

export class FileBackend implements BlockBackend {
  readonly kind = 'file';
  readonly size: number;
  readonly readOnly: boolean;
  /** One file handle shared by all connections: fdatasync covers every connection's writes. */
  readonly canMultiConn = true;
  readonly cheapExtents = false;
  readonly path: string;
  #fh: FileHandle;
  #closed = false;

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean) {
    this.path = path;
    this.#fh = fh;
    this.size = size;
    this.readOnly = readOnly;
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
    let size = (await fh.stat()).size;
    if (size === 0 && opts.size !== undefined && !ro) {
      await fh.truncate(opts.size);
      size = opts.size;
    }
    return new FileBackend(opts.path, fh, size, ro);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange('read', offset, length, this.size);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    try {
      while (done < length) {
        const bytesRead = await pread(this.#fh.fd, buf, done, length - done, offset + done);
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
      while (done < data.length) {
        done += await pwrite(this.#fh.fd, data, done, data.length - done, offset + done);
      }
      if (fua) await datasync(this.#fh.fd);
    } catch (err) {
      throw new IoError(`write of ${data.length} bytes at ${offset} to "${this.path}"`, err);
    }
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    checkWritable(this, 'write zeroes', offset, length);
    const tail = offset + length === this.size && length > 0;
    if (opts.fastZero && !(tail && !opts.noHole)) throw new NotFastError();
    try {
      if (tail && !opts.noHole) await this.#punchTail(offset);
      else {
        for (let p = 0; p < length; p += ZEROES.length) {
          const n = Math.min(ZEROES.length, length - p);
          let done = 0;
          while (done < n) done += await pwrite(this.#fh.fd, ZEROES, done, n - done, offset + p + done);
        }
      }
      if (opts.fua) await datasync(this.#fh.fd);
    } catch (err) {
      throw new IoError(`write zeroes of ${length} bytes at ${offset} to "${this.path}"`, err);
    }
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    checkWritable(this, 'trim', offset, length);
    if (offset + length !== this.size || length === 0) return;
    try {
      await this.#punchTail(offset);
      if (fua) await datasync(this.#fh.fd);
    } catch (err) {
      throw new IoError(`trim of ${length} bytes at ${offset} in "${this.path}"`, err);
    }
  }

  async flush(): Promise<void> {
    if (this.#closed) return;
    try {
      await datasync(this.#fh.fd);
    } catch (err) {
      throw new IoError(`flush of "${this.path}"`, err);
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    checkRange('cache', offset, length, this.size);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange('block status', offset, length, this.size);
    return [{ length, flags: 0 }];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.readOnly) await this.#fh.datasync().catch(() => {});
    await this.#fh.close();
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
