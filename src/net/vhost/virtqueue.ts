/**
 * One split virtqueue (virtio 1.2 §2.7) in guest memory, from the device's
 * side: descriptor table, available ring (driver -> device) and used ring
 * (device -> driver).
 *
 * Everything the guest wrote is checked before use: head and next indexes
 * below the queue size, chains no longer than the queue size (which also
 * ends descriptor loops), at most one level of indirect table (§2.7.5.3),
 * buffer addresses and lengths inside guest memory, the right direction
 * (device-readable for transmit, device-writable for receive), and an
 * available index that never runs more than a queue size ahead. A failed
 * check sets {@link error} and returns -1; the caller disconnects the guest.
 *
 * Indexes and flags the driver changes while we run (available index,
 * used_event, flags) are read with one 16-bit load each: Buffer.readUInt16LE
 * reads byte by byte, and a torn read of an index that crosses a multiple of
 * 256 ran 256 entries ahead (seen under load).
 *
 * Ordering: used elements are written before the used index that publishes
 * them (§2.7.8), and the used index is stored with Atomics.store (a full
 * barrier on x86), so the store of avail_event/used index is visible before
 * the following re-read of the available index (the lost-kick race of
 * §2.7.10). Hot path: no allocation per buffer; segments go into typed arrays.
 */

import type { NativeAddon, VringHandle } from '../../native/index.js';
import { AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, VRING_F_LOG } from './constants.js';
import { VhostRingError } from './errors.js';
import type { DirtyLog, GuestMemory } from './memory.js';
import { readU64 } from './memory.js';

/** The ring addresses of SET_VRING_ADDR (front-end virtual addresses). */
export interface RingAddrs {
  flags: number;
  desc: number;
  used: number;
  avail: number;
  /** Guest-physical address of the used ring, for dirty logging. */
  log: number;
}

export class Virtqueue {
  readonly index: number;
  /** Queue size (SET_VRING_NUM); 0 until set. */
  num = 0;
  addrs: RingAddrs | undefined;
  /**
   * [next available-ring slot to read, next used-ring slot to fill] (free-running u16s), and receive flags
   * (bit 0: mergeable buffers), shared with the native fast path.
   */
  readonly #io = new Uint32Array(new ArrayBuffer(12));
  /** The native fast path (vring.c) when an addon was given. */
  readonly #n: NativeAddon | undefined;
  readonly #vr: VringHandle | undefined;
  /** Frame slots of the last {@link txBatch}: region, offset, length per frame. */
  readonly txOut: Uint32Array;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** SET_VRING_ENABLE state. */
  enabled = false;
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx = false;
  /** The dirty log to mark used-ring and buffer writes in while migrating; undefined otherwise. */
  log: DirtyLog | undefined;
  /** Why the last walk/pop failed. */
  error = '';

  // Segments of the last walked chain(s): region, offset in that region's view, length, guest-physical address.
  segRegion = new Uint8Array(0);
  segOff = new Float64Array(0);
  segLen = new Uint32Array(0);
  segGpa = new Float64Array(0);

  #mem: GuestMemory | undefined;
  #desc: Buffer | undefined;
  #descOff = 0;
  #avail: Buffer | undefined;
  #availOff = 0;
  #availU16: Uint16Array | undefined;
  #used: Buffer | undefined;
  #usedOff = 0;
  #usedU16: Uint16Array | undefined;
  #signalledUsed = 0;

  /** `n`: the addon whose vring.c fast path moves simple chains (none: every chain is walked here). */
  constructor(index: number, n?: NativeAddon) {
    this.index = index;
    this.#n = n;
    this.#vr = n?.vringNew(this.#io);
    this.txOut = new Uint32Array(n ? 3 * 256 : 0);
  }

  /** Next available-ring slot to read (free-running u16). */
  get lastAvail(): number {
    return this.#io[0] as number;
  }

  set lastAvail(v: number) {
    this.#io[0] = v;
  }

