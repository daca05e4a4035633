/**
 * The QoS scheduler: one module for every shared resource vmlink owns (a
 * shaped egress port, an overlay link, the NBD backends). Items wait in
 * per-flow FIFOs; {@link QosScheduler.dequeue} picks the next one in three
 * phases (HTB-like, Linux sch_htb / Floyd & Jacobson "Link-sharing" 1995):
 *
 * 1. strict priority: a flow marked `priority` (the latency class) is served
 *    first, but only while its own `max` bucket is positive, so it is itself
 *    rate-capped and cannot starve the others; it does not wait for the
 *    aggregate shaper (it is charged to it, so later items wait instead);
 * 2. reservations: a flow whose `min` bucket is positive (it got less than its
 *    guaranteed minimum lately) is served next, round robin among those;
 * 3. DWRR among every other backlogged flow whose `max` bucket allows,
 *    in proportion to weight (Shreedhar & Varghese 1995).
 *
 * An optional aggregate shaper (`rate`, `burst`) bounds everything. The
 * scheduler is work-conserving: whenever some flow is backlogged and neither
 * the shaper nor that flow's own cap holds it back, dequeue returns an item.
 * Every item served is charged to the flow's `min` and `max` buckets (so
 * reserved traffic served through DWRR counts toward the reservation).
 *
 * Buckets run in debt mode ({@link TokenBucket.spend}): an item is sent when
 * the balance is positive and its cost is then subtracted, so items larger
 * than a bucket's burst still pass and long-run rates are exact. Buckets are
 * objects handed in by the caller and may be shared between flows (a port's
 * reservation covering all its classes; one cap for every latency flow).
 *
 * Time comes from the injected clock (ms), so tests run on a virtual clock.
 * Steady state allocates nothing: per-flow rings only grow (doubling).
 */
import { TokenBucket } from './token-bucket.js';

/** Default DWRR quantum in cost units (bytes) per unit of weight: one MTU frame and a bit. */
export const DEFAULT_QOS_QUANTUM = 1600;

/** How one flow is served. */
export interface FlowOptions {
  /** DWRR weight (share of the excess, relative to the other flows); default 1. Ignored for priority flows. */
  weight?: number | undefined;
  /** Strict-priority (latency) flow: served before all others while its `max` bucket allows. */
  priority?: boolean | undefined;
  /** Reservation: the flow is served ahead of DWRR while this bucket (cost units per second) is positive. */
  min?: TokenBucket | undefined;
  /** Cap: the flow waits while this bucket is in debt. */
  max?: TokenBucket | undefined;
}

export interface QosSchedulerOptions {
  /** Milliseconds clock; default `performance.now`. */
  clock?: (() => number) | undefined;
  /** Aggregate rate in cost units (bytes) per second; default unlimited. */
  rate?: number | undefined;
  /** Aggregate burst in cost units; default max(50 ms at `rate`, 64 KiB). */
  burst?: number | undefined;
  /** DWRR credit per unit of weight per round; default {@link DEFAULT_QOS_QUANTUM}. */
  quantum?: number | undefined;
  /** Initial ring capacity of each flow in items (grows by doubling); default 64. */
  initialCapacity?: number | undefined;
}

/** Counters of one flow, read by listings. */
export interface FlowStats {
  /** Items served. */
  items: number;
  /** Cost units (bytes) served. */
  bytes: number;
}

class Flow<T> {
  weight = 1;
  quantum = 0;
  priority = false;
  min: TokenBucket | undefined;
  max: TokenBucket | undefined;
  deficit = 0;
  granted = false;
  items: (T | undefined)[];
  costs: Float64Array;
  head = 0;
  length = 0;
  queuedBytes = 0;
  /** Served so far. */
  bytes = 0;
  /** Served so far. */
  count = 0;

  constructor(capacity: number) {
    this.items = new Array<T | undefined>(capacity).fill(undefined);
    this.costs = new Float64Array(capacity);
  }

  get headCost(): number {
    return this.costs[this.head] as number;
  }

  push(item: T, cost: number): void {
    if (this.length === this.items.length) this.#grow();
    const i = (this.head + this.length) % this.items.length;
    this.items[i] = item;
    this.costs[i] = cost;
    this.length++;
    this.queuedBytes += cost;
  }

