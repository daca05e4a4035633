/**
 * The overlay: links between this daemon and others (docs/overlay.md).
 *
 * This module composes the overlay's parts and is what the daemon uses:
 * the life cycle of links (link-lifecycle.ts: dial, re-dial, accept, one
 * channel per peer host), the networks each link carries (link-networks.ts,
 * with the messages of network-sync.ts), shared shaping (link-shaping.ts)
 * the relay topology (relay-topology.ts: relay accounting, direct
 * links between spokes) and the links made by the fabric (fabric-links.ts).
 * They share the links through overlay-context.ts.
 */
import { LinkExistsError, LinkNotFoundError } from './errors.js';
import { type FabricConflict, FabricLinks, type FabricPlan } from './fabric-links.js';
import {
  addr,
  type Link,
  type LinkSource,
  type LinkSpec,
  type LinkState,
  type LinkStateChange,
  type LinkView,
} from './link.js';
import { LinkLifecycle } from './link-lifecycle.js';
import { LinkNetworks } from './link-networks.js';
import type { LinkQosPolicy } from './link-qos.js';
import { LinkShaping, type ShapedLink } from './link-shaping.js';
import { LinkListener, type ListenerView } from './listener.js';
import { OverlayContext, type OverlayOptions } from './overlay-context.js';
import { RelayTopology } from './relay-topology.js';
import type { ControlMessage, PeerHello, TransportAddress } from './transport.js';

export type {
  FabricConflict,
  FabricPlan,
  LinkSource,
  LinkSpec,
  LinkStateChange,
  LinkView,
  ListenerView,
  OverlayOptions,
};

export class Overlay {
  readonly #ctx: OverlayContext;
  readonly #topology: RelayTopology;
  readonly #shaping: LinkShaping;
  readonly #networks: LinkNetworks;
  readonly #lifecycle: LinkLifecycle;
  readonly #fabric: FabricLinks;
  #sampler: NodeJS.Timeout | undefined;
  /** The link listener, when a listen address is given. */
  #listener: LinkListener | undefined;

