/**
 * Guest memory as the front-end shares it (vhost-user.rst "Memory regions
 * description"): up to 8 regions, each an fd mapped MAP_SHARED from file
 * offset 0 for mmap_offset + memory_size bytes (the region's bytes start at
 * mmap_offset). Two address spaces name the same bytes: guest-physical
 * addresses (descriptor buffers) and the front-end's (QEMU's) virtual
 * addresses (ring addresses in SET_VRING_ADDR). Every translation checks
 * that the whole range lies inside one region, and so inside the mapping.
 *
 * The file behind each region must hold it (fstat at SET_MEM_TABLE: a region
 * beyond the end of its file is refused). A file that shrinks later (not
 * sealed with F_SEAL_SHRINK) is caught by the addon's SIGBUS guard: the
 * access reads zeros and the fault is counted on the mapping
 * ({@link GuestMemory.fault}); the session then disconnects the front-end.
 */
import { closeSync } from 'node:fs';
import { describeError } from '../../errors.js';
import type { NativeAddon } from '../../native/index.js';
import { VhostMemoryError, VhostMemoryFaultError } from './errors.js';

/** One region as SET_MEM_TABLE describes it. */
export interface RegionDesc {
  /** Guest-physical start address. */
  gpa: number;
  /** Bytes in the region. */
  size: number;
  /** Front-end virtual start address. */
  uva: number;
  /** Where in the fd the region starts. */
  mmapOffset: number;
}

/** Reads a little-endian u64 at `off` as a Number (exact below 2**53; larger values are out of any region anyway). */
export function readU64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 0x1_0000_0000;
}

/** Parses SET_MEM_TABLE's payload into region descriptions. */
export function parseMemTable(payload: Buffer): RegionDesc[] {
  const n = payload.readUInt32LE(0);
  const out: RegionDesc[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + 32 * i;
    out.push({
      gpa: readU64(payload, o),
      size: readU64(payload, o + 8),
      uva: readU64(payload, o + 16),
      mmapOffset: readU64(payload, o + 24),
    });
  }
  return out;
}

/** The mapped regions and both translations. */
export class GuestMemory {
  /** Region bytes (views into the mappings), by region index. */
  readonly views: Buffer[] = [];
  /** The same bytes as u16 / u32 arrays (for Atomics on ring indexes); offsets are byte offsets / 2 or / 4. */
  readonly u16: Uint16Array[] = [];
  readonly regions: RegionDesc[] = [];
  /** Whether each region's file is sealed against shrinking (F_SEAL_SHRINK): it can never fault. */
  readonly sealed: boolean[] = [];
  readonly #maps: ArrayBuffer[] = [];
  readonly #n: NativeAddon;
  /** Region of the last successful translation. */
  region = 0;

  constructor(n: NativeAddon) {
    this.#n = n;
  }

  /**
   * Maps `regions` from `fds` (one per region; every fd is closed here, mapped
   * or not). Throws {@link VhostMemoryError} for an empty, overlapping or
   * unmappable table, or a region that its file does not hold (fstat);
   * nothing stays mapped then.
   */
  static map(n: NativeAddon, regions: RegionDesc[], fds: number[]): GuestMemory {
    const mem = new GuestMemory(n);
    try {
      check(regions);
      regions.forEach((r, i) => {
        mem.sealed.push(checkFile(n, fds[i] as number, r, i));
        let ab: ArrayBuffer;
        try {
          ab = n.mmap(fds[i] as number, r.mmapOffset + r.size, 0, true);
        } catch (err) {
          throw new VhostMemoryError(
            `cannot map region ${i} (${r.size} bytes at fd offset ${r.mmapOffset}): ${describeError(err)}`,
            { cause: err },
          );
        }
        mem.#maps.push(ab);
        mem.regions.push(r);
        mem.views.push(Buffer.from(ab, r.mmapOffset, r.size));
        mem.u16.push(new Uint16Array(ab, r.mmapOffset, Math.floor(r.size / 2)));
      });
    } catch (err) {
      mem.unmap();
      throw err;
    } finally {
      for (const fd of fds) closeFd(fd);
    }
    return mem;
  }

  /** Total bytes mapped. */
  get bytes(): number {
    return this.regions.reduce((a, r) => a + r.size, 0);
  }

  /** True when every region's file is sealed against shrinking (no access can fault). */
  get allSealed(): boolean {
    return this.sealed.length > 0 && this.sealed.every((s) => s);
  }

  /**
   * The first region an access faulted in (its file shrank under it), as an
   * error for the session to close with; undefined when none did.
   */
  fault(): VhostMemoryFaultError | undefined {
    for (let i = 0; i < this.#maps.length; i++) {
      const faults = this.#n.mmapFaults(this.#maps[i] as ArrayBuffer);
      if (faults === 0) continue;
      const r = this.regions[i] as RegionDesc;
      return new VhostMemoryFaultError(
        `guest memory region ${i} (gpa 0x${r.gpa.toString(16)}, ${r.size} bytes at fd offset ${r.mmapOffset}) faulted ${faults} time(s): its file is shorter than the region (shrunk after SET_MEM_TABLE); the access read zeros. Seal memory files against shrinking (F_SEAL_SHRINK; QEMU memfd backends do by default)`,
      );
    }
    return undefined;
  }

