/**
 * The daemon's overlay service: builds the link transport from the config
 * (TLS material read from files, or plain TCP with a loud warning), the
 * {@link Overlay}; adds and removes the links the reconciler asks for (config
 * and API links) and serves the API's link views and QoS changes.
 */
import { readFile } from 'node:fs/promises';
import type { LinkPlan } from '../cluster/topology.js';
import type { LinkConfig, OverlayConfig } from '../config/overlay-schema.js';
import { parseWith } from '../config/parse.js';
import { type LinkQosConfig, linkQosSchema } from '../config/qos-schema.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  LinkExistsError,
  LinkNotDeletableError,
  LinkNotFoundError,
  LinkTlsConfigError,
  OverlayError,
  VxlanConfigError,
} from '../net/overlay/errors.js';
import {
  type FabricConflict,
  type FabricPlan,
  type LinkSpec,
  type LinkStateChange,
  type LinkView,
  type ListenerView,
  Overlay,
} from '../net/overlay/overlay.js';
import { TcpTransport, type TlsMaterial } from '../net/overlay/tcp-transport.js';
import { VxlanTransport } from '../net/overlay/vxlan-transport.js';
import type { Switch } from '../net/switch/switch.js';
import { formatAddress, parseAddress } from '../util/address.js';
import type { AdmissionStatus } from '../util/admission.js';
import { clientPolicy } from './export-specs.js';
import type { ShapedLink } from './qos.js';
import { linkConfigOf, toLinkPolicy } from './qos-policy.js';

/** The overlay is not configured on this host. */
export class OverlayOffError extends OverlayError {
  override readonly status = 409;
  constructor(what: 'overlay' | 'vxlan' = 'overlay') {
    super(
      'ERR_OVERLAY_OFF',
      what === 'vxlan'
        ? 'this host has no overlay.vxlan section: add vxlan: { listen: "udp:0.0.0.0:4789" } under overlay and restart the daemon'
        : 'this host has no overlay section in its config: add overlay {tls: {ca, cert, key}} (or plain: true) and restart the daemon',
    );
  }
}

/** The overlay's spec of a configured link: udp addresses are VXLAN VTEPs. */
function linkSpec(l: LinkConfig): LinkSpec {
  return {
    name: l.name,
    connect: { host: l.connect.host, port: l.connect.port },
    transport: l.connect.type === 'udp' ? 'vxlan' : undefined,
    qos: l.qos && toLinkPolicy(l.qos),
  };
}

async function readTls(tls: { ca: string; cert: string; key: string }): Promise<TlsMaterial> {
  const read = async (what: string, path: string) => {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      throw new LinkTlsConfigError(`overlay.tls.${what}: cannot read ${path}: ${describeError(err)}`, { cause: err });
    }
  };
  return { ca: await read('ca', tls.ca), cert: await read('cert', tls.cert), key: await read('key', tls.key) };
}

export interface OverlayServiceOptions {
  logger: Logger;
  switch: Switch;
  hostId: string;
  config: OverlayConfig | undefined;
  /** Admission of a link's QoS before it is added over the API (throws to refuse). */
  admitLink?: ((name: string, qos: LinkQosConfig | undefined, networks?: string[]) => void) | undefined;
  /** With `overlay.tls: fabric`: the fabric CA and this host's certificate and key, once it is a member. */
  fabricTls?: (() => { ca: string; cert: string; key: string } | undefined) | undefined;
}

export class OverlayService {
  readonly #o: OverlayServiceOptions;
  #overlay: Overlay | undefined;
  #transport: TcpTransport | undefined;
  #waiting = false;
  /** Listeners of link states, kept across a start that waits for the fabric. */
  readonly #stateFns = new Set<(change: LinkStateChange) => void>();

  constructor(opts: OverlayServiceOptions) {
    this.#o = opts;
  }

