/**
 * The overlay: links between this daemon and others (docs/overlay.md).
 *
 * A link either dials a peer (config `links:` or `vmlink link add`) and
 * re-dials with exponential backoff and jitter, or is accepted from a peer
 * (named after the peer's host id). When a channel comes up the link carries
 * every network both hosts have (by VNI): one link port per network on the
 * switch, with split horizon (switch.ts). At most one channel per peer host:
 * when two exist (both hosts dialled), the one initiated by the host with the
 * smaller id wins on both ends, so both ends agree without a message.
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../../util/backoff.js';
import type { FrameSink } from '../port.js';
import type { Switch } from '../switch/switch.js';
import { DirectPolicy } from './direct.js';
import { LinkExistsError, LinkNotFoundError } from './errors.js';
import { addr, Link, type LinkSource, type LinkSpec, type LinkState, type LinkView } from './link.js';
import { LinkPort } from './link-port.js';
import { type LinkQosPolicy, LinkShaper, linkOverhead } from './link-qos.js';
import { LinkListener, type ListenerView } from './listener.js';
import { MAX_PEER_NETWORKS, PeerNetworks, snapshotMessages, updateMessages } from './network-sync.js';
import type {
  ControlMessage,
  LinkChannel,
  LinkTransport,
  OfferedNetwork,
  PeerHello,
  TransportAddress,
} from './transport.js';

export type { LinkSource, LinkSpec, LinkState, LinkView, ListenerView };

export interface OverlayOptions {
  logger: Logger;
  switch: Switch;
  /** This host's id. */
  hostId: string;
  /** This host relays between its links (a hub). */
  relay: boolean;
  transport: LinkTransport;
  /** More transports, chosen per link by {@link LinkSpec.transport} (e.g. VXLAN). */
  transports?: LinkTransport[] | undefined;
  /** Re-dial delays, ms. */
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  /** Random source for backoff jitter (tests). */
  random?: () => number;
  /**
   * On a relaying host: spoke-to-spoke traffic (bits per second over a
   * second) above which the two spokes are asked to open a direct link.
   * 0 or undefined: never.
   */
  directThresholdBps?: number | undefined;
  /** QoS of the links accepted from these peer hosts (by host id), applied whenever they dial in. */
  peerQos?: ReadonlyMap<string, LinkQosPolicy> | undefined;
}

export class Overlay {
  readonly #o: OverlayOptions;
  readonly #log: Logger;
  readonly #links = new Map<string, Link>();
  /** Peer host id -> the link whose channel is up to it. */
  readonly #byPeer = new Map<string, Link>();
  #sampler: NodeJS.Timeout | undefined;
  #stopped = false;
  /** The link listener, when a listen address is given. */
  #listener: LinkListener | undefined;
  /** The link whose frame the switch is handling now (set around each link ingress), for relay accounting. */
  #rxLink: Link | undefined;
  readonly #direct: DirectPolicy;
  /** QoS of the links accepted from these hosts (overlay.peer_qos, then changes over the API). */
  readonly #peerQos: Map<string, LinkQosPolicy>;
  /** Switch port id -> the link it belongs to (relay accounting of frames leaving a link's shaper). */
  readonly #linkOfPort = new Map<number, Link>();

  constructor(opts: OverlayOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    this.#direct = new DirectPolicy(this.#log, opts.directThresholdBps ?? 0);
    this.#peerQos = new Map(opts.peerQos ?? []);
  }

