/**
 * Deficit weighted round robin (Shreedhar & Varghese, "Efficient fair queuing
 * using deficit round robin", 1995) over any number of FIFO queues.
 *
 * Each queue has a weight; per round it earns `weight * quantum` bytes of
 * credit (its deficit) and sends items from its head while the head's cost
 * fits the deficit. A queue that empties loses its deficit (so idle queues do
 * not hoard credit). The scheduler is work-conserving: {@link Dwrr.dequeue}
 * returns an item whenever any queue holds one.
 *
 * Generic over the item type so the network QoS (frames) and storage (NBD
 * requests) share it. Steady state allocates nothing: each queue is a ring
 * of parallel arrays that only grows (doubling) when it is fuller than ever
 * before, and the active list is a fixed ring of queue ids.
 */

/** Default quantum in bytes per unit of weight: one large NBD request or ~88 MTU frames. */
export const DEFAULT_QUANTUM = 128 * 1024;

class Queue<T> {
  weight: number;
  quantum: number;
  deficit = 0;
  /** True while in the active list. */
  active = false;
  /** True once this round's quantum has been granted (reset when the queue is passed over). */
  granted = false;
  items: (T | undefined)[];
  costs: Float64Array;
  head = 0;
  length = 0;
  bytes = 0;
  removed = false;

  constructor(weight: number, quantum: number, capacity: number) {
    this.weight = weight;
    this.quantum = weight * quantum;
    this.items = new Array<T | undefined>(capacity).fill(undefined);
    this.costs = new Float64Array(capacity);
  }

  push(item: T, cost: number): void {
    if (this.length === this.items.length) this.#grow();
    const i = (this.head + this.length) % this.items.length;
    this.items[i] = item;
    this.costs[i] = cost;
    this.length++;
    this.bytes += cost;
  }

  shift(): T {
    const i = this.head;
    const item = this.items[i] as T;
    this.items[i] = undefined;
    this.bytes -= this.costs[i] as number;
    this.head = (i + 1) % this.items.length;
    this.length--;
    return item;
  }

  #grow(): void {
    const cap = this.items.length * 2;
    const items = new Array<T | undefined>(cap).fill(undefined);
    const costs = new Float64Array(cap);
    for (let k = 0; k < this.length; k++) {
      const j = (this.head + k) % this.items.length;
      items[k] = this.items[j];
      costs[k] = this.costs[j] as number;
    }
    this.items = items;
    this.costs = costs;
    this.head = 0;
  }
}

export interface DwrrOptions {
  /** Credit in cost units (bytes) per unit of weight per round; default {@link DEFAULT_QUANTUM}. */
  quantum?: number;
  /** Initial ring capacity of each queue in items (grows by doubling); default 64. */
  initialCapacity?: number;
}

/** A DWRR scheduler. Queue ids are small integers returned by {@link Dwrr.addQueue}. */
export class Dwrr<T> {
  #quantum: number;
  #capacity: number;
  #queues: (Queue<T> | undefined)[] = [];
  #free: number[] = [];
  /** Ring of active queue ids; the head is the queue being served. */
  #ring = new Int32Array(16);
  #ringHead = 0;
  #ringLen = 0;
  #size = 0;

