/**
 * The networks each link carries (docs/overlay.md "Network sync"): one link
 * port per network both ends have, made and removed as the two ends'
 * networks change. A TCP/TLS link learns its peer's networks from the
 * messages of network-sync.ts and tells the peer its own; a VXLAN link has
 * no control path and carries every local network.
 *
 * Link ports are created in one place, {@link LinkNetworks.sync}.
 */
import type { FrameSink } from '../port.js';
import type { SwitchPort } from '../switch/switch.js';
import type { Link } from './link.js';
import { LinkPort } from './link-port.js';
import { MAX_PEER_NETWORKS, PeerNetworks, snapshotMessages, updateMessages } from './network-sync.js';
import type { OverlayContext } from './overlay-context.js';
import type { RelayTopology } from './relay-topology.js';
import type { ControlMessage, LinkChannel, OfferedNetwork } from './transport.js';

/** What a network message from the peer did to a link (see {@link LinkNetworks.peerMessage}). */
export type PeerNetworksResult =
  /** Part of a list; more follow. */
  | { kind: 'pending' }
  /** The peer broke the protocol: close the link with this reason. */
  | { kind: 'error'; reason: string }
  /** The link now carries `carried` (network names); `first`: the peer's first full list. */
  | { kind: 'changed'; first: boolean; carried: string[] };

/** `lab, dev` or `10000 networks (lab, dev, web, ...)`: a reason or log line stays short whatever the count. */
export function carrying(names: string[]): string {
  if (names.length === 0) return 'no shared network';
  if (names.length <= 8) return names.join(', ');
  return `${names.length} networks (${names.slice(0, 3).join(', ')}, ...)`;
}

export class LinkNetworks {
  readonly #ctx: OverlayContext;
  readonly #topology: RelayTopology;

  constructor(ctx: OverlayContext, topology: RelayTopology) {
    this.#ctx = ctx;
    this.#topology = topology;
  }

  /** The networks this host offers on its links. */
  local(): OfferedNetwork[] {
    return this.#ctx.sw.networks().map((n) => ({ vni: n.vni, name: n.name }));
  }

  /**
   * A channel came up on `link`: a VXLAN link carries every local network
   * at once; a stream link none until the peer's list has come, and this
   * host's list goes to the peer now. Returns the networks carried now.
   */
  begin(link: Link, ch: LinkChannel): string[] {
    const vxlan = ch.kind === 'vxlan';
    link.peerNets = vxlan ? undefined : new PeerNetworks();
    if (vxlan) link.offered = undefined;
    const carried = this.sync(link);
    if (!vxlan) {
      const mine = this.local();
      link.announced = new Set(mine.map((n) => n.vni));
      for (const m of snapshotMessages(mine)) ch.sendControl(m);
    }
    return carried;
  }

