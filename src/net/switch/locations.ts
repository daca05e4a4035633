/**
 * MAC locations installed by the control plane (in a cluster: a MAC another
 * host published, toward the overlay link port that reaches that host), and
 * the listing of this host's own MACs for the control plane to publish.
 *
 * An installed location is a pinned FDB entry (fdb.ts): known unicast from
 * the first frame, no flood; never aged; not moved by copies of the MAC's
 * frames from a link; moved by a frame from a local port (learn.ts: the VM
 * moved here, a 'moved' event tells the control plane); removed with its port.
 */
import type { Logger } from '../../log.js';
import { formatMac, isGroupMac, parseMac } from '../../util/mac.js';
import { MacAddressError, PortNotInNetworkError } from '../errors.js';
import { LEARN_FULL, LEARN_NEW } from './fdb.js';
import { EV_FORGOTTEN, EV_LEARNED, EV_MOVED, type MacEvents } from './mac-events.js';
import type { Network } from './network.js';
import type { SwitchPort } from './switch-port.js';

const TWO32 = 0x1_0000_0000;

/** A MAC of a local port, as `Switch.localMacs` lists it. */
export interface LocalMac {
  network: string;
  mac: string;
  port: string;
}

/** The MAC of a location as a number; throws {@link MacAddressError} for text that is not a unicast MAC. */
export function locationMac(text: string): number {
  const mac = parseMac(text);
  if (mac === undefined || isGroupMac(mac)) throw new MacAddressError(text);
  return mac;
}

export class Locations {
  /** Locations not installed because the network's table was full, since start. */
  full = 0;
  #lastFullLog = -Infinity;

  constructor(
    readonly byId: readonly (SwitchPort | undefined)[],
    readonly events: MacEvents,
    readonly log: Logger,
  ) {}

  /**
   * Installs `mac` in `net` toward `sp`, or removes its installed location
   * (`sp` undefined; a MAC learned meanwhile stays). An entry learned on
   * another port is replaced. Changes to the MACs behind local ports are
   * MAC events as learning's are. Returns false when the network's table is
   * full (nothing installed; logged).
   */
  set(net: Network, mac: number, sp: SwitchPort | undefined, now: number): boolean {
    const hi = Math.floor(mac / TWO32);
    const lo = (mac % TWO32) | 0;
    const fdb = net.fdb;
    const ev = this.events;
    if (sp === undefined) {
      const gone = this.byId[fdb.unpin(hi, lo)];
      if (gone?.local && ev.on) ev.record(EV_FORGOTTEN, net, gone, hi, lo);
      return true;
    }
    if (!sp.memberOf().has(net)) throw new PortNotInNetworkError(sp.name, net.spec.name, sp.networks());
    const learned = fdb.lookup(hi, lo) >= 0 && !fdb.pinned(hi, lo);
    const r = fdb.pin(hi, lo, sp.id, now);
    if (r === LEARN_FULL) {
      this.full++;
      if (now - this.#lastFullLog >= 1000) {
        this.#lastFullLog = now;
        this.log.warn(
          { network: net.spec.name, mac: formatMac(mac), port: sp.name, total: this.full },
          'the network forwarding table is full: location not installed (frames to it flood)',
        );
      }
      return false;
    }
    if (r === LEARN_NEW) {
      if (sp.local && ev.on) ev.record(EV_LEARNED, net, sp, hi, lo);
      return true;
    }
    const old = this.byId[r];
    if (old && learned) old.learned--;
    if (old !== sp && (sp.local || old?.local === true) && ev.on) ev.record(EV_MOVED, net, sp, hi, lo);
    return true;
  }

  /** Every MAC in `nets` behind a local port, learned or installed. */
  localMacs(nets: Iterable<Network>): LocalMac[] {
    const out: LocalMac[] = [];
    for (const net of nets) {
      for (const e of net.fdb.entries()) {
        const sp = this.byId[e.port];
        if (sp?.local) out.push({ network: net.spec.name, mac: formatMac(e.mac), port: sp.name });
      }
    }
    return out;
  }
}