  shift(): T {
    const i = this.head;
    const item = this.items[i] as T;
    this.items[i] = undefined;
    this.queuedBytes -= this.costs[i] as number;
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

/** A hierarchical-lite scheduler over flows; flow ids are small integers from {@link QosScheduler.addFlow}. */
export class QosScheduler<T> {
  readonly #clock: () => number;
  readonly #quantum: number;
  readonly #capacity: number;
  readonly #flows: (Flow<T> | undefined)[] = [];
  readonly #free: number[] = [];
  /** Ids of live flows in service order (rebuilt on add/remove: control-plane work). */
  #order: number[] = [];
  #cursor = 0;
  #resCursor = 0;
  #prioCursor = 0;
  #shaper: TokenBucket | undefined;
  #size = 0;
  /** Flow id of the item the last successful {@link dequeue} returned. */
  lastFlow = -1;

  constructor(opts: QosSchedulerOptions = {}) {
    this.#clock = opts.clock ?? (() => performance.now());
    this.#quantum = opts.quantum ?? DEFAULT_QOS_QUANTUM;
    this.#capacity = Math.max(1, opts.initialCapacity ?? 64);
    if (!(this.#quantum > 0)) throw new RangeError(`QoS quantum must be > 0, got ${this.#quantum}`);
    if (opts.rate !== undefined) this.setRate(opts.rate, opts.burst);
  }

  /** Items queued over all flows. */
  get size(): number {
    return this.#size;
  }

  /** The aggregate rate in cost units per second, or undefined when unshaped. */
  get rate(): number | undefined {
    return this.#shaper?.rate;
  }

  /** Sets (or with undefined removes) the aggregate shaper. */
  setRate(rate: number | undefined, burst?: number): void {
    if (rate === undefined) {
      this.#shaper = undefined;
      return;
    }
    // 50 ms: a drain that runs late (a busy event loop, a starved process) does not lose the tokens of the wait.
    const depth = burst ?? Math.max(rate / 20, 64 * 1024);
    if (this.#shaper) this.#shaper.reconfigure(rate, depth, this.#clock());
    else this.#shaper = new TokenBucket(rate, depth, this.#clock());
  }

  /** Adds a flow; returns its id (ids of removed flows are reused). */
  addFlow(opts: FlowOptions = {}): number {
    const f = new Flow<T>(this.#capacity);
    this.#apply(f, opts);
    const id = this.#free.pop() ?? this.#flows.length;
    this.#flows[id] = f;
    this.#order.push(id);
    return id;
  }

  /** Changes how a flow is served; takes effect from its next item. */
  setFlow(id: number, opts: FlowOptions): void {
    this.#apply(this.#get(id), opts);
  }

  /** Removes a flow and returns what it still held (oldest first). */
  removeFlow(id: number): T[] {
    const f = this.#get(id);
    const left: T[] = [];
    while (f.length > 0) left.push(f.shift());
    this.#size -= left.length;
    this.#flows[id] = undefined;
    this.#free.push(id);
    this.#order = this.#order.filter((x) => x !== id);
    this.#cursor = 0;
    return left;
  }

  /** Appends an item of `cost` (> 0) to flow `id`. */
  enqueue(id: number, item: T, cost: number): void {
    this.#get(id).push(item, cost > 0 ? cost : 1);
    this.#size++;
  }

  /** Items queued in flow `id`. */
  queued(id: number): number {
    return this.#get(id).length;
  }

  /** Cost units queued in flow `id`. */
  queuedBytes(id: number): number {
    return this.#get(id).queuedBytes;
  }

  /** Served items and bytes of flow `id`. */
  stats(id: number): FlowStats {
    const f = this.#get(id);
    return { items: f.count, bytes: f.bytes };
  }

  /** The next item, or undefined when nothing may be sent at `now` (see {@link nextAt}). */
  dequeue(now: number = this.#clock()): T | undefined {
    if (this.#size === 0) return undefined;
    // Priority flows may take the aggregate shaper into debt (the next items wait it off): a latency item
    // need not wait for the tokens of the bulk item before it. Their own caps bound that debt.
    let id = this.#pickPriority(now);
    if (id < 0) {
      if (this.#shaper !== undefined && !this.#shaper.positive(now)) return undefined;
      id = this.#pickReserved(now);
      if (id < 0) id = this.#pickDwrr(now);
      if (id < 0) return undefined;
    }
    const f = this.#flows[id] as Flow<T>;
    const cost = f.headCost;
    const item = f.shift();
    this.#size--;
    f.bytes += cost;
    f.count++;
    // A reservation is a floor, not a savings account: its debt is bounded by one burst.
    if (f.min !== undefined) f.min.spend(cost, now, f.min.burst);
    if (f.max !== undefined) f.max.spend(cost, now);
    if (this.#shaper !== undefined) this.#shaper.spend(cost, now);
    this.lastFlow = id;
    return item;
  }

  /**
   * When dequeue may next return an item: `now` if at once, a later time (ms)
   * when the shaper or caps hold every backlogged flow back, Infinity when empty.
   */
  nextAt(now: number = this.#clock()): number {
    if (this.#size === 0) return Number.POSITIVE_INFINITY;
    let wait = Number.POSITIVE_INFINITY;
    let prio = Number.POSITIVE_INFINITY;
    for (let k = 0; k < this.#order.length; k++) {
      const f = this.#flows[this.#order[k] as number] as Flow<T>;
      if (f.length === 0) continue;
      const w = f.max === undefined ? 0 : f.max.waitMs(0, now);
      if (f.priority) {
        if (w < prio) prio = w;
      } else if (w < wait) wait = w;
    }
    if (this.#shaper !== undefined && wait !== Number.POSITIVE_INFINITY) {
      const s = this.#shaper.waitMs(0, now);
      if (s > wait) wait = s;
    }
    return now + Math.min(wait, prio);
  }

  #apply(f: Flow<T>, opts: FlowOptions): void {
    const w = opts.weight ?? 1;
    if (!(w > 0) || !Number.isFinite(w)) throw new RangeError(`QoS weight must be a positive number, got ${w}`);
    f.weight = w;
    f.quantum = w * this.#quantum;
    f.priority = opts.priority === true;
    f.min = opts.min;
    f.max = opts.max;
  }

  /** Strict priority, round robin among priority flows; each is held by its own cap. */
  #pickPriority(now: number): number {
    const order = this.#order;
    const n = order.length;
    for (let k = 0; k < n; k++) {
      const idx = (this.#prioCursor + k) % n;
      const f = this.#flows[order[idx] as number] as Flow<T>;
      if (!f.priority || f.length === 0) continue;
      if (f.max !== undefined && !f.max.positive(now)) continue;
      this.#prioCursor = (idx + 1) % n;
      return order[idx] as number;
    }
    return -1;
  }

  /** Flows below their reservation, round robin. */
  #pickReserved(now: number): number {
    const order = this.#order;
    const n = order.length;
    for (let k = 0; k < n; k++) {
      const idx = (this.#resCursor + k) % n;
      const f = this.#flows[order[idx] as number] as Flow<T>;
      if (f.priority || f.length === 0 || f.min === undefined) continue;
      if (!f.min.positive(now)) continue;
      if (f.max !== undefined && !f.max.positive(now)) continue;
      this.#resCursor = (idx + 1) % n;
      return order[idx] as number;
    }
    return -1;
  }

  /**
   * DWRR over eligible flows. The cursor stays on a flow while its deficit
   * covers its head item; a flow passed over (empty or capped) is not granted
   * credit. When a whole pass serves nothing, the rounds every eligible flow
   * needs are granted at once instead of spun through.
   */
  #pickDwrr(now: number): number {
    const order = this.#order;
    const n = order.length;
    if (n === 0) return -1;
    let visits = 0;
    let eligible = 0;
    // Bound: two passes before and two after a skip of rounds always serve an eligible flow.
    for (let guard = 0; guard < 4 * n + 4; guard++) {
      if (this.#cursor >= n) this.#cursor = 0;
      const id = order[this.#cursor] as number;
      const f = this.#flows[id] as Flow<T>;
      if (f.priority || f.length === 0 || (f.max !== undefined && !f.max.positive(now))) {
        if (f.length === 0) f.deficit = 0;
        f.granted = false;
        this.#cursor++;
      } else {
        eligible++;
        if (!f.granted) {
          f.deficit += f.quantum;
          f.granted = true;
        }
        if (f.headCost <= f.deficit) {
          f.deficit -= f.headCost;
          if (f.length === 1) {
            // It empties with this item: it leaves the round without credit.
            f.deficit = 0;
            f.granted = false;
            this.#cursor++;
          }
          return id;
        }
        f.granted = false;
        this.#cursor++;
      }
      if (++visits === n) {
        if (eligible === 0) return -1;
        this.#skipRounds(now);
        visits = 0;
        eligible = 0;
      }
    }
    return -1;
  }

  #skipRounds(now: number): void {
    let rounds = Number.POSITIVE_INFINITY;
    for (const id of this.#order) {
      const f = this.#flows[id] as Flow<T>;
      if (f.priority || f.length === 0 || (f.max !== undefined && !f.max.positive(now))) continue;
      const need = Math.ceil((f.headCost - f.deficit) / f.quantum) - 1;
      if (need < rounds) rounds = need;
    }
    if (!(rounds > 0) || rounds === Number.POSITIVE_INFINITY) return;
    for (const id of this.#order) {
      const f = this.#flows[id] as Flow<T>;
      if (f.priority || f.length === 0 || (f.max !== undefined && !f.max.positive(now))) continue;
      f.deficit += rounds * f.quantum;
    }
  }

  #get(id: number): Flow<T> {
    const f = this.#flows[id];
    if (f === undefined) throw new RangeError(`QoS flow ${id} does not exist`);
    return f;
  }
}