  constructor(opts: OverlayOptions) {
    const ctx = new OverlayContext(opts);
    this.#ctx = ctx;
    this.#topology = new RelayTopology(ctx);
    this.#shaping = new LinkShaping(ctx, this.#topology);
    this.#networks = new LinkNetworks(ctx, this.#topology);
    this.#lifecycle = new LinkLifecycle(
      ctx,
      { networks: this.#networks, shaping: this.#shaping, topology: this.#topology },
      (link, msg) => this.#control(link, msg),
    );
    this.#fabric = new FabricLinks(ctx, this.#topology, {
      add: (spec) => this.add(spec, 'cluster'),
      close: (link, reason) => this.#lifecycle.close(link, reason),
    });
  }

  /** This host's hello: its id, whether it relays, its listen port. Its networks follow the hello (network-sync.ts). */
  hello(): PeerHello {
    const o = this.#ctx.o;
    return { host: o.hostId, relay: o.relay, listen: this.listening?.port };
  }

  /**
   * Starts listening (when an address is given) and the one-second
   * statistics sampler. A listener that cannot bind (address in use, not
   * this host's) does not fail the start: it is `down` with the reason in
   * {@link listener} and retried with the re-dial backoff; links go on dialling.
   */
  async start(listen: TransportAddress | undefined): Promise<void> {
    this.#sampler = setInterval(() => this.#sample(), 1000);
    this.#sampler.unref();
    if (!listen) return;
    const ctx = this.#ctx;
    this.#listener = new LinkListener(ctx.o.transport, listen, ctx.backoff(), ctx.log, (ch) =>
      this.#lifecycle.accepted(ch),
    );
    await this.#listener.bind();
  }

  /** Bound listener address, when listening. */
  get listening(): TransportAddress | undefined {
    return this.#listener?.bound;
  }

  /** The link listener: `up`, `down` with why (and when it retries), or `off` (no listen address). */
  listener(): ListenerView {
    return this.#listener?.view() ?? { state: 'off', address: undefined, reason: 'no listen address configured' };
  }

  /** Adds a link to dial; it starts dialling at once. */
  add(spec: LinkSpec, source: 'config' | 'api' | 'direct' | 'cluster'): void {
    if (this.#ctx.links.has(spec.name)) throw new LinkExistsError(spec.name);
    const link = this.#lifecycle.add(spec, source);
    if (spec.qos) this.#shaping.set(link, spec.qos);
    this.#lifecycle.dial(link);
  }

  /**
   * Sets (or with undefined removes) a link's QoS: one shaper at its
   * capacity shared by all its link ports (link-qos.ts). Admission is the caller's job.
   */
  setQos(name: string, policy: LinkQosPolicy | undefined): void {
    this.#shaping.set(this.#link(name), policy);
  }

  /** The links with a QoS capacity: their policy, shaper and the networks they carry or may carry. */
  shapedLinks(): ShapedLink[] {
    return this.#shaping.shapedLinks((name) => this.mayCarry(name));
  }

  /**
   * The local networks a link carries or may carry: those its peer offered
   * (last known, also while down), or every local network before the peer
   * was ever heard (and on VXLAN links, which carry every network).
   */
  mayCarry(name: string): string[] {
    const offered = this.#ctx.links.get(name)?.offered;
    return this.#ctx.sw
      .networks()
      .filter((n) => offered === undefined || offered.has(n.vni))
      .map((n) => n.name);
  }

  has(name: string): boolean {
    return this.#ctx.links.has(name);
  }

  source(name: string): LinkSource | undefined {
    return this.#ctx.links.get(name)?.source;
  }

  /** Closes a link and forgets it. */
  async delete(name: string): Promise<void> {
    const link = this.#link(name);
    this.#ctx.links.delete(name);
    await this.#lifecycle.close(link, 'the link was deleted');
  }

  /** Sends a control message on a link's channel; false when it is not up. */
  sendControl(name: string, msg: ControlMessage): boolean {
    return this.#ctx.links.get(name)?.channel?.sendControl(msg) ?? false;
  }

  /** The up link to a peer host, if any. */
  linkToHost(host: string): string | undefined {
    return this.#ctx.byPeer.get(host)?.name;
  }

  /**
   * The fabric's links of this host (docs/overlay.md "Links made by the
   * fabric"): adds and removes only links of source `cluster`, never a hand
   * link; this host relays only between the dial-out hosts it is the hub of.
   * Resolves once the links no longer planned are closed, with the planned
   * links a hand link's name kept from being made.
   */
  setFabric(plan: FabricPlan): Promise<FabricConflict[]> {
    return this.#fabric.set(plan);
  }

  /**
   * The link that reaches host `host` now: the up link to it, else (for a
   * dial-out host reached through the fabric's hub) the up link to the hub.
   */
  linkToward(host: string): string | undefined {
    const direct = this.#ctx.byPeer.get(host);
    if (direct) return direct.name;
    const plan = this.#fabric.plan;
    if (plan?.hub === undefined || !plan.viaHub.includes(host)) return undefined;
    return this.#ctx.byPeer.get(plan.hub)?.name;
  }

  /** The switch port (`link/LINK/NETWORK`) that reaches host `host` on network `network` now, if any. */
  portToward(host: string, network: string): string | undefined {
    const name = this.linkToward(host);
    const link = name === undefined ? undefined : this.#ctx.links.get(name);
    if (!link) return undefined;
    for (const p of link.ports.values()) if (p.sp.networks()[0] === network) return p.sp.name;
    return undefined;
  }

  /**
   * Calls `fn(host)` whenever the link ports toward a peer host were added
   * or removed (a link came up or went down, or carries other networks), so
   * that what was installed toward that host (and, for the hub, toward the
   * hosts behind it) can be resolved again with {@link portToward}. Returns
   * the function that stops it.
   */
  onPortsChanged(fn: (host: string) => void): () => void {
    this.#ctx.portWatchers.add(fn);
    return () => this.#ctx.portWatchers.delete(fn);
  }

  /**
   * Calls `fn` when a link comes up (a new channel carrying networks) and
   * when a link that was up loses its channel (`state`: `down`, or `closed`
   * when the link goes with it), as it happens; returns the stop function.
   */
  onLinkState(fn: (change: LinkStateChange) => void): () => void {
    const watcher = (link: Link, up: boolean, state: LinkState, reason: string): void =>
      fn({ up, link: { ...this.#viewOf(link), state, reason } });
    this.#ctx.stateWatchers.add(watcher);
    return () => this.#ctx.stateWatchers.delete(watcher);
  }

  list(): LinkView[] {
    return [...this.#ctx.links.values()].map((l) => this.#viewOf(l));
  }

  view(name: string): LinkView {
    return this.#viewOf(this.#link(name));
  }

  /**
   * The local networks changed (added or deleted): every link re-computes
   * what it carries, and tells its peer (TCP/TLS) which networks this host has now.
   */
  networksChanged(): void {
    this.#networks.changed();
  }

  /** Removes every link port of network `name` (before the network itself is deleted). */
  releaseNetwork(name: string): Promise<void> {
    return this.#networks.release(name);
  }

  async stop(): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.stopped) return;
    ctx.stopped = true;
    clearInterval(this.#sampler);
    this.#listener?.close();
    await Promise.all([...ctx.links.values()].map((l) => this.#lifecycle.close(l, 'the daemon is stopping')));
    await ctx.o.transport.close();
    for (const t of ctx.o.transports ?? []) await t.close();
  }

  #link(name: string): Link {
    const link = this.#ctx.links.get(name);
    if (!link) throw new LinkNotFoundError(name);
    return link;
  }

  /** Topology messages between daemons (docs/overlay.md "Adaptive direct links"). */
  #control(link: Link, msg: ControlMessage): void {
    if (msg.type === 'peer-links') {
      this.#topology.peerLinks(link, msg);
      return;
    }
    if (msg.type === 'direct') {
      const d = this.#topology.directRequest(link, msg);
      if (d === undefined) return;
      this.add(d, 'direct');
      const direct = this.#ctx.links.get(d.name);
      if (direct) this.#shaping.direct(direct, link);
      return;
    }
    this.#ctx.log.debug({ link: link.name, type: msg.type }, 'ignored a control message');
  }

  #viewOf(l: Link): LinkView {
    const main = this.#ctx.o.transport.kind;
    const kind = l.spec ? this.#ctx.transportOf(l.spec).kind : (l.channel?.kind ?? main);
    return l.view(kind, l.spec ? `${kind}:${addr(l.spec.connect)}` : l.channel?.remote);
  }

  #sample(): void {
    const now = performance.now();
    this.#topology.sample(now);
    this.#fabric.retry();
    for (const l of this.#ctx.links.values()) {
      const t = l.totals();
      const dt = (now - l.prevAt) / 1000;
      if (dt <= 0) continue;
      l.txBps = Math.round(((t.tx_bytes - l.prevTx) * 8) / dt);
      l.rxBps = Math.round(((t.rx_bytes - l.prevRx) * 8) / dt);
      l.prevTx = t.tx_bytes;
      l.prevRx = t.rx_bytes;
      l.prevAt = now;
    }
  }
}