  /** The guest negotiated MRG_RXBUF: the native receive path may fill several chains with one frame. */
  set mrgRx(on: boolean) {
    this.#io[2] = on ? 1 : 0;
  }

  /** Next used-ring slot to fill (free-running u16). */
  get usedIdx(): number {
    return this.#io[1] as number;
  }

  set usedIdx(v: number) {
    this.#io[1] = v;
  }

  /** Sets the queue size and sizes the segment arrays (a chain is at most `num` descriptors, §2.7.5.3.1). */
  setNum(num: number): void {
    this.num = num;
    this.segRegion = new Uint8Array(num);
    this.segOff = new Float64Array(num);
    this.segLen = new Uint32Array(num);
    this.segGpa = new Float64Array(num);
  }

  /** True when rings are mapped, and the ring may be used (size, kick fd, enabled). */
  get ready(): boolean {
    return this.#desc !== undefined && this.enabled && this.kickFd >= 0;
  }

  /**
   * Translates the ring addresses through `mem` (after SET_VRING_ADDR and
   * after every new memory table). Throws {@link VhostRingError} when a part
   * lies outside memory or is misaligned.
   */
  attach(mem: GuestMemory | undefined): void {
    this.#desc = this.#avail = this.#used = this.#usedU16 = this.#availU16 = undefined;
    if (this.#vr) this.#n?.vringAttach(this.#vr);
    this.#mem = mem;
    const a = this.addrs;
    if (!mem || !a || this.num === 0) return;
    const n = this.num;
    const part = (what: string, uva: number, len: number, align: number): [Buffer, number, number] => {
      if (uva % align !== 0)
        throw new VhostRingError(
          `ring ${this.index}: ${what} address 0x${uva.toString(16)} is not ${align}-byte aligned`,
        );
      const off = mem.uva(uva, len);
      if (off < 0)
        throw new VhostRingError(
          `ring ${this.index}: ${what} at 0x${uva.toString(16)} (${len} bytes for ${n} entries) is outside the memory table`,
        );
      return [mem.views[mem.region] as Buffer, off, mem.region];
    };
    const [desc, descOff] = part('descriptor table', a.desc, 16 * n, 16);
    const [avail, availOff, availRegion] = part('available ring', a.avail, 6 + 2 * n, 2);
    const [used, usedOff, usedRegion] = part('used ring', a.used, 6 + 8 * n, 4);
    this.#desc = desc;
    this.#descOff = descOff;
    this.#avail = avail;
    this.#availOff = availOff;
    this.#availU16 = mem.u16[availRegion];
    this.#used = used;
    this.#usedOff = usedOff;
    this.#usedU16 = mem.u16[usedRegion];
    if (this.#vr) {
      const gpas = Float64Array.from(mem.regions, (r) => r.gpa);
      this.#n?.vringAttach(
        this.#vr,
        mem.views,
        gpas,
        n,
        desc.subarray(descOff, descOff + 16 * n),
        avail.subarray(availOff, availOff + 6 + 2 * n),
        used.subarray(usedOff, usedOff + 6 + 8 * n),
      );
    }
  }