  constructor(opts: DwrrOptions = {}) {
    this.#quantum = opts.quantum ?? DEFAULT_QUANTUM;
    this.#capacity = Math.max(1, opts.initialCapacity ?? 64);
    if (!(this.#quantum > 0)) throw new RangeError(`DWRR quantum must be > 0, got ${this.#quantum}`);
  }

  /** Items queued over all queues. */
  get size(): number {
    return this.#size;
  }

  /** Adds a queue with a positive weight (share of service relative to the others); returns its id. */
  addQueue(weight: number): number {
    checkWeight(weight);
    const q = new Queue<T>(weight, this.#quantum, this.#capacity);
    const id = this.#free.pop() ?? this.#queues.length;
    this.#queues[id] = q;
    if (this.#queues.length > this.#ring.length) {
      const ring = new Int32Array(this.#ring.length * 2);
      for (let k = 0; k < this.#ringLen; k++) ring[k] = this.#ring[(this.#ringHead + k) % this.#ring.length] as number;
      this.#ring = ring;
      this.#ringHead = 0;
    }
    return id;
  }

  /** Changes a queue's weight; takes effect from its next quantum. */
  setWeight(id: number, weight: number): void {
    checkWeight(weight);
    const q = this.#get(id);
    q.weight = weight;
    q.quantum = weight * this.#quantum;
  }

  /**
   * Removes a queue and returns the items it still held (oldest first) so the
   * caller can fail or re-home them. The id may be reused by a later addQueue.
   */
  removeQueue(id: number): T[] {
    const q = this.#get(id);
    const left: T[] = [];
    while (q.length > 0) left.push(q.shift());
    this.#size -= left.length;
    q.removed = true;
    this.#queues[id] = undefined;
    this.#free.push(id);
    if (q.active) {
      // Compact the ring without this id (rare: queue removal is control-plane work).
      let n = 0;
      const len = this.#ring.length;
      for (let k = 0; k < this.#ringLen; k++) {
        const v = this.#ring[(this.#ringHead + k) % len] as number;
        if (v !== id) this.#ring[(this.#ringHead + n++) % len] = v;
      }
      this.#ringLen = n;
    }
    return left;
  }

  /** Appends an item of `cost` (bytes, > 0) to queue `id`. */
  enqueue(id: number, item: T, cost: number): void {
    const q = this.#get(id);
    q.push(item, cost > 0 ? cost : 1);
    this.#size++;
    if (!q.active) {
      q.active = true;
      q.granted = false;
      q.deficit = 0;
      this.#ring[(this.#ringHead + this.#ringLen) % this.#ring.length] = id;
      this.#ringLen++;
    }
  }

  /** Items queued in queue `id`. */
  queued(id: number): number {
    return this.#get(id).length;
  }

  /** Cost units queued in queue `id`. */
  queuedBytes(id: number): number {
    return this.#get(id).bytes;
  }

  /**
   * The next item by DWRR order, or undefined when every queue is empty.
   * When no active queue can afford its head item this round, the rounds
   * needed are granted at once rather than spun through one by one.
   */
  dequeue(): T | undefined {
    let passes = 0;
    while (this.#ringLen > 0) {
      const id = this.#ring[this.#ringHead] as number;
      const q = this.#queues[id];
      if (q === undefined || q.removed || !q.active) {
        this.#popRing();
        continue;
      }
      if (!q.granted) {
        q.deficit += q.quantum;
        q.granted = true;
      }
      const cost = q.costs[q.head] as number;
      if (cost <= q.deficit) {
        q.deficit -= cost;
        this.#size--;
        const item = q.shift();
        if (q.length === 0) {
          q.active = false;
          q.deficit = 0;
          this.#popRing();
        }
        return item;
      }
      // Head does not fit: keep the deficit, move to the back of the ring.
      q.granted = false;
      this.#popRing();
      this.#ring[(this.#ringHead + this.#ringLen) % this.#ring.length] = id;
      this.#ringLen++;
      if (++passes >= this.#ringLen) {
        this.#skipRounds();
        passes = 0;
      }
    }
    return undefined;
  }

  /** Grants every active queue the whole rounds that all of them need before any head item fits. */
  #skipRounds(): void {
    let rounds = Number.POSITIVE_INFINITY;
    for (let k = 0; k < this.#ringLen; k++) {
      const q = this.#queues[this.#ring[(this.#ringHead + k) % this.#ring.length] as number];
      if (q === undefined || q.removed || !q.active) return;
      const need = Math.ceil(((q.costs[q.head] as number) - q.deficit) / q.quantum) - 1;
      if (need < rounds) rounds = need;
    }
    if (!(rounds > 0) || rounds === Number.POSITIVE_INFINITY) return;
    for (let k = 0; k < this.#ringLen; k++) {
      const q = this.#queues[this.#ring[(this.#ringHead + k) % this.#ring.length] as number] as Queue<T>;
      q.deficit += rounds * q.quantum;
    }
  }

  #popRing(): void {
    this.#ringHead = (this.#ringHead + 1) % this.#ring.length;
    this.#ringLen--;
  }

  #get(id: number): Queue<T> {
    const q = this.#queues[id];
    if (q === undefined) throw new RangeError(`DWRR queue ${id} does not exist`);
    return q;
  }
}

function checkWeight(weight: number): void {
  if (!(weight > 0) || !Number.isFinite(weight))
    throw new RangeError(`DWRR weight must be a positive number, got ${weight}`);
}
