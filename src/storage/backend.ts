/**
 * The BlockBackend contract: where an export's bytes live. Every backend
 * (memory, file, copy-on-write, remote NBD) implements it and is swapped
 * without touching the NBD server. Offsets and lengths are byte counts as
 * numbers (exact up to 2^53, far beyond any device we serve).
 *
 * Errors are {@link BackendError}s carrying the NBD errno to reply with.
 */

import { OutOfRangeError, ReadOnlyError } from './errors.js';
import { NBD_ERR } from './nbd/constants.js';

/** A run of bytes with one base:allocation status (STATE_HOLE | STATE_ZERO bits, 0 = data). */
export interface Extent {
  /** Length in bytes, > 0. */
  length: number;
  /** base:allocation flags: bit 0 hole (unallocated), bit 1 reads as zeroes. */
  flags: number;
}

/** Options of {@link BlockBackend.writeZeroes}. */
export interface ZeroOptions {
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated (write real zeroes). */
  noHole: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail at once with ENOTSUP (NotFastError) unless zeroing is faster than writing. */
  fastZero: boolean;
  /** NBD_CMD_FLAG_FUA: persist before resolving. */
  fua: boolean;
}

export interface BlockBackend {
  /** Backend kind for status listings: `memory`, `file`, `cow`, `remote`. */
  readonly kind: string;
  /** Device size in bytes. */
  readonly size: number;
  /** Writes, zeroes and trims fail with EPERM. */
  readonly readOnly: boolean;
  /**
   * The effects of flush/FUA are visible to every connection once they resolve
   * (one shared cache or none), so NBD_FLAG_CAN_MULTI_CONN may be advertised.
   */
  readonly canMultiConn: boolean;
  /** {@link extents} is cheap (no I/O round trip): the server may use it to send reads' holes as OFFSET_HOLE. */
  readonly cheapExtents: boolean;

  /**
   * The caller may hand read() results to `payloadPool.release` once sent,
   * and write() keeps no reference to `data` after it resolves (so a pooled
   * payload can be reused). Default false.
   */
  readonly pooledBuffers?: boolean;

  /** Reads `length` bytes at `offset` into a new Buffer. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Writes `data` at `offset`; with `fua`, persisted before resolving. The backend may keep `data`. */
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** Makes `length` bytes at `offset` read as zeroes (punching holes unless `noHole`). */
  writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void>;
  /** Advisory discard: afterwards the range's content is unspecified until written. May do nothing. */
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  /** Persists every write that resolved before this call. */
  flush(): Promise<void>;
  /** Hint that the range will be read soon. May do nothing. */
  cache(offset: number, length: number): Promise<void>;
  /**
   * Allocation status from `offset`: one or more extents covering at least
   * one byte and at most `length` bytes (a shorter answer is allowed; the
   * caller asks again from where it ends).
   */
  extents(offset: number, length: number): Promise<Extent[]>;
  /** Persists and releases resources (files, connections). Idempotent. */
  close(): Promise<void>;
}

/** Throws OutOfRangeError unless `[offset, offset+length)` lies within `size`. */
export function checkRange(what: string, offset: number, length: number, size: number, errno?: number): void {
  if (!(offset >= 0) || !(length >= 0) || offset + length > size)
    throw new OutOfRangeError(what, offset, length, size, errno);
}

/** Range check for writes (ENOSPC beyond the end, per proto.md) plus the read-only check. */
export function checkWritable(b: BlockBackend, what: string, offset: number, length: number): void {
  if (b.readOnly) throw new ReadOnlyError(what);
  checkRange(what, offset, length, b.size, what === 'trim' ? NBD_ERR.EINVAL : NBD_ERR.ENOSPC);
}

/** Appends an extent, merging it into the last one when the flags match. */
export function pushExtent(out: Extent[], length: number, flags: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  if (last !== undefined && last.flags === flags) last.length += length;
  else out.push({ length, flags });
}

/** A shared read-only buffer of zeroes for writing zero ranges (1 MiB). */
export const ZEROES = Buffer.alloc(1024 * 1024);
