/**
 * Shared shaping of links (docs/qos.md "Link QoS"): a link with a QoS
 * capacity has one shaper (link-qos.ts) shared by all its link ports; on a
 * spoke, the direct links to other spokes leave over the same uplink as the
 * link to the hub, so they share its shaper. The QoS of links accepted from
 * a peer is kept by host id, and applied whenever that peer dials in.
 */
import type { Link } from './link.js';
import { type LinkQosPolicy, LinkShaper, linkOverhead } from './link-qos.js';
import type { OverlayContext } from './overlay-context.js';
import type { RelayTopology } from './relay-topology.js';
import type { PeerHello } from './transport.js';

/** A link with a QoS capacity, for admission (qos service). */
export interface ShapedLink {
  name: string;
  policy: LinkQosPolicy;
  /** Undefined for a peer's link that has not dialled in yet. */
  shaper: LinkShaper | undefined;
  /** The networks it carries or may carry. */
  networks: string[];
}

export class LinkShaping {
  readonly #ctx: OverlayContext;
  readonly #topology: RelayTopology;
  /** QoS of the links accepted from these hosts (overlay.peer_qos, then changes over the API). */
  readonly #peerQos: Map<string, LinkQosPolicy>;

  constructor(ctx: OverlayContext, topology: RelayTopology) {
    this.#ctx = ctx;
    this.#topology = topology;
    this.#peerQos = new Map(ctx.o.peerQos ?? []);
  }

  /** Sets (or with undefined removes) a link's QoS: one shaper at its capacity shared by all its link ports. */
  set(link: Link, policy: LinkQosPolicy | undefined): void {
    // A link accepted from a peer is re-made when the peer dials in again: keep its QoS by host.
    if (link.source === 'peer' && link.peer !== undefined) {
      if (policy) this.#peerQos.set(link.peer, policy);
      else this.#peerQos.delete(link.peer);
    }
    // A link sharing its uplink's shaper gets its own when given a policy, none without.
    if (link.shaper && !link.shaperOwned) this.release(link);
    if (policy === undefined) {
      this.release(link);
      return;
    }
    if (link.shaper) {
      link.shaper.set(policy);
      return;
    }
    const kind = this.#ctx.transportOf(link.spec).kind;
    this.join(link, new LinkShaper(this.#ctx.sw, link.name, policy, linkOverhead(kind)), true);
  }

  /** A peer dialled in on `link`: its QoS by host, or (another spoke) this spoke's uplink shaper. */
  accepted(link: Link, peer: PeerHello): void {
    if (link.shaper) return;
    const q = this.#peerQos.get(peer.host);
    if (q !== undefined) this.set(link, q);
    else if (!peer.relay) {
      // Another spoke dialled this spoke directly: the frames leave over this spoke's uplink too.
      const up = this.#uplink();
      if (up) this.join(link, up, false);
    }
  }

  /** A direct link asked for by the hub behind `via`: it leaves over the same uplink, so it shares its shaper. */
  direct(link: Link, via: Link): void {
    if (via.shaper && via.shaperOwned) this.join(link, via.shaper, false);
  }

  /** Makes `link` send through `shaper` (its own, or its uplink's); false when the shaper is full. */
  join(link: Link, shaper: LinkShaper, owned: boolean): boolean {
    const topology = this.#topology;
    const relayed = topology.relay
      ? (source: number, len: number) => topology.relayedFrom(link, source, len)
      : undefined;
    const base = shaper.join({ channel: () => link.channel, port: (vni) => link.ports.get(vni)?.sp, relayed });
    if (base < 0) {
      this.#ctx.log.warn(
        { link: link.name },
        `link "${link.name}" is not shaped: link "${shaper.owner}"'s shaper is full`,
      );
      return false;
    }
    link.shaper = shaper;
    link.shaperOwned = owned;
    link.shaperTag = base;
    for (const [vni, p] of link.ports) this.#ctx.sw.shareEgress(p.sp.name, shaper.egress, base + vni);
    return true;
  }

  /** Takes `link` out of its shaper; an owner's shaper closes, and the links sharing it leave it too. */
  release(link: Link): void {
    const shaper = link.shaper;
    if (!shaper) return;
    for (const p of link.ports.values()) this.#ctx.sw.shareEgress(p.sp.name, undefined);
    shaper.leave(link.shaperTag);
    link.shaper = undefined;
    if (!link.shaperOwned) return;
    link.shaperOwned = false;
    for (const l of this.#ctx.links.values()) if (l.shaper === shaper) this.release(l);
    shaper.close();
  }

  /** On a spoke: the shaper of its shaped link to a relaying hub (its uplink), which its links to other spokes share. */
  #uplink(): LinkShaper | undefined {
    if (this.#ctx.o.relay) return undefined;
    for (const l of this.#ctx.links.values()) if (l.shaperOwned && l.peerRelays && l.channel) return l.shaper;
    return undefined;
  }

  /** The links with a QoS capacity; `mayCarry` gives the networks of a link by name. */
  shapedLinks(mayCarry: (name: string) => string[]): ShapedLink[] {
    const out: ShapedLink[] = [];
    const shapedPeers = new Set<string>();
    for (const l of this.#ctx.links.values()) {
      if (!l.shaper || !l.shaperOwned) continue;
      out.push({ name: l.name, policy: l.shaper.policy, shaper: l.shaper, networks: mayCarry(l.name) });
      if (l.source === 'peer' && l.peer !== undefined) shapedPeers.add(l.peer);
    }
    // A peer's link with a QoS that has not dialled in yet still counts for admission (it may at any time).
    for (const [host, policy] of this.#peerQos)
      if (!shapedPeers.has(host)) out.push({ name: host, policy, shaper: undefined, networks: mayCarry(host) });
    return out;
  }
}
