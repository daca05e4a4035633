/**
 * The relay topology of the overlay (docs/overlay.md "Hub and spokes",
 * "Adaptive direct links"): on a relaying hub, which link a frame being
 * switched came in on, the bytes relayed between each pair of spokes, and
 * the spokes' reports of their direct links (relaying between two hosts
 * with a direct link stops); on a spoke, those reports and the hub's
 * requests for a direct link.
 */
import { DirectPolicy } from './direct.js';
import type { Link } from './link.js';
import type { OverlayContext } from './overlay-context.js';
import type { ControlMessage, TransportAddress } from './transport.js';

/** The host part of a stream channel's remote address (`tcp:HOST:PORT`, `tls:[V6]:PORT`), or undefined. */
export function remoteHostOf(remote: string): string | undefined {
  return /^(?:tcp|tls):\[?([^\]]*?)\]?:\d+$/.exec(remote)?.[1];
}

export class RelayTopology {
  readonly #ctx: OverlayContext;
  readonly #direct: DirectPolicy;
  /** The link whose frame the switch is handling now (set around each link ingress), for relay accounting. */
  rxLink: Link | undefined;
  /** Switch port id -> the link it belongs to (relay accounting of frames leaving a link's shaper). */
  readonly linkOfPort = new Map<number, Link>();
  /**
   * The fabric's hosts (fabric-links.ts): between links to them this host
   * relays only as their hub, between the dial-out hosts of {@link fabricRelayFor};
   * every other pair of fabric hosts is linked directly. Empty outside a fabric.
   */
  fabricHosts: ReadonlySet<string> = new Set();
  fabricRelayFor: ReadonlySet<string> = new Set();

  constructor(ctx: OverlayContext) {
    this.#ctx = ctx;
    this.#direct = new DirectPolicy(ctx.log, ctx.o.directThresholdBps ?? 0);
  }

  /** True on a relaying host (a hub). */
  get relay(): boolean {
    return this.#ctx.o.relay;
  }

  /**
   * A frame from the link being switched now goes out on `to`'s link: count
   * it; false to drop it (the two hosts have a direct link, or are fabric
   * hosts this host is not the hub of: they are linked directly). Data path: no allocation
   * once a pair's counters exist.
   */
  relayed(to: Link, len: number, from = this.rxLink): boolean {
    if (from === undefined || from === to) return true;
    const toPeer = to.peer as string;
    const fromPeer = from.peer as string;
    if (
      (this.fabricHosts.has(toPeer) || this.fabricHosts.has(fromPeer)) &&
      !(this.fabricRelayFor.has(toPeer) && this.fabricRelayFor.has(fromPeer))
    )
      return false;
    if (from.directPeers.has(toPeer) || (from.peer !== undefined && to.directPeers.has(from.peer))) return false;
    from.relayBytes.set(toPeer, (from.relayBytes.get(toPeer) ?? 0) + len);
    from.relayedTotal += len;
    from.relayedTo.set(toPeer, (from.relayedTo.get(toPeer) ?? 0) + len);
    return true;
  }

  /** The relay check of a frame leaving `to`'s shaper, sent by switch port `source`. */
  relayedFrom(to: Link, source: number, len: number): boolean {
    return this.relayed(to, len, this.linkOfPort.get(source));
  }

  /** On a hub: a spoke's report of the hosts it has direct links with. */
  peerLinks(link: Link, msg: ControlMessage): void {
    if (!this.relay || !Array.isArray(msg['hosts'])) return;
    link.directPeers.clear();
    for (const h of msg['hosts'] as unknown[]) if (typeof h === 'string' && h.length <= 32) link.directPeers.add(h);
  }

  /**
   * On a spoke: the hub behind `link` asks for a direct link to another
   * spoke. Returns the link to dial, or undefined when the request is not
   * valid or such a link exists already.
   */
  directRequest(link: Link, msg: ControlMessage): { name: string; connect: TransportAddress } | undefined {
    if (!link.peerRelays || this.relay) return undefined;
    const host = msg['host'];
    const to = msg['connect'] as { host?: unknown; port?: unknown } | undefined;
    if (typeof host !== 'string' || typeof to?.host !== 'string' || !Number.isInteger(to.port)) return undefined;
    const name = `direct-${host}`.slice(0, 32);
    const ctx = this.#ctx;
    if (ctx.byPeer.has(host) || ctx.links.has(name) || host === ctx.o.hostId) return undefined;
    ctx.log.info({ host, connect: to }, `the hub "${link.peer}" asks for a direct link to host "${host}"`);
    return { name, connect: { host: to.host, port: to.port as number } };
  }

  /** A channel came up on `link`: on a spoke, a direct link to another spoke takes over from the relay. */
  linkUp(link: Link): void {
    const ctx = this.#ctx;
    if (!this.relay && !link.peerRelays) {
      // Forget what was learned behind the relay, so traffic floods once and is learned on
      // the direct path (the relay stops carrying it).
      for (const l of ctx.links.values()) if (l.peerRelays) for (const p of l.ports.values()) ctx.sw.flushPort(p.sp);
    }
    this.reportPeers(link.peerRelays ? link : undefined);
  }

  /** Tells every relaying peer (or only `to`) which hosts this host has direct links with. */
  reportPeers(to: Link | undefined): void {
    if (this.relay) return;
    const links = this.#ctx.links.values();
    const hosts: string[] = [];
    for (const l of links) if (l.channel && !l.peerRelays && l.peer !== undefined) hosts.push(l.peer);
    const msg = { type: 'peer-links', hosts };
    if (to) to.channel?.sendControl(msg);
    else for (const l of this.#ctx.links.values()) if (l.channel && l.peerRelays) l.channel.sendControl(msg);
  }

  /** Once a second on a hub: reads the relay counters and asks spokes for direct links where a pair is over the threshold. */
  sample(now: number): void {
    if (this.relay) this.#direct.sample(this.#ctx.links.values(), this.#ctx.byPeer, now);
  }
}