  /**
   * Offset in `views[region]` of guest-physical [gpa, gpa+len), setting
   * {@link region}; -1 when the range is not inside one region.
   */
  gpa(gpa: number, len: number): number {
    const rs = this.regions;
    const vs = this.views;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i] as RegionDesc;
      const off = gpa - r.gpa;
      // The region's size and the mapped view's length are the same number; the view's is what bounds an access.
      if (off >= 0 && off + len <= (vs[i] as Buffer).length) {
        this.region = i;
        return off;
      }
    }
    return -1;
  }

  /** Like {@link gpa} for a front-end virtual address. */
  uva(uva: number, len: number): number {
    const rs = this.regions;
    const vs = this.views;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i] as RegionDesc;
      const off = uva - r.uva;
      if (off >= 0 && off + len <= (vs[i] as Buffer).length) {
        this.region = i;
        return off;
      }
    }
    return -1;
  }

  /** Guest-physical address of front-end virtual `uva` (for dirty logging of rings); -1 outside memory. */
  uvaToGpa(uva: number): number {
    for (const r of this.regions) if (uva >= r.uva && uva < r.uva + r.size) return r.gpa + (uva - r.uva);
    return -1;
  }

  /** Unmaps everything now. Idempotent. */
  unmap(): void {
    for (const ab of this.#maps) this.#n.munmap(ab);
    this.#maps.length = 0;
    this.views.length = 0;
    this.u16.length = 0;
    this.regions.length = 0;
    this.sealed.length = 0;
  }
}

/**
 * Region `i` must lie inside its file: a mapping beyond the end of a file
 * faults (SIGBUS) on access. Returns whether the file is sealed against
 * shrinking. Files that are not regular (devices) have no size to check.
 */
function checkFile(n: NativeAddon, fd: number, r: RegionDesc, i: number): boolean {
  let info: ReturnType<NativeAddon['fdInfo']>;
  try {
    info = n.fdInfo(fd);
  } catch (err) {
    throw new VhostMemoryError(`region ${i}: cannot fstat its fd: ${describeError(err)}`, { cause: err });
  }
  const end = r.mmapOffset + r.size;
  if (info.regular && end > info.size)
    throw new VhostMemoryError(
      `region ${i} (gpa 0x${r.gpa.toString(16)}): ${r.size} bytes at fd offset ${r.mmapOffset} end at byte ${end}, but its file holds ${info.size} bytes; the front-end must size each memory file to cover its regions`,
    );
  return info.seals >= 0 && (info.seals & n.F_SEAL_SHRINK) !== 0;
}

function check(regions: RegionDesc[]): void {
  if (regions.length === 0) throw new VhostMemoryError('the memory table has no regions');
  regions.forEach((r, i) => {
    if (r.size === 0) throw new VhostMemoryError(`region ${i} has size 0`);
    if (r.mmapOffset % 4096 !== 0)
      throw new VhostMemoryError(`region ${i}: mmap_offset 0x${r.mmapOffset.toString(16)} is not page aligned`);
    if (r.gpa + r.size > 2 ** 53 || r.uva + r.size > 2 ** 53)
      throw new VhostMemoryError(`region ${i} ends beyond 2**53 (gpa 0x${r.gpa.toString(16)})`);
    for (let j = 0; j < i; j++) {
      const o = regions[j] as RegionDesc;
      if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size)
        throw new VhostMemoryError(`regions ${j} and ${i} overlap in guest-physical addresses`);
    }
  });
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * The dirty-page log of live migration (SET_LOG_BASE with LOG_SHMFD): one
 * bit per 4 KiB guest-physical page, set for every byte the back-end writes
 * into guest memory while VHOST_F_LOG_ALL is negotiated. The front-end only
 * clears bits, so a plain read-modify-write never loses one of ours.
 */
export class DirtyLog {
  readonly #buf: Buffer;
  readonly #ab: ArrayBuffer;
  readonly #n: NativeAddon;

  constructor(n: NativeAddon, fd: number, size: number, offset: number) {
    this.#n = n;
    try {
      const info = n.fdInfo(fd);
      if (info.regular && size + offset > info.size)
        throw new VhostMemoryError(
          `the dirty log (${size} bytes at fd offset ${offset}) ends beyond its file of ${info.size} bytes`,
        );
      this.#ab = n.mmap(fd, size + offset, 0, true);
    } catch (err) {
      if (err instanceof VhostMemoryError) throw err;
      throw new VhostMemoryError(`cannot map the dirty log (${size} bytes): ${describeError(err)}`, { cause: err });
    } finally {
      closeFd(fd);
    }
    this.#buf = Buffer.from(this.#ab, offset, size);
  }

  /** Marks the pages of guest-physical [gpa, gpa+len) dirty (bits beyond the log are ignored). */
  mark(gpa: number, len: number): void {
    if (len <= 0) return;
    const b = this.#buf;
    const last = Math.floor((gpa + len - 1) / 4096);
    for (let page = Math.floor(gpa / 4096); page <= last; page++) {
      const byte = page >>> 3;
      if (byte >= b.length) return;
      b[byte] = (b[byte] as number) | (1 << (page & 7));
    }
  }

  /** An error when a write to the log faulted (its file shrank), else undefined. */
  fault(): VhostMemoryFaultError | undefined {
    const f = this.#n.mmapFaults(this.#ab);
    return f === 0
      ? undefined
      : new VhostMemoryFaultError(`the dirty log faulted ${f} time(s): its file is shorter than the log`);
  }

  unmap(): void {
    this.#n.munmap(this.#ab);
  }
}
