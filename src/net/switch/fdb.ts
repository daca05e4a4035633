/**
 * Forwarding database of one network: MAC -> port id, with last-seen times
 * for aging.
 *
 * An open-addressing hash table (linear probing, backward-shift deletion)
 * over typed arrays: a lookup or a refresh allocates nothing, and MACs are
 * held as two integers (high 16 bits, low 32 bits), never as strings or
 * boxed numbers. The table grows by doubling up to `maxEntries`.
 *
 * An entry is learned (aged, moved by the next frame from another port) or
 * pinned: installed by the control plane ({@link Fdb.pin}), never aged; the
 * learn stage decides who may move a pinned entry (learn.ts).
 */

const EMPTY = -1;
const TWO32 = 0x1_0000_0000;

/** Result of {@link Fdb.learn} when the table is full and the MAC is new. */
export const LEARN_FULL = -2;
/** Result of {@link Fdb.learn} for a MAC not seen before. */
export const LEARN_NEW = -1;

/** An entry went away (see {@link Fdb.sweep}): its port, MAC (hi, lo) and whether it was pinned. */
export type FdbRemoved = (port: number, hi: number, lo: number, pinned: boolean) => void;

/** One entry, as listed by {@link Fdb.entries}. */
export interface FdbEntry {
  mac: number;
  port: number;
  /** Time last seen, ms on the switch clock. */
  seen: number;
  /** Installed by {@link Fdb.pin}, not learned. */
  pinned: boolean;
}

export class Fdb {
  #hi: Int32Array;
  #lo: Int32Array;
  #port: Int32Array;
  #seen: Float64Array;
  /** 1: the entry is pinned (installed, not aged). */
  #pin: Uint8Array;
  #mask: number;
  #size = 0;
  readonly #maxEntries: number;