  /** The channel of `link` went: its sync state and its link ports go (their MACs are forgotten). */
  end(link: Link): Promise<void>[] {
    link.peerNets = undefined;
    link.announced = undefined;
    const removing = [...link.ports.values()].map((p) => this.#remove(link, p.sp));
    link.ports.clear();
    if (removing.length > 0) this.#ctx.portsChanged(link.peer);
    return removing;
  }

  /**
   * Makes the link's ports match the networks both ends have now: adds the
   * missing ones, removes those no longer shared. Returns the carried names.
   */
  sync(link: Link): string[] {
    const ch = link.channel;
    if (!ch) return [];
    const sw = this.#ctx.sw;
    const want = new Map<number, string>();
    // A stream link before its peer's list: nothing yet; a VXLAN link: everything.
    const offered = link.peerNets ? link.peerNets.offered : undefined;
    if (offered !== undefined || link.peerNets === undefined)
      for (const net of sw.networks()) if (offered === undefined || offered.has(net.vni)) want.set(net.vni, net.name);
    let changed = false;
    for (const [vni, p] of link.ports) {
      const name = want.get(vni);
      if (name !== undefined && p.sp.networks()[0] === name) continue;
      link.ports.delete(vni);
      void this.#remove(link, p.sp);
      changed = true;
    }
    for (const [vni, netName] of want) {
      if (link.ports.has(vni)) continue;
      this.#addPort(link, ch, vni, netName);
      changed = true;
    }
    if (changed) this.#ctx.portsChanged(link.peer);
    return [...link.ports.values()].map((p) => p.sp.networks()[0] as string);
  }

  /**
   * The link port of `link` on network `netName`: the only place link ports
   * are made. Its name (`link/LINK/NETWORK`) marks it as the overlay's.
   */
  #addPort(link: Link, ch: LinkChannel, vni: number, netName: string): void {
    const sw = this.#ctx.sw;
    const topology = this.#topology;
    const relay = topology.relay;
    const name = `link/${link.name}/${netName}`;
    let sink: FrameSink = () => undefined;
    const sp = sw.addPort(name, { network: netName, link: relay ? 'relay' : 'link', maxMacs: 65536 }, (s) => {
      sink = s;
      return new LinkPort(name, vni, ch, relay ? (len) => topology.relayed(link, len) : undefined);
    });
    sw.portState(sp, 'up');
    link.ports.set(vni, { sp, sink });
    topology.linkOfPort.set(sp.id, link);
    if (link.shaper) sw.shareEgress(name, link.shaper.egress, link.shaperTag + vni);
  }

  /** Removes one link port from the switch; its counters stay in the link's totals. */
  #remove(link: Link, sp: SwitchPort): Promise<void> {
    this.#topology.linkOfPort.delete(sp.id);
    link.pastDown += sp.counters.down;
    link.pastSplit += sp.counters.split_horizon;
    return this.#ctx.sw.removePort(sp.name).catch(() => undefined);
  }

  /**
   * The local networks changed (added or deleted): every link re-computes
   * what it carries, and tells its peer (TCP/TLS) which networks this host has now.
   */
  changed(): void {
    const mine = this.local();
    const now = new Set(mine.map((n) => n.vni));
    for (const l of this.#ctx.links.values()) {
      if (!l.channel) continue;
      this.sync(l);
      const told = l.announced;
      if (told === undefined) continue;
      // Only what changed since the peer was last told (networks-update), in records under the limit.
      const add = mine.filter((n) => !told.has(n.vni));
      const remove = [...told].filter((v) => !now.has(v));
      for (const n of add) told.add(n.vni);
      for (const v of remove) told.delete(v);
      for (const m of updateMessages(add, remove)) l.channel.sendControl(m);
    }
  }

  /** Removes every link port of network `name` (before the network itself is deleted). */
  async release(name: string): Promise<void> {
    const removing: Promise<void>[] = [];
    for (const l of this.#ctx.links.values()) {
      for (const [vni, p] of l.ports) {
        if (p.sp.networks()[0] !== name) continue;
        l.ports.delete(vni);
        this.#topology.linkOfPort.delete(p.sp.id);
        removing.push(this.#ctx.sw.removePort(p.sp.name).catch(() => undefined));
        this.#ctx.portsChanged(l.peer);
      }
    }
    await Promise.all(removing);
  }

  /** The peer's network list (in parts) or a change of it: the link carries what both have now. */
  peerMessage(link: Link, msg: ControlMessage): PeerNetworksResult {
    const nets = link.peerNets;
    if (!link.channel || !nets) return { kind: 'pending' };
    const r = nets.apply(msg);
    if (r.kind !== 'changed') return r;
    link.offered = nets.offered;
    const carried = this.sync(link);
    if (nets.ignored > 0 && r.first)
      this.#ctx.log.warn(
        { link: link.name, ignored: nets.ignored },
        `link "${link.name}": host "${link.peer}" offers more than ${MAX_PEER_NETWORKS} networks; the rest are ignored`,
      );
    return { kind: 'changed', first: r.first, carried };
  }
}