  /** This host's hello: its id, whether it relays, its listen port. Its networks follow the hello (network-sync.ts). */
  hello(): PeerHello {
    return { host: this.#o.hostId, relay: this.#o.relay, listen: this.listening?.port };
  }

  /** The networks this host offers on its links. */
  #localNetworks(): OfferedNetwork[] {
    return this.#o.switch.networks().map((n) => ({ vni: n.vni, name: n.name }));
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
    const r = this.#o.reconnect;
    const backoff = new Backoff(r?.min_ms ?? 100, r?.max_ms ?? 5000, this.#o.random);
    this.#listener = new LinkListener(this.#o.transport, listen, backoff, this.#log, (ch) => this.#accepted(ch));
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
  add(spec: LinkSpec, source: 'config' | 'api' | 'direct'): void {
    if (this.#links.has(spec.name)) throw new LinkExistsError(spec.name);
    const r = this.#o.reconnect;
    const link = new Link(spec.name, source, spec, new Backoff(r?.min_ms ?? 100, r?.max_ms ?? 5000, this.#o.random));
    this.#links.set(spec.name, link);
    if (spec.qos) this.setQos(spec.name, spec.qos);
    this.#dial(link);
  }

  /**
   * Sets (or with undefined removes) a link's QoS: one shaper at its
   * capacity shared by all its link ports (link-qos.ts). Admission is the caller's job.
   */
  setQos(name: string, policy: LinkQosPolicy | undefined): void {
    const link = this.#links.get(name);
    if (!link) throw new LinkNotFoundError(name);
    // A link accepted from a peer is re-made when the peer dials in again: keep its QoS by host.
    if (link.source === 'peer' && link.peer !== undefined) {
      if (policy) this.#peerQos.set(link.peer, policy);
      else this.#peerQos.delete(link.peer);
    }
    // A link sharing its uplink's shaper gets its own when given a policy, none without.
    if (link.shaper && !link.shaperOwned) this.#releaseShaper(link);
    if (policy === undefined) {
      this.#releaseShaper(link);
      return;
    }
    if (link.shaper) {
      link.shaper.set(policy);
      return;
    }
    const kind = link.spec ? this.#transport(link.spec).kind : this.#o.transport.kind;
    this.#joinShaper(link, new LinkShaper(this.#o.switch, link.name, policy, linkOverhead(kind)), true);
  }

  /** Makes `link` send through `shaper` (its own, or its uplink's); false when the shaper is full. */
  #joinShaper(link: Link, shaper: LinkShaper, owned: boolean): boolean {
    const relayed = this.#o.relay
      ? (source: number, len: number) => this.#relayed(link, len, this.#linkOfPort.get(source))
      : undefined;
    const base = shaper.join({ channel: () => link.channel, port: (vni) => link.ports.get(vni)?.sp, relayed });
    if (base < 0) {
      this.#log.warn({ link: link.name }, `link "${link.name}" is not shaped: link "${shaper.owner}"'s shaper is full`);
      return false;
    }
    link.shaper = shaper;
    link.shaperOwned = owned;
    link.shaperTag = base;
    for (const [vni, p] of link.ports) this.#o.switch.shareEgress(p.sp.name, shaper.egress, base + vni);
    return true;
  }

  /** Takes `link` out of its shaper; an owner's shaper closes, and the links sharing it leave it too. */
  #releaseShaper(link: Link): void {
    const shaper = link.shaper;
    if (!shaper) return;
    for (const p of link.ports.values()) this.#o.switch.shareEgress(p.sp.name, undefined);
    shaper.leave(link.shaperTag);
    link.shaper = undefined;
    if (!link.shaperOwned) return;
    link.shaperOwned = false;
    for (const l of this.#links.values()) if (l.shaper === shaper) this.#releaseShaper(l);
    shaper.close();
  }

  /** On a spoke: the shaper of its shaped link to a relaying hub (its uplink), which its links to other spokes share. */
  #uplinkShaper(): LinkShaper | undefined {
    if (this.#o.relay) return undefined;
    for (const l of this.#links.values()) if (l.shaperOwned && l.peerRelays && l.channel) return l.shaper;
    return undefined;
  }

  /** The links with a QoS capacity: their policy, shaper and the networks they carry or may carry. */
  shapedLinks(): { name: string; policy: LinkQosPolicy; shaper: LinkShaper | undefined; networks: string[] }[] {
    const out = [];
    const shapedPeers = new Set<string>();
    for (const l of this.#links.values()) {
      if (!l.shaper || !l.shaperOwned) continue;
      out.push({ name: l.name, policy: l.shaper.policy, shaper: l.shaper, networks: this.mayCarry(l.name) });
      if (l.source === 'peer' && l.peer !== undefined) shapedPeers.add(l.peer);
    }
    // A peer's link with a QoS that has not dialled in yet still counts for admission (it may at any time).
    for (const [host, policy] of this.#peerQos)
      if (!shapedPeers.has(host)) out.push({ name: host, policy, shaper: undefined, networks: this.mayCarry(host) });
    return out;
  }

  /**
   * The local networks a link carries or may carry: those its peer offered
   * (last known, also while down), or every local network before the peer
   * was ever heard (and on VXLAN links, which carry every network).
   */
  mayCarry(name: string): string[] {
    const offered = this.#links.get(name)?.offered;
    return this.#o.switch
      .networks()
      .filter((n) => offered === undefined || offered.has(n.vni))
      .map((n) => n.name);
  }

  has(name: string): boolean {
    return this.#links.has(name);
  }

  source(name: string): LinkSource | undefined {
    return this.#links.get(name)?.source;
  }

  /** Closes a link and forgets it. */
  async delete(name: string): Promise<void> {
    const link = this.#links.get(name);
    if (!link) throw new LinkNotFoundError(name);
    this.#links.delete(name);
    await this.#closeLink(link, 'the link was deleted');
  }

  /** Sends a control message on a link's channel; false when it is not up. */
  sendControl(name: string, msg: ControlMessage): boolean {
    return this.#links.get(name)?.channel?.sendControl(msg) ?? false;
  }

  /** The up link to a peer host, if any. */
  linkToHost(host: string): string | undefined {
    return this.#byPeer.get(host)?.name;
  }

  list(): LinkView[] {
    return [...this.#links.values()].map((l) => this.#viewOf(l));
  }

  view(name: string): LinkView {
    const l = this.#links.get(name);
    if (!l) throw new LinkNotFoundError(name);
    return this.#viewOf(l);
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#sampler);
    this.#listener?.close();
    await Promise.all([...this.#links.values()].map((l) => this.#closeLink(l, 'the daemon is stopping')));
    await this.#o.transport.close();
    for (const t of this.#o.transports ?? []) await t.close();
  }

  // ---- dialling ------------------------------------------------------------------

  #dial(link: Link): void {
    link.timer = undefined;
    if (link.closed || this.#stopped || !link.spec) return;
    // A channel to the same peer host carried by another link (it dialled us): stand by.
    const other = link.peer === undefined ? undefined : this.#byPeer.get(link.peer);
    if (other && other !== link) {
      this.#setState(link, 'standby', `host "${link.peer}" is reached through link "${other.name}"`);
      link.timer = setTimeout(() => this.#dial(link), this.#o.reconnect?.max_ms ?? 5000);
      link.timer.unref();
      return;
    }
    const transport = this.#transport(link.spec);
    const where = `${transport.kind}:${addr(link.spec.connect)}`;
    if (link.state !== 'connecting') this.#setState(link, 'connecting', `dialling ${where}`);
    link.abort = new AbortController();
    transport.dial(link.spec.connect, link.abort.signal).then(
      (ch) => {
        link.abort = undefined;
        if (link.closed || this.#stopped) {
          void ch.close('the link was deleted');
          return;
        }
        // The backoff is reset only once the channel has stayed up (#drop): a peer that
        // takes the connection and closes it at once is re-dialled ever more slowly.
        this.#up(link, ch);
      },
      (err: unknown) => {
        link.abort = undefined;
        this.#retry(link, describeError(err));
      },
    );
  }

  #transport(spec: LinkSpec): LinkTransport {
    if (spec.transport === undefined || spec.transport === this.#o.transport.kind) return this.#o.transport;
    return this.#o.transports?.find((t) => t.kind === spec.transport) ?? this.#o.transport;
  }

  #retry(link: Link, why: string): void {
    if (link.closed || this.#stopped || !link.spec || link.timer) return;
    if (link.source === 'direct') {
      // A direct link that cannot be made is not retried: the relay carries the traffic.
      this.#log.info(
        { link: link.name, reason: why },
        `direct link "${link.name}" failed (${why}); staying on the relay`,
      );
      link.closed = true;
      this.#forget(link);
      return;
    }
    const first = link.backoff.attempt === 0;
    const delay = link.backoff.next();
    link.failed(why);
    if (first) this.#log.info({ link: link.name, delay_ms: delay }, `link "${link.name}": ${why}`);
    this.#setState(link, 'connecting', `${why}; re-dialling in ${delay} ms`, first);
    link.timer = setTimeout(() => this.#dial(link), delay);
    link.timer.unref();
  }

  // ---- channels ------------------------------------------------------------------

  #accepted(ch: LinkChannel): void {
    if (this.#stopped) {
      void ch.close('the daemon is stopping');
      return;
    }
    const host = ch.peer.host;
    if (host === this.#o.hostId) {
      this.#log.warn({ peer: ch.remote }, `refused a link from ${ch.remote}: it has this host's own id "${host}"`);
      void ch.close(`host id "${host}" is this host's own`);
      return;
    }
    let link = this.#links.get(host);
    if (link && link.source !== 'peer') {
      // A dial link has the peer's name: the accepted channel goes to a link named after both.
      link = this.#links.get(`${host}~in`);
    }
    if (!link) {
      const name = this.#links.has(host) ? `${host}~in` : host;
      link = new Link(name, 'peer', undefined, new Backoff());
      this.#links.set(name, link);
    }
    const q = this.#peerQos.get(host);
    if (q !== undefined && !link.shaper) this.setQos(link.name, q);
    else if (!link.shaper && !ch.peer.relay) {
      // Another spoke dialled this spoke directly: the frames leave over this spoke's uplink too.
      const up = this.#uplinkShaper();
      if (up) this.#joinShaper(link, up, false);
    }
    this.#up(link, ch);
  }

  /** True when channel `a` should be kept over `b` (both to the same host). */
  #wins(a: LinkChannel, b: LinkChannel): boolean {
    const ia = a.outbound ? this.#o.hostId : a.peer.host;
    const ib = b.outbound ? this.#o.hostId : b.peer.host;
    if (ia === ib) return true; // same initiator: the newer one (a) replaces a stale one
    return ia < ib;
  }

  #up(link: Link, ch: LinkChannel): void {
    const host = ch.peer.host;
    if (host === this.#o.hostId) {
      // A link to this host itself (its own listener, or a peer with the same id) would loop frames back.
      void ch.close(`host id "${host}" is this host's own`);
      if (link.spec) this.#retry(link, `the peer at ${ch.remote} has this host's own id "${host}"`);
      else this.#forget(link);
      return;
    }
    const current = this.#byPeer.get(host);
    if (current?.channel && current.channel !== ch) {
      if (!this.#wins(ch, current.channel)) {
        this.#log.info(
          { link: link.name, peer: host },
          `link "${link.name}": host "${host}" is already reached through "${current.name}"`,
        );
        void ch.close('duplicate: another connection between these hosts is kept');
        link.peer = host;
        if (link.spec) this.#retry(link, `host "${host}" is already reached through link "${current.name}"`);
        else this.#forget(link);
        return;
      }
      void this.#drop(current, 'replaced by a newer connection', true);
    }
    if (link.channel) void this.#drop(link, 'replaced by a newer connection', false);
    link.channel = ch;
    link.peer = host;
    link.connects++;
    link.upSince = performance.now();
    link.peerRelays = ch.peer.relay;
    link.listen = ch.peer.listen;
    link.remoteHost = /^tcp:\[?([^\]]*?)\]?:\d+$/.exec(ch.remote)?.[1];
    link.directPeers.clear();
    this.#byPeer.set(host, link);
    // VXLAN has no hello: it carries every local network, now and later. A stream link
    // carries none until the peer's network list has come (after both hellos were checked).
    const vxlan = ch.kind === 'vxlan';
    link.peerNets = vxlan ? undefined : new PeerNetworks();
    if (vxlan) link.offered = undefined;
    const carried = this.#syncPorts(link);
    const ports = link.ports;
    if (!vxlan) {
      // Up once the peer's list is here (#peerNetworks); ours goes now, the peer's hello being checked.
      this.#setState(link, 'connecting', `connected to host "${host}" at ${ch.remote}; waiting for its network list`);
      const mine = this.#localNetworks();
      link.announced = new Set(mine.map((n) => n.vni));
      for (const m of snapshotMessages(mine)) ch.sendControl(m);
      link.syncTimer = setTimeout(() => {
        if (link.channel === ch && link.peerNets?.offered === undefined)
          void this.#drop(
            link,
            `protocol error: no network list within ${NETWORK_LIST_TIMEOUT_MS / 1000} s after the hello`,
            true,
          );
      }, NETWORK_LIST_TIMEOUT_MS);
      link.syncTimer.unref();
    }
    ch.attach({
      carries: (vni) => ports.has(vni),
      frame: (vni, buf, off, len, meta) => {
        const p = ports.get(vni);
        if (p === undefined) {
          (ch as { unknownVni?: (len: number) => void }).unknownVni?.(len);
          return;
        }
        this.#rxLink = link;
        p.sink(buf, off, len, meta);
        this.#rxLink = undefined;
      },
      control: (msg) => this.#control(link, msg),
      closed: (reason) => {
        if (link.channel !== ch) return;
        void this.#drop(link, reason, true);
      },
    });
    if (vxlan)
      this.#setState(link, 'up', `${ch.kind} to host "${host}" at ${ch.remote}, carrying ${carrying(carried)}`, true);
    if (!this.#o.relay && !link.peerRelays) {
      // A direct link to another spoke: forget what was learned behind the relay, so traffic
      // floods once and is learned on the direct path (the relay stops carrying it).
      for (const l of this.#links.values())
        if (l.peerRelays) for (const p of l.ports.values()) this.#o.switch.flushPort(p.sp);
    }
    this.#reportPeers(link.peerRelays ? link : undefined);
  }

  /** Takes a link's channel down: its link ports go (their MACs are forgotten); dial links re-dial. */
  async #drop(link: Link, reason: string, redial: boolean): Promise<void> {
    const ch = link.channel;
    if (!ch) return;
    link.channel = undefined;
    link.peerNets = undefined;
    clearTimeout(link.syncTimer);
    link.announced = undefined;
    if (link.peer !== undefined && this.#byPeer.get(link.peer) === link) this.#byPeer.delete(link.peer);
    if (performance.now() - link.upSince >= stableMs(this.#o.reconnect?.max_ms)) link.backoff.reset();
    link.accumulate(ch);
    const removing = [...link.ports.values()].map((p) => {
      this.#linkOfPort.delete(p.sp.id);
      link.pastDown += p.sp.counters.down;
      link.pastSplit += p.sp.counters.split_horizon;
      return this.#o.switch.removePort(p.sp.name).catch(() => undefined);
    });
    link.ports.clear();
    if (!this.#stopped) this.#reportPeers(undefined);
    await Promise.all([ch.close(reason), ...removing]);
    // Closed, or a newer channel took the link over meanwhile: nothing more to do.
    if (link.closed || this.#stopped || link.channel) return;
    this.#log.warn({ link: link.name, reason }, `link "${link.name}" down: ${reason}`);
    link.failed(reason);
    if (!link.spec || link.source === 'direct') {
      if (link.source === 'direct')
        this.#log.info({ link: link.name }, `direct link "${link.name}" closed; traffic goes through the relay again`);
      this.#forget(link);
      return;
    }
    this.#setState(link, 'down', reason);
    if (redial) this.#retry(link, reason);
    else this.#dial(link);
  }

  /**
   * Makes the link's ports match the networks both ends have now: adds the
   * missing ones, removes those no longer shared. Returns the carried names.
   */
  #syncPorts(link: Link): string[] {
    const ch = link.channel;
    if (!ch) return [];
    const sw = this.#o.switch;
    const want = new Map<number, string>();
    // A stream link before its peer's list: nothing yet; a VXLAN link: everything.
    const offered = link.peerNets ? link.peerNets.offered : undefined;
    if (offered !== undefined || link.peerNets === undefined)
      for (const net of sw.networks()) if (offered === undefined || offered.has(net.vni)) want.set(net.vni, net.name);
    for (const [vni, p] of link.ports) {
      const name = want.get(vni);
      if (name !== undefined && p.sp.networks()[0] === name) continue;
      link.ports.delete(vni);
      this.#linkOfPort.delete(p.sp.id);
      link.pastDown += p.sp.counters.down;
      link.pastSplit += p.sp.counters.split_horizon;
      void sw.removePort(p.sp.name).catch(() => undefined);
    }
    for (const [vni, netName] of want) {
      if (link.ports.has(vni)) continue;
      const name = `link/${link.name}/${netName}`;
      let sink: FrameSink = () => undefined;
      const sp = sw.addPort(name, { network: netName, link: this.#o.relay ? 'relay' : 'link', maxMacs: 65536 }, (s) => {
        sink = s;
        return new LinkPort(name, vni, ch, this.#o.relay ? (len) => this.#relayed(link, len) : undefined);
      });
      sw.portState(sp, 'up');
      link.ports.set(vni, { sp, sink });
      this.#linkOfPort.set(sp.id, link);
      if (link.shaper) sw.shareEgress(name, link.shaper.egress, link.shaperTag + vni);
    }
    return [...link.ports.values()].map((p) => p.sp.networks()[0] as string);
  }

  /**
   * The local networks changed (added or deleted): every link re-computes
   * what it carries, and tells its peer (TCP/TLS) which networks this host has now.
   */
  networksChanged(): void {
    const mine = this.#localNetworks();
    const now = new Set(mine.map((n) => n.vni));
    for (const l of this.#links.values()) {
      if (!l.channel) continue;
      this.#syncPorts(l);
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
  async releaseNetwork(name: string): Promise<void> {
    const removing: Promise<void>[] = [];
    for (const l of this.#links.values()) {
      for (const [vni, p] of l.ports) {
        if (p.sp.networks()[0] !== name) continue;
        l.ports.delete(vni);
        this.#linkOfPort.delete(p.sp.id);
        removing.push(this.#o.switch.removePort(p.sp.name).catch(() => undefined));
      }
    }
    await Promise.all(removing);
  }

  /** A frame from the link being switched now goes out on `to`'s link: count it; false to drop it (direct link). */
  #relayed(to: Link, len: number, from = this.#rxLink): boolean {
    if (from === undefined || from === to) return true;
    const toPeer = to.peer as string;
    if (from.directPeers.has(toPeer) || (from.peer !== undefined && to.directPeers.has(from.peer))) return false;
    from.relayBytes.set(toPeer, (from.relayBytes.get(toPeer) ?? 0) + len);
    from.relayedTotal += len;
    from.relayedTo.set(toPeer, (from.relayedTo.get(toPeer) ?? 0) + len);
    return true;
  }

  /** Topology messages between daemons (docs/overlay.md "Adaptive direct links"). */
  #control(link: Link, msg: ControlMessage): void {
    if (msg.type === 'networks' || msg.type === 'networks-update') {
      this.#peerNetworks(link, msg);
      return;
    }
    if (msg.type === 'peer-links' && this.#o.relay && Array.isArray(msg['hosts'])) {
      link.directPeers.clear();
      for (const h of msg['hosts'] as unknown[]) if (typeof h === 'string' && h.length <= 32) link.directPeers.add(h);
      return;
    }
    if (msg.type === 'direct' && link.peerRelays && !this.#o.relay) {
      const host = msg['host'];
      const to = msg['connect'] as { host?: unknown; port?: unknown } | undefined;
      if (typeof host !== 'string' || typeof to?.host !== 'string' || !Number.isInteger(to.port)) return;
      const name = `direct-${host}`.slice(0, 32);
      if (this.#byPeer.has(host) || this.#links.has(name) || host === this.#o.hostId) return;
      this.#log.info({ host, connect: to }, `the hub "${link.peer}" asks for a direct link to host "${host}"`);
      this.add({ name, connect: { host: to.host, port: to.port as number } }, 'direct');
      // The direct link leaves over the same uplink as the link to the hub: it shares its shaper.
      const direct = this.#links.get(name);
      if (direct && link.shaper && link.shaperOwned) this.#joinShaper(direct, link.shaper, false);
      return;
    }
    this.#log.debug({ link: link.name, type: msg.type }, 'ignored a control message');
  }

  /** The peer's network list (in parts) or a change of it: the link carries what both have now. */
  #peerNetworks(link: Link, msg: ControlMessage): void {
    const ch = link.channel;
    const nets = link.peerNets;
    if (!ch || !nets) return;
    const r = nets.apply(msg);
    if (r.kind === 'pending') return;
    if (r.kind === 'error') {
      void this.#drop(link, `protocol error: ${r.reason}`, true);
      return;
    }
    link.offered = nets.offered;
    const carried = this.#syncPorts(link);
    if (nets.ignored > 0 && r.first)
      this.#log.warn(
        { link: link.name, ignored: nets.ignored },
        `link "${link.name}": host "${link.peer}" offers more than ${MAX_PEER_NETWORKS} networks; the rest are ignored`,
      );
    if (r.first) {
      this.#setState(
        link,
        'up',
        `${ch.kind} to host "${link.peer}" at ${ch.remote}, carrying ${carrying(carried)}`,
        true,
      );
      return;
    }
    link.reason = `${ch.kind} to host "${link.peer}" at ${ch.remote}, carrying ${carrying(carried)}`;
    this.#log.info(
      { link: link.name, networks: carried.length },
      `link "${link.name}" now carries ${carrying(carried)}`,
    );
  }

  /** Tells every relaying peer (or only `to`) which hosts this host has direct links with. */
  #reportPeers(to: Link | undefined): void {
    if (this.#o.relay) return;
    const hosts: string[] = [];
    for (const l of this.#links.values()) if (l.channel && !l.peerRelays && l.peer !== undefined) hosts.push(l.peer);
    const msg = { type: 'peer-links', hosts };
    if (to) to.channel?.sendControl(msg);
    else for (const l of this.#links.values()) if (l.channel && l.peerRelays) l.channel.sendControl(msg);
  }

  #forget(link: Link): void {
    // A peer's or direct link is made anew when it comes back: its shaper goes with it (unless it still carries a channel).
    if (!link.channel) this.#releaseShaper(link);
    if (this.#links.get(link.name) === link) this.#links.delete(link.name);
  }

  async #closeLink(link: Link, reason: string): Promise<void> {
    link.closed = true;
    this.#releaseShaper(link);
    clearTimeout(link.timer);
    link.abort?.abort();
    await this.#drop(link, reason, false);
    link.state = 'closed';
  }

  #setState(link: Link, state: LinkState, reason: string, force = false): void {
    const changed = link.state !== state || force;
    link.state = state;
    link.reason = reason;
    if (changed) this.#log.info({ link: link.name, state, reason }, `link "${link.name}" ${state}: ${reason}`);
  }

  #viewOf(l: Link): LinkView {
    const kind = l.spec ? this.#transport(l.spec).kind : (l.channel?.kind ?? this.#o.transport.kind);
    return l.view(kind, l.spec ? `${kind}:${addr(l.spec.connect)}` : l.channel?.remote);
  }

  #sample(): void {
    const now = performance.now();
    if (this.#o.relay) this.#direct.sample(this.#links.values(), this.#byPeer, now);
    for (const l of this.#links.values()) {
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

/** `lab, dev` or `10000 networks (lab, dev, web, ...)`: a reason or log line stays short whatever the count. */
function carrying(names: string[]): string {
  if (names.length === 0) return 'no shared network';
  if (names.length <= 8) return names.join(', ');
  return `${names.length} networks (${names.slice(0, 3).join(', ')}, ...)`;
}

/** Time allowed for a peer's whole network list after the hello, ms. */
const NETWORK_LIST_TIMEOUT_MS = 30_000;

/** How long a channel must stay up before the re-dial backoff starts again at its minimum, ms. */
function stableMs(maxMs = 5000): number {
  return Math.max(10_000, 2 * maxMs);
}
