/**
 * MAC events for the control plane (a cluster publishes the MACs of its
 * local ports): every change to the set `Switch.localMacs()` lists, as
 * learned (new behind a local port), moved (behind another port now; `local`
 * false: it left this host's ports) and forgotten (aged, flushed, its port
 * removed, its installed location removed). Replayed in order, the events
 * give that set. MACs only ever behind links make none.
 *
 * The learn stage only records an event, as numbers and references into a
 * bounded ring allocated once, and only when a MAC is new or changes port;
 * the ring is drained once per turn of the event loop into the listeners,
 * off the data path. When it is full, further events are dropped and
 * counted, and the listeners are told once, so they resync from localMacs().
 */
import type { Logger } from '../../log.js';
import { formatMac } from '../../util/mac.js';
import type { Network } from './network.js';
import type { SwitchPort } from './switch-port.js';

/** One change of a MAC, as `Switch.onMacEvent` delivers it. */
export interface MacEvent {
  type: 'learned' | 'moved' | 'forgotten';
  network: string;
  mac: string;
  /** The port the MAC is on now ('learned', 'moved') or was on ('forgotten'). */
  port: string;
  /** Whether {@link port} is a local port (not an overlay link). */
  local: boolean;
}

export type MacListener = (ev: MacEvent) => void;

/** Called after the events of a turn when some were dropped (the ring was full): resync. */
export type MacEventsLost = (dropped: number) => void;

export const EV_LEARNED = 0;
export const EV_MOVED = 1;
export const EV_FORGOTTEN = 2;
const TYPES = ['learned', 'moved', 'forgotten'] as const;
const TWO32 = 0x1_0000_0000;

export class MacEvents {
  /** True while anyone listens: the stages record only then (a field, read per recorded change). */
  on = false;
  /** Events dropped because the ring was full, since the switch started. */
  dropped = 0;
  readonly #cap: number;
  readonly #kind: Uint8Array;
  readonly #hi: Int32Array;
  readonly #lo: Int32Array;
  readonly #net: (Network | undefined)[];
  readonly #port: (SwitchPort | undefined)[];
  /** Oldest event's slot, and how many are held. */
  #head = 0;
  #n = 0;
  /** Dropped since the last drain. */
  #lost = 0;
  #scheduled = false;
  readonly #listeners = new Map<MacListener, MacEventsLost | undefined>();
  readonly #log: Logger;

  /** @param capacity most events held between two drains */
  constructor(capacity: number, log: Logger) {
    this.#cap = capacity;
    this.#kind = new Uint8Array(capacity);
    this.#hi = new Int32Array(capacity);
    this.#lo = new Int32Array(capacity);
    this.#net = new Array<Network | undefined>(capacity).fill(undefined);
    this.#port = new Array<SwitchPort | undefined>(capacity).fill(undefined);
    this.#log = log;
  }

  /** Adds a listener; returns the function that removes it. */
  listen(fn: MacListener, lost: MacEventsLost | undefined): () => void {
    this.#listeners.set(fn, lost);
    this.on = true;
    return () => {
      this.#listeners.delete(fn);
      this.on = this.#listeners.size > 0;
    };
  }

  /** Records one event (EV_*) of MAC hi:lo on `sp` in `net`. Allocates nothing but, once per turn, the drain's setImmediate. */
  record(kind: number, net: Network, sp: SwitchPort, hi: number, lo: number): void {
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#drain);
    }
    if (this.#n === this.#cap) {
      this.dropped++;
      this.#lost++;
      return;
    }
    const i = (this.#head + this.#n) % this.#cap;
    this.#kind[i] = kind;
    this.#hi[i] = hi;
    this.#lo[i] = lo;
    this.#net[i] = net;
    this.#port[i] = sp;
    this.#n++;
  }

  /** Bound once: delivers what the ring holds, then tells of drops. Listeners may cause new events (next turn). */
  readonly #drain = (): void => {
    this.#scheduled = false;
    for (let left = this.#n; left > 0; left--) {
      const i = this.#head;
      const net = this.#net[i] as Network;
      const sp = this.#port[i] as SwitchPort;
      this.#net[i] = undefined;
      this.#port[i] = undefined;
      this.#head = (i + 1) % this.#cap;
      this.#n--;
      if (this.#listeners.size === 0) continue;
      const ev: MacEvent = {
        type: TYPES[this.#kind[i] as number] ?? 'learned',
        network: net.spec.name,
        mac: formatMac((this.#hi[i] as number) * TWO32 + ((this.#lo[i] as number) >>> 0)),
        port: sp.name,
        local: sp.local,
      };
      for (const fn of this.#listeners.keys()) this.#call(fn, ev);
    }
    const lost = this.#lost;
    if (lost === 0) return;
    this.#lost = 0;
    this.#log.warn(
      { dropped: lost, capacity: this.#cap },
      'MAC events dropped (more changes in one turn than the ring holds); listeners resync',
    );
    for (const fn of this.#listeners.values()) if (fn) this.#call(fn, lost);
  };

  #call<T>(fn: (arg: T) => void, arg: T): void {
    try {
      fn(arg);
    } catch (err) {
      this.#log.warn({ err }, 'a MAC event listener threw; the switch goes on');
    }
  }
}