  /** @param maxEntries most MACs this network learns (default 65536); beyond it new MACs are not learned. */
  constructor(maxEntries = 65536) {
    this.#maxEntries = maxEntries;
    const cap = 64;
    this.#hi = new Int32Array(cap).fill(EMPTY);
    this.#lo = new Int32Array(cap);
    this.#port = new Int32Array(cap);
    this.#seen = new Float64Array(cap);
    this.#pin = new Uint8Array(cap);
    this.#mask = cap - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /** Port id for the MAC (hi: top 16 bits, lo: low 32 bits), or -1. */
  lookup(hi: number, lo: number): number {
    const slot = this.#find(hi, lo | 0);
    return slot < 0 ? -1 : (this.#port[slot] as number);
  }

  /**
   * The common case of learning in one probe: when the MAC is already on
   * `port`, refreshes its time. Returns the port id the MAC is on (unchanged
   * when it is another port), or -1 when it is not known.
   */
  touch(hi: number, lo: number, port: number, now: number): number {
    const slot = this.#find(hi, lo | 0);
    if (slot < 0) return -1;
    const p = this.#port[slot] as number;
    if (p === port) this.#seen[slot] = now;
    return p;
  }

  /**
   * Records that the MAC was seen on `port` at `now`.
   * Returns {@link LEARN_NEW} for a new entry, {@link LEARN_FULL} when a new
   * MAC could not be stored, or the port id the MAC was on before (equal to
   * `port` for a refresh, another id when the MAC moved: it now points to
   * `port` at once). A pinned entry becomes a learned one.
   */
  learn(hi: number, lo: number, port: number, now: number): number {
    return this.#put(hi, lo, port, now, 0);
  }

  /**
   * Installs the MAC toward `port`, pinned: never aged, kept by
   * {@link sweep} of its port unless asked. Returns as {@link learn} does.
   */
  pin(hi: number, lo: number, port: number, now: number): number {
    return this.#put(hi, lo, port, now, 1);
  }

  /** True when the MAC has a pinned entry. */
  pinned(hi: number, lo: number): boolean {
    const slot = this.#find(hi, lo | 0);
    return slot >= 0 && this.#pin[slot] === 1;
  }

  /** Removes the MAC's entry if it is pinned; returns the port it was toward, or -1 (a learned entry stays). */
  unpin(hi: number, lo: number): number {
    const slot = this.#find(hi, lo | 0);
    if (slot < 0 || this.#pin[slot] !== 1) return -1;
    const port = this.#port[slot] as number;
    this.#removeAt(slot);
    return port;
  }

  #put(hi: number, lo: number, port: number, now: number, pin: number): number {
    const l = lo | 0;
    let i = this.#hash(hi, l);
    for (;;) {
      const h = this.#hi[i] as number;
      if (h === EMPTY) break;
      if (h === hi && this.#lo[i] === l) {
        const prev = this.#port[i] as number;
        this.#port[i] = port;
        this.#seen[i] = now;
        this.#pin[i] = pin;
        return prev;
      }
      i = (i + 1) & this.#mask;
    }
    if (this.#size >= this.#maxEntries) return LEARN_FULL;
    if ((this.#size + 1) * 2 > this.#mask + 1) {
      this.#grow();
      i = this.#hash(hi, l);
      while (this.#hi[i] !== EMPTY) i = (i + 1) & this.#mask;
    }
    this.#hi[i] = hi;
    this.#lo[i] = l;
    this.#port[i] = port;
    this.#seen[i] = now;
    this.#pin[i] = pin;
    this.#size++;
    return LEARN_NEW;
  }

  /** Removes one MAC; returns the port it was on, or -1. */
  forget(hi: number, lo: number): number {
    const slot = this.#find(hi, lo | 0);
    if (slot < 0) return -1;
    const port = this.#port[slot] as number;
    this.#removeAt(slot);
    return port;
  }

  /**
   * Removes learned entries not seen for more than `maxAgeMs` (when `port` is
   * -1), or every learned entry of `port` (when `port` >= 0; its pinned ones
   * too with `pinned`). Calls `onRemove` for each. Returns the number removed.
   */
  sweep(now: number, maxAgeMs: number, onRemove?: FdbRemoved, port = -1, pinned = false): number {
    let removed = 0;
    let i = 0;
    // Backward-shift deletion may move a later entry into slot i: re-check i
    // before advancing. Entries shifted across the wrap-around are visited again
    // at the start, which is harmless (they are re-tested, not double-counted:
    // a removed slot becomes EMPTY).
    while (i <= this.#mask) {
      const h = this.#hi[i] as number;
      const p = this.#port[i] as number;
      const pin = this.#pin[i] === 1;
      const stale =
        h !== EMPTY &&
        (port >= 0 ? p === port && (pinned || !pin) : !pin && now - (this.#seen[i] as number) > maxAgeMs);
      if (stale) {
        const lo = this.#lo[i] as number;
        this.#removeAt(i);
        removed++;
        onRemove?.(p, h, lo, pin);
      } else {
        i++;
      }
    }
    return removed;
  }

  /** Every entry (allocates: for listings, not the data path). */
  entries(): FdbEntry[] {
    const out: FdbEntry[] = [];
    for (let i = 0; i <= this.#mask; i++) {
      const h = this.#hi[i] as number;
      if (h === EMPTY) continue;
      out.push({
        mac: h * TWO32 + ((this.#lo[i] as number) >>> 0),
        port: this.#port[i] as number,
        seen: this.#seen[i] as number,
        pinned: this.#pin[i] === 1,
      });
    }
    return out;
  }

  /** Removes everything. */
  clear(): void {
    this.#hi.fill(EMPTY);
    this.#size = 0;
  }

  #hash(hi: number, lo: number): number {
    // Mix with two multiplicative hashes; the low 24 bits of a MAC (the NIC part) vary most.
    let h = Math.imul(lo ^ (lo >>> 16), 0x45d9f3b) ^ Math.imul(hi, 0x27d4eb2d);
    h ^= h >>> 15;
    return h & this.#mask;
  }

  #find(hi: number, lo: number): number {
    let i = this.#hash(hi, lo);
    for (;;) {
      const h = this.#hi[i] as number;
      if (h === EMPTY) return -1;
      if (h === hi && this.#lo[i] === lo) return i;
      i = (i + 1) & this.#mask;
    }
  }

  #removeAt(slot: number): void {
    // Backward-shift deletion (Knuth 6.4 Algorithm R): keep every probe chain unbroken.
    let hole = slot;
    let j = slot;
    for (;;) {
      j = (j + 1) & this.#mask;
      const h = this.#hi[j] as number;
      if (h === EMPTY) break;
      const home = this.#hash(h, this.#lo[j] as number);
      // Move j into the hole unless its home lies cyclically in (hole, j].
      const inRange = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (inRange) continue;
      this.#hi[hole] = h;
      this.#lo[hole] = this.#lo[j] as number;
      this.#port[hole] = this.#port[j] as number;
      this.#seen[hole] = this.#seen[j] as number;
      this.#pin[hole] = this.#pin[j] as number;
      hole = j;
    }
    this.#hi[hole] = EMPTY;
    this.#size--;
  }

  #grow(): void {
    const oldHi = this.#hi;
    const oldLo = this.#lo;
    const oldPort = this.#port;
    const oldSeen = this.#seen;
    const oldPin = this.#pin;
    const cap = (this.#mask + 1) * 2;
    this.#hi = new Int32Array(cap).fill(EMPTY);
    this.#lo = new Int32Array(cap);
    this.#port = new Int32Array(cap);
    this.#seen = new Float64Array(cap);
    this.#pin = new Uint8Array(cap);
    this.#mask = cap - 1;
    for (let k = 0; k < oldHi.length; k++) {
      const h = oldHi[k] as number;
      if (h === EMPTY) continue;
      const lo = oldLo[k] as number;
      let i = this.#hash(h, lo);
      while (this.#hi[i] !== EMPTY) i = (i + 1) & this.#mask;
      this.#hi[i] = h;
      this.#lo[i] = lo;
      this.#port[i] = oldPort[k] as number;
      this.#seen[i] = oldSeen[k] as number;
      this.#pin[i] = oldPin[k] as number;
    }
  }
}