  /** Forgets the mapping (the memory table is going away or the ring stopped). */
  detach(): void {
    this.#desc = this.#avail = this.#used = this.#usedU16 = this.#availU16 = undefined;
    if (this.#vr) this.#n?.vringAttach(this.#vr);
    this.#mem = undefined;
  }

  /**
   * Buffers the driver has made available and we have not taken, or -1 (with
   * {@link error}) when the available index ran more than a queue size ahead.
   */
  availCount(): number {
    const u16 = this.#availU16;
    if (!u16) return 0;
    // One 16-bit load: Buffer.readUInt16LE reads byte by byte and can tear while the driver updates the index.
    const idx = u16[(this.#availOff + 2) >>> 1] as number;
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.num) {
      this.error = `ring ${this.index}: available index ${idx} is ${n} entries ahead of ${this.lastAvail & 0xffff} (queue size ${this.num})`;
      return -1;
    }
    return n;
  }

  /** Takes the next available head (call only when availCount() > 0); -1 with {@link error} for a bad index. */
  pop(): number {
    const avail = this.#avail as Buffer;
    const head = avail.readUInt16LE(this.#availOff + 4 + 2 * (this.lastAvail % this.num));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (head >= this.num) {
      this.error = `ring ${this.index}: head ${head} beyond queue size ${this.num}`;
      return -1;
    }
    return head;
  }

  /**
   * Walks the chain at `head` into the segment arrays from slot `base` on.
   * `writable`: the device writes these buffers (receive) rather than reads
   * them (transmit). Returns the new segment count, or -1 with {@link error}.
   */
  walk(head: number, writable: boolean, base: number): number {
    const mem = this.#mem as GuestMemory;
    let table = this.#desc as Buffer;
    let tableOff = this.#descOff;
    let size = this.num;
    let i = head;
    let seen = 0;
    let indirect = false;
    let count = base;
    for (;;) {
      if (++seen > size) return this.#fail(`descriptor chain at head ${head} is longer than ${size} (a loop?)`);
      const d = tableOff + 16 * i;
      const addr = readU64(table, d);
      const len = table.readUInt32LE(d + 8);
      const flags = table.readUInt16LE(d + 12);
      const next = table.readUInt16LE(d + 14);
      if (flags & DESC_F_INDIRECT) {
        if (indirect) return this.#fail(`nested indirect table at head ${head}`);
        if (flags & DESC_F_NEXT) return this.#fail(`descriptor ${i} is both INDIRECT and NEXT`);
        if (len === 0 || len % 16 !== 0) return this.#fail(`indirect table of ${len} bytes at head ${head}`);
        const off = mem.gpa(addr, len);
        if (off < 0) return this.#fail(`indirect table 0x${addr.toString(16)}+${len} is outside guest memory`);
        table = mem.views[mem.region] as Buffer;
        tableOff = off;
        size = len / 16;
        i = 0;
        seen = 0;
        indirect = true;
        continue;
      }
      if (((flags & DESC_F_WRITE) !== 0) !== writable)
        return this.#fail(
          `descriptor ${i} at head ${head} is device-${writable ? 'readable' : 'writable'} in a ${writable ? 'receive' : 'transmit'} queue`,
        );
      if (len > 0) {
        const off = mem.gpa(addr, len);
        if (off < 0) return this.#fail(`buffer 0x${addr.toString(16)}+${len} at head ${head} is outside guest memory`);
        if (count >= this.segOff.length)
          return this.#fail(`more than ${this.num} buffers in the chain at head ${head}`);
        this.segRegion[count] = mem.region;
        this.segOff[count] = off;
        this.segLen[count] = len;
        this.segGpa[count] = addr;
        count++;
      }
      if (!(flags & DESC_F_NEXT)) return count;
      if (next >= size) return this.#fail(`next index ${next} beyond table size ${size} at head ${head}`);
      i = next;
    }
  }

  /**
   * Native fast path of transmit: takes up to `max` simple chains with frames
   * of minLen..maxLen bytes (slots in {@link txOut}), writes their used
   * elements (publish with {@link publish} once the frames are handed on).
   * Returns how many; the chain after them (if any) needs {@link pop} and
   * {@link walk}. 0 without the addon or while dirty logging.
   */
  txBatch(max: number, minLen: number, maxLen: number): number {
    if (this.#vr === undefined || this.log !== undefined) return 0;
    return (this.#n as NativeAddon).vringTx(this.#vr, Math.min(max, 256), minLen, maxLen, this.txOut);
  }

  /**
   * Native fast path of receive: header + frame into the next chain when it
   * is one big-enough writable buffer (with {@link mrgRx}: into as many
   * one-buffer chains as it needs), published. 0 done, 1 no buffer, 2 use
   * the walk (also without the addon or while dirty logging).
   */
  rxOne(buf: Buffer, off: number, len: number): number {
    if (this.#vr === undefined || this.log !== undefined) return 2;
    return (this.#n as NativeAddon).vringRx(this.#vr, buf, off, len);
  }

  /** True when {@link rxBatch} may take frames (the addon is there and no dirty log is kept). */
  get fast(): boolean {
    return this.#vr !== undefined && this.log === undefined;
  }

  /**
   * Native receive of a batch from `src`: frames[2k] = offset, frames[2k+1]
   * = length. Publishes once; returns how many were done, stopping at the
   * first frame {@link rxOne} would not take (0 without the addon or while
   * dirty logging: see {@link fast}).
   */
  rxBatch(src: Buffer, frames: Uint32Array, count: number): number {
    if (this.#vr === undefined || this.log !== undefined) return 0;
    return (this.#n as NativeAddon).vringRxBatch(this.#vr, src, frames, count);
  }

  #fail(msg: string): number {
    this.error = `ring ${this.index}: ${msg}`;
    return -1;
  }

  /** View of guest-memory region `r`. */
  regionView(r: number): Buffer {
    return (this.#mem as GuestMemory).views[r] as Buffer;
  }

  /** Region view of segment `s`. */
  view(s: number): Buffer {
    return (this.#mem as GuestMemory).views[this.segRegion[s] as number] as Buffer;
  }

  /** Writes a used element (not yet visible to the driver: see {@link publish}). */
  pushUsed(head: number, len: number): void {
    const used = this.#used as Buffer;
    const slot = this.usedIdx % this.num;
    const e = this.#usedOff + 4 + 8 * slot;
    used.writeUInt32LE(head, e);
    used.writeUInt32LE(len, e + 4);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    const log = this.log;
    if (log && this.addrs && this.addrs.flags & VRING_F_LOG) log.mark(this.addrs.log + 4 + 8 * slot, 8);
  }

  /** Publishes the used elements written so far by storing the used index (release, §2.7.8.2). */
  publish(): void {
    const u16 = this.#usedU16;
    if (!u16) return;
    Atomics.store(u16, (this.#usedOff + 2) >>> 1, this.usedIdx);
    const log = this.log;
    if (log && this.addrs && this.addrs.flags & VRING_F_LOG) log.mark(this.addrs.log + 2, 2);
  }

  /**
   * Whether the driver wants an interrupt for what was published since the
   * last call (§2.7.10: used_event with EVENT_IDX, else the NO_INTERRUPT flag).
   */
  needsCall(): boolean {
    const u16 = this.#availU16;
    if (!u16) return false;
    const now = this.usedIdx;
    const old = this.#signalledUsed;
    this.#signalledUsed = now;
    if (now === old) return false;
    if (this.eventIdx) {
      const event = u16[(this.#availOff + 4 + 2 * this.num) >>> 1] as number;
      return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return ((u16[this.#availOff >>> 1] as number) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks for a kick when the driver adds buffers beyond those it has made
   * available so far (EVENT_IDX: avail_event = the available index now, as
   * Linux vhost_enable_notify does; stored with a full barrier so the re-read
   * that follows cannot pass it). Not lastAvail: on a receive ring waiting
   * for more mergeable buffers than are there, the driver has already passed
   * lastAvail and would never kick. Returns true when the available index
   * moved meanwhile (look again: that kick may have been missed).
   */
  armKick(): boolean {
    const u16 = this.#usedU16;
    const au = this.#availU16;
    if (!u16 || !au || !this.eventIdx) return false;
    const at = (this.#availOff + 2) >>> 1;
    const idx = au[at] as number;
    Atomics.store(u16, (this.#usedOff + 4 + 8 * this.num) >>> 1, idx);
    return au[at] !== idx;
  }

  /** Restarts interrupt accounting (a new ring base). */
  resetSignal(): void {
    this.#signalledUsed = this.usedIdx;
  }
}
