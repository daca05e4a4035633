/**
 * Learn and look up, the second stage: a frame's source MAC is learned on its
 * port in its network's FDB (within the port's MAC limit), its destination
 * looked up. Allocates nothing (MACs are number pairs).
 *
 * A location installed by the control plane (a pinned entry, locations.ts)
 * is not moved by a copy of the MAC's frames from an overlay link, only by a
 * local port: the VM moved here. A change that concerns a local port (new,
 * moved to or from it, forgotten) is recorded as a MAC event (mac-events.ts),
 * so the events follow exactly what `Switch.localMacs` lists; a refresh
 * records nothing.
 */
import { formatMac } from '../../util/mac.js';
import { type FdbRemoved, LEARN_FULL, LEARN_NEW } from './fdb.js';
import { EV_FORGOTTEN, EV_LEARNED, EV_MOVED, type MacEvents } from './mac-events.js';
import type { Network } from './network.js';
import type { SwitchPort } from './switch-port.js';

/** {@link Learner.learn}: the port's MAC limit refused a new MAC. */
export const LEARN_REFUSED = -1;
/** {@link Learner.learn}: the MAC was known on this port (or the table is full): nothing moved. */
export const LEARN_KNOWN = 0;
/** {@link Learner.learn}: the MAC was learned anew, or moved here from another port. */
export const LEARN_CHANGED = 1;

/** One FDB row as listed by `Switch.fdb`. */
export interface FdbRow {
  network: string;
  mac: string;
  port: string;
  /** Seconds since last seen. */
  age: number;
}

export class Learner {
  /** Coarse time (ms) stamped on FDB entries; the switch's clock tick refreshes it. */
  now = 0;

  /** The network being swept, for {@link unlearn}'s events. */
  #sweeping: Network | undefined;
  /** Whether {@link unlearn} counts removals against the port (not when the port is going). */
  #count = true;

  /**
   * @param byId port id -> port (the switch's table; ids are reused after removal)
   * @param events where changes of local ports' MACs are recorded
   */
  constructor(
    readonly byId: readonly (SwitchPort | undefined)[],
    readonly events: MacEvents,
  ) {}

  /** Learns MAC hi:lo on `sp` in `net`: {@link LEARN_KNOWN}, {@link LEARN_CHANGED} or {@link LEARN_REFUSED}. */
  learn(sp: SwitchPort, net: Network, hi: number, lo: number): number {
    const fdb = net.fdb;
    const was = fdb.touch(hi, lo, sp.id, this.now);
    if (was === sp.id) return LEARN_KNOWN;
    // Only when the MAC is behind another port: a second probe, for installed locations.
    const pinned = was >= 0 && fdb.pinned(hi, lo);
    if (pinned && !sp.local) return LEARN_KNOWN;
    if (sp.learned >= sp.maxMacs) return LEARN_REFUSED;
    const r = fdb.learn(hi, lo, sp.id, this.now);
    if (r === LEARN_FULL) return LEARN_KNOWN; // table full: forward without learning (floods)
    sp.learned++;
    if (r === LEARN_NEW) {
      if (sp.local && this.events.on) this.events.record(EV_LEARNED, net, sp, hi, lo);
      return LEARN_CHANGED;
    }
    // The MAC moved here from another port (a migrated VM): re-learned at once. An installed entry was not counted.
    const old = this.byId[r];
    if (old && !pinned) old.learned--;
    if ((sp.local || old?.local === true) && this.events.on) this.events.record(EV_MOVED, net, sp, hi, lo);
    return LEARN_CHANGED;
  }

  /** The id of the port MAC hi:lo is behind in `net`, or -1 when unknown. */
  lookup(net: Network, hi: number, lo: number): number {
    return net.fdb.lookup(hi, lo);
  }

  /** Bound once: an FDB entry of port `portId` in the network being swept went away (aging, flush, removal). */
  readonly unlearn: FdbRemoved = (portId, hi, lo, pinned) => {
    const sp = this.byId[portId];
    if (!sp) return;
    if (this.#count && !pinned) sp.learned--;
    if (sp.local && this.events.on && this.#sweeping) this.events.record(EV_FORGOTTEN, this.#sweeping, sp, hi, lo);
  };

  /** Ages out the learned MACs of `nets` not seen for `agingMs`; returns how many went. */
  age(nets: Iterable<Network>, now: number, agingMs: number): number {
    let removed = 0;
    for (const net of nets) {
      this.#sweeping = net;
      removed += net.fdb.sweep(now, agingMs, this.unlearn);
    }
    this.#sweeping = undefined;
    return removed;
  }

  /**
   * Forgets what `sp` learned in its networks; with `going` (the port is
   * being removed) also the locations installed toward it, and its learned
   * count is not kept.
   */
  forget(sp: SwitchPort, going = false): void {
    this.#count = !going;
    for (const net of sp.memberOf()) {
      this.#sweeping = net;
      net.fdb.sweep(this.now, 0, this.unlearn, sp.id, going);
    }
    this.#sweeping = undefined;
    this.#count = true;
  }

  /** The FDB rows of `nets` at time `now` (ms), for listings. */
  rows(nets: Iterable<Network>, now: number): FdbRow[] {
    const rows: FdbRow[] = [];
    for (const net of nets) {
      for (const e of net.fdb.entries()) {
        rows.push({
          network: net.spec.name,
          mac: formatMac(e.mac),
          port: this.byId[e.port]?.name ?? '?',
          age: Math.max(0, Math.round((now - e.seen) / 1000)),
        });
      }
    }
    return rows;
  }
}
