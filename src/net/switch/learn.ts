/**
 * Learn and look up, the second stage: a frame's source MAC is learned on its
 * port in its network's FDB (within the port's MAC limit), its destination
 * looked up. Allocates nothing (MACs are number pairs).
 */
import { formatMac } from '../../util/mac.js';
import { LEARN_FULL, LEARN_NEW } from './fdb.js';
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

  /** @param byId port id -> port (the switch's table; ids are reused after removal) */
  constructor(readonly byId: readonly (SwitchPort | undefined)[]) {}

  /** Learns MAC hi:lo on `sp` in `net`: {@link LEARN_KNOWN}, {@link LEARN_CHANGED} or {@link LEARN_REFUSED}. */
  learn(sp: SwitchPort, net: Network, hi: number, lo: number): number {
    if (net.fdb.touch(hi, lo, sp.id, this.now) === sp.id) return LEARN_KNOWN;
    if (sp.learned >= sp.maxMacs) return LEARN_REFUSED;
    const r = net.fdb.learn(hi, lo, sp.id, this.now);
    if (r === LEARN_FULL) return LEARN_KNOWN; // table full: forward without learning (floods)
    sp.learned++;
    if (r !== LEARN_NEW) {
      // The MAC moved here from another port (a migrated VM): re-learned at once.
      const old = this.byId[r];
      if (old) old.learned--;
    }
    return LEARN_CHANGED;
  }

  /** The id of the port MAC hi:lo is behind in `net`, or -1 when unknown. */
  lookup(net: Network, hi: number, lo: number): number {
    return net.fdb.lookup(hi, lo);
  }

  /** Bound once: an FDB entry of port `portId` went away (aging, flush). */
  readonly unlearn = (portId: number): void => {
    const sp = this.byId[portId];
    if (sp) sp.learned--;
  };

  /** Forgets what `sp` learned in its networks; with `count` false its learned count is not kept (the port is going). */
  forget(sp: SwitchPort, count = true): void {
    for (const net of sp.memberOf()) net.fdb.sweep(this.now, 0, count ? this.unlearn : undefined, sp.id);
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