  /** Starts the listener (links come from the reconciler); rejects when the TLS material cannot be used. */
  async start(): Promise<void> {
    const cfg = this.#o.config;
    if (!cfg || this.#overlay) return;
    const log = this.#o.logger.child({ area: 'overlay' });
    let tls: TlsMaterial | undefined;
    if (cfg.tls === 'fabric') {
      const files = this.#o.fabricTls?.();
      this.#waiting = files === undefined;
      if (!files) {
        log.info(
          'overlay.tls is "fabric": links start once this host inits or joins a fabric (vmlink cluster init/join)',
        );
        return;
      }
      tls = await readTls(files);
    } else if (cfg.tls) {
      tls = await readTls(cfg.tls);
    } else {
      log.warn(
        'OVERLAY LINKS ARE PLAIN TCP (overlay.plain: true): no encryption, no authentication; anyone who reaches the link port joins every network. Use this on a trusted lab network only.',
      );
    }
    let overlay: Overlay | undefined;
    const transport = new TcpTransport({
      logger: log,
      hello: () => (overlay as Overlay).hello(),
      tls,
      keepaliveMs: cfg.keepalive_ms,
      queueBytes: cfg.queue_bytes,
      maxConnections: cfg.max_connections,
      maxConnectionsPerSource: cfg.max_connections_per_source,
      helloTimeoutMs: cfg.hello_timeout_ms,
      allowedClients: clientPolicy(cfg.allowed_clients),
    });
    this.#transport = transport;
    const vxlan = cfg.vxlan
      ? new VxlanTransport({
          logger: log,
          hello: () => (overlay as Overlay).hello(),
          underlayMtu: cfg.vxlan.mtu,
          sourcePorts: cfg.vxlan.source_ports,
          offloads: cfg.vxlan.offloads,
        })
      : undefined;
    if (vxlan) {
      const a = cfg.vxlan?.listen as { host: string; port: number };
      try {
        const bound = await vxlan.listen({ host: a.host, port: a.port }, () => undefined);
        log.warn(
          { listen: bound },
          'VXLAN links are unencrypted and unauthenticated (RFC 7348): use them on trusted underlays only',
        );
      } catch (err) {
        throw new VxlanConfigError(`overlay.vxlan.listen: cannot bind: ${describeError(err)}`, { cause: err });
      }
    }
    overlay = new Overlay({
      logger: log,
      switch: this.#o.switch,
      hostId: this.#o.hostId,
      relay: cfg.relay,
      transport,
      transports: vxlan ? [vxlan] : [],
      reconnect: cfg.reconnect,
      directThresholdBps: cfg.direct_threshold_bps,
      peerQos: new Map(Object.entries(cfg.peer_qos ?? {}).map(([host, q]) => [host, toLinkPolicy(q)])),
    });
    this.#overlay = overlay;
    overlay.onLinkState((c) => {
      for (const fn of this.#stateFns) fn(c);
    });
    const listen = cfg.listen ? { host: cfg.listen.host, port: cfg.listen.port } : undefined;
    // A listener that cannot bind is down (with the reason, retried), not fatal: like a port or NBD address.
    await overlay.start(listen);
    if (overlay.listening)
      log.info({ listen: overlay.listening, transport: transport.kind }, 'overlay listening for links');
  }

  /** True while `overlay.tls: fabric` waits for this host's certificate from the fabric (call {@link start} again then). */
  get waitingForFabric(): boolean {
    return this.#waiting;
  }

  /** Call after a network was added or deleted: links carry it (or stop) and tell their peers. */
  networksChanged(): void {
    this.#overlay?.networksChanged();
  }

  /** Removes the link ports of a network about to be deleted. */
  async releaseNetwork(name: string): Promise<void> {
    await this.#overlay?.releaseNetwork(name);
  }

  async stop(): Promise<void> {
    await this.#overlay?.stop();
  }

  /** The link listener's admission counters; undefined when this host does not listen for links. */
  admission(): AdmissionStatus | undefined {
    return this.#overlay?.listening ? this.#transport?.admission() : undefined;
  }

  /** The link listener: up, down (why; retried) or off. */
  listener(): ListenerView {
    return (
      this.#overlay?.listener() ?? { state: 'off', address: undefined, reason: 'no overlay section in the config' }
    );
  }

  /** Bound listener address, e.g. `tcp:0.0.0.0:7400`. */
  listening(): string | undefined {
    const a = this.#overlay?.listening;
    return a ? formatAddress({ type: 'tcp', host: a.host, port: a.port }) : undefined;
  }

  /**
   * `POST /v1/links/:name/qos` (a policy) and `DELETE` (undefined): admitted
   * against the networks the link may carry and applied at once, or refused
   * with nothing changed. Returns the policy before, to undo with {@link restoreLinkQos}.
   */
  setLinkQos(name: string, body: unknown): { before: LinkQosConfig | undefined; qos: LinkQosConfig | undefined } {
    const overlay = this.#overlay;
    if (!overlay?.has(name)) throw new LinkNotFoundError(name);
    const qos = body === undefined ? undefined : parseWith(linkQosSchema, body, `the QoS of link "${name}"`);
    this.#o.admitLink?.(name, qos, overlay.mayCarry(name));
    const before = this.#qosOf(name);
    overlay.setQos(name, qos && toLinkPolicy(qos));
    return { before, qos };
  }

  /** Puts a link's QoS back without admission (a change whose persistence failed). */
  restoreLinkQos(name: string, qos: LinkQosConfig | undefined): void {
    if (this.#overlay?.has(name)) this.#overlay.setQos(name, qos && toLinkPolicy(qos));
  }

  #qosOf(name: string): LinkQosConfig | undefined {
    const p = this.#overlay?.shapedLinks().find((l) => l.name === name && l.shaper)?.policy;
    return p && linkConfigOf(p);
  }

  /** Links with a QoS capacity (for admission and `qos show`). */
  shapedLinks(): ShapedLink[] {
    return this.#overlay?.shapedLinks() ?? [];
  }

  links(): LinkView[] {
    return this.#overlay?.list() ?? [];
  }

  link(name: string): LinkView {
    if (!this.#overlay) throw new LinkNotFoundError(name);
    return this.#overlay.view(name);
  }

  /**
   * Adds a link and starts dialling it. An API link (`admit`) is admitted
   * against the QoS reservations first; a config link was admitted with the config.
   */
  addLink(l: LinkConfig, source: 'config' | 'api', admit: boolean): LinkView {
    const overlay = this.#overlay;
    if (!overlay) throw new OverlayOffError();
    if (l.connect.type === 'udp' && !this.#o.config?.vxlan) throw new OverlayOffError('vxlan');
    if (overlay.has(l.name)) throw new LinkExistsError(l.name);
    if (admit) this.#o.admitLink?.(l.name, l.qos);
    overlay.add(linkSpec(l), source);
    return overlay.view(l.name);
  }

  /** Throws unless `name` is a link that `deleteLink` may remove (added through the API, or direct). */
  checkDeletable(name: string): void {
    const overlay = this.#overlay;
    if (!overlay?.has(name)) throw new LinkNotFoundError(name);
    const source = overlay.source(name);
    if (source === 'config')
      throw new LinkNotDeletableError(
        name,
        'it is declared in the config file; remove it there and reload the daemon (`vmlink reload` or SIGHUP)',
      );
    if (source === 'peer')
      throw new LinkNotDeletableError(
        name,
        'the peer dialled this host; delete the link on the peer, or stop it there',
      );
    if (source === 'cluster')
      throw new LinkNotDeletableError(
        name,
        'the fabric made it, for the networks this host shares with its peer; it goes when they no longer share one',
      );
  }

  /**
   * The fabric's links of this host, as src/cluster/topology.ts planned
   * them: dials the planned links (source `cluster`, named after the peer),
   * closes those no longer planned, never touches a hand link, and relays
   * only between the dial-out hosts this host is the hub of. Resolves once
   * applied, with the planned links that could not be made and why.
   */
  async setFabricLinks(plan: LinkPlan): Promise<FabricConflict[]> {
    const overlay = this.#overlay;
    if (!overlay)
      return plan.links.map((l) => ({ host: l.peer, reason: 'this host has no overlay section in its config' }));
    const links: FabricPlan['links'] = [];
    const conflicts: FabricConflict[] = [];
    for (const l of plan.links) {
      const a = parseAddress(l.connect, ['tcp']);
      if (typeof a === 'string' || a.type === 'unix')
        conflicts.push({
          host: l.peer,
          reason: `its host record's overlay address: ${typeof a === 'string' ? a : 'not tcp:'}`,
        });
      else links.push({ name: l.name, peer: l.peer, connect: { host: a.host, port: a.port } });
    }
    return [...conflicts, ...(await overlay.setFabric({ ...plan, links }))];
  }

  /** The link that reaches host `host` now (its own link, else the fabric hub's), if any. */
  linkToward(host: string): string | undefined {
    return this.#overlay?.linkToward(host);
  }

  /** The switch port that reaches host `host` on `network` now, if any (for a MAC location toward that host). */
  portToward(host: string, network: string): string | undefined {
    return this.#overlay?.portToward(host, network);
  }

  /** Calls `fn(host)` when the link ports toward that host changed (resolve its locations again); returns the stop function. */
  onPortsChanged(fn: (host: string) => void): () => void {
    return this.#overlay?.onPortsChanged(fn) ?? (() => undefined);
  }

  /**
   * Calls `fn` as a link comes up or loses its channel (Overlay.onLinkState),
   * also for links of an overlay started later; returns the stop function.
   */
  onLinkState(fn: (change: LinkStateChange) => void): () => void {
    this.#stateFns.add(fn);
    return () => this.#stateFns.delete(fn);
  }

  /** Closes a link and forgets it (the caller checked it may go). */
  async removeLink(name: string): Promise<void> {
    if (this.#overlay?.has(name)) await this.#overlay.delete(name);
  }
}
