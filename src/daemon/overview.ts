/**
 * `GET /v1/overview` (docs/api.md): one answer with everything the web
 * dashboard draws, read from the views the control API already serves
 * (ports, links, exports, QoS, networks, the FDB). Nothing is sampled here:
 * counters are totals and a viewer computes rates from two answers and
 * their `at`.
 *
 * Scope `host` is this daemon alone. Scope `fabric` (the default on a member
 * of a fabric) adds every other up host's own `host` overview, fetched over
 * the HTTP endpoint each host publishes in its member record
 * (overview-peers.ts); a host that does not answer is shown `unreachable`
 * with the reason, and the rest still answers. A single host's fabric is
 * itself and the peers of its links.
 */
import type { ControlBackend, PortViewOut } from '../api/backend.js';
import type {
  ClusterView,
  OverviewExport,
  OverviewHost,
  OverviewLink,
  OverviewPort,
  OverviewScope,
  OverviewView,
} from '../api/views.js';
import type { LinkView } from '../net/overlay/overlay.js';
import type { FdbRow } from '../net/switch/switch.js';
import type { PeerOverviews } from './overview-peers.js';

/** MACs listed per port (the count says how many there are). */
const MACS_PER_PORT = 8;

export interface OverviewOptions {
  /** This host's id. */
  host: string;
  /** The views the overview is made of (the daemon's backend). */
  views: Pick<ControlBackend, 'ports' | 'links' | 'exports' | 'qos' | 'networks' | 'linkListener' | 'status'>;
  /** Local MACs by port: the switch's FDB (rows of link ports are skipped). */
  fdb: () => FdbRow[];
  /** The fabric as this daemon sees it; `mode: 'single'` when it is no member. */
  cluster: () => Promise<ClusterView>;
  /** A port's QoS policy in force, rates in bits/s (QosService.policy). */
  qosPolicy: (port: string) => { min?: number | undefined; max?: number | undefined } | undefined;
  /** Fetches the other hosts' overviews (fabric scope on a member). */
  peers: Pick<PeerOverviews, 'get'>;
}

/** `http://HOST:PORT` of a bound `tcp:HOST:PORT`, or undefined. */
export function httpUrl(bound: string | undefined): string | undefined {
  if (!bound?.startsWith('tcp:')) return undefined;
  return `http://${bound.slice(4)}`;
}

export class OverviewService {
  readonly #o: OverviewOptions;

  constructor(opts: OverviewOptions) {
    this.#o = opts;
  }

  /** The overview of `scope`; by default the fabric on a member, this host otherwise. */
  async view(scope?: OverviewScope): Promise<OverviewView> {
    const cluster = await this.#o.cluster().catch(() => undefined);
    const member = cluster?.mode === 'member';
    const s = scope ?? (member ? 'fabric' : 'host');
    const local = this.local(s, cluster);
    if (s === 'host' || !member || !cluster) return local;
    return this.#fabric(local, cluster);
  }

  /** This host's overview; `cluster` (when a member) supplies addresses. */
  local(scope: OverviewScope, cluster?: ClusterView): OverviewView {
    const { host, views } = this.#o;
    const at = Date.now();
    const ports = views.ports();
    const links = views.links();
    const self = cluster?.hosts.find((h) => h.id === host);
    const listener = views.linkListener();
    const http = self?.http ?? httpUrl(views.status().http?.listen[0]);
    const address =
      self?.address ?? (listener.state === 'up' && listener.address ? `tcp:${listener.address}` : undefined);
    const me: OverviewHost = {
      id: host,
      state: 'up',
      local: true,
      ...(address ? { address } : {}),
      ...(http ? { http } : {}),
      at,
    };
    const localNames = new Set(ports.map((p) => p.name));
    return {
      at,
      host,
      scope,
      hosts: [me, ...linkPeers(links, host)],
      networks: views.networks().map((n) => ({
        name: n.name,
        vni: n.vni,
        mtu: n.mtu,
        hosts: n.ports.some((p) => localNames.has(p)) ? [host] : [],
      })),
      ports: this.#ports(ports),
      links: links.map((l) => overviewLink(host, l)),
      exports: views.exports().map(
        (e): OverviewExport => ({
          host,
          name: e.name,
          state: e.state,
          size: e.size,
          clients: e.clients,
          requests: e.counters.requests,
          errors: e.counters.errors,
          bytes_read: e.counters.bytes_read,
          bytes_written: e.counters.bytes_written,
        }),
      ),
    };
  }

  #ports(ports: PortViewOut[]): OverviewPort[] {
    const { host } = this.#o;
    const macs = new Map<string, string[]>();
    for (const r of this.#o.fdb()) {
      const list = macs.get(r.port);
      if (!list) macs.set(r.port, [r.mac]);
      else if (list.length < MACS_PER_PORT) list.push(r.mac);
    }
    const qos = new Map(this.#o.views.qos().ports.map((q) => [q.name, q]));
    return ports.map((p) => {
      const c = p.counters;
      const q = qos.get(p.name);
      const pol = this.#o.qosPolicy(p.name);
      const peer = transportPeer(p.transport);
      return {
        host,
        name: p.name,
        kind: p.kind,
        ...(p.network === undefined ? {} : { network: p.network }),
        state: p.state,
        macs: macs.get(p.name) ?? [],
        mac_count: p.macs,
        ...(peer ? { peer } : {}),
        rx_bytes: c.rx_bytes,
        rx_frames: c.rx_frames,
        tx_bytes: c.tx_bytes,
        tx_frames: c.tx_frames,
        drops: c.drops,
        ...(q && pol ? { qos: { min: pol.min ?? 0, max: pol.max ?? 0, rate: q.rx_rate } } : {}),
      };
    });
  }

  /** `local` plus every other host of the fabric, fetched over their HTTP endpoints. */
  async #fabric(local: OverviewView, cluster: ClusterView): Promise<OverviewView> {
    const { host } = this.#o;
    const hosts: OverviewHost[] = [local.hosts[0] as OverviewHost];
    const parts: OverviewView[] = [local];
    const others = cluster.hosts.filter((h) => h.id !== host);
    const answers = await Promise.all(
      others.map((h) => (h.state === 'up' && h.http ? this.#o.peers.get(h.id, h.http) : undefined)),
    );
    others.forEach((h, i) => {
      const base = {
        id: h.id,
        local: false,
        ...(h.address ? { address: h.address } : {}),
        ...(h.http ? { http: h.http } : {}),
      };
      const a = answers[i];
      if (h.state === 'down') hosts.push({ ...base, state: 'down', reason: 'its lease lapsed: the host is away' });
      else if (!h.http)
        hosts.push({
          ...base,
          state: 'unreachable',
          reason: 'it publishes no HTTP endpoint (no http: section in its config)',
        });
      else if (!a || 'error' in a) hosts.push({ ...base, state: 'unreachable', reason: a?.error ?? 'no answer' });
      else {
        hosts.push({ ...base, state: 'up', at: a.view.at });
        parts.push(a.view);
      }
    });
    const links = parts.flatMap((p) => p.links);
    return {
      at: local.at,
      host,
      scope: 'fabric',
      hosts: [...hosts, ...outsiders(links, new Set(hosts.map((h) => h.id)))],
      networks: mergeNetworks(parts),
      ports: parts.flatMap((p) => p.ports),
      links,
      exports: parts.flatMap((p) => p.exports),
    };
  }
}

/** The peer a port's transport names: the connected peer (stream), or the configured remote (dgram). */
function transportPeer(t: Record<string, unknown>): string | undefined {
  for (const k of ['peer', 'remote']) {
    const v = t[k];
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

function overviewLink(host: string, l: LinkView): OverviewLink {
  return {
    host,
    name: l.name,
    ...(l.peer ? { peer: l.peer } : {}),
    state: l.state,
    path: l.path,
    transport: l.transport,
    ...(l.rtt_ms === undefined ? {} : { rtt_ms: l.rtt_ms }),
    tx_bps: l.tx_bps,
    rx_bps: l.rx_bps,
    tx_bytes: l.tx_bytes,
    rx_bytes: l.rx_bytes,
    drops: l.drops,
  };
}

/** The peers of this host's links as hosts: up when any link to it is up. */
function linkPeers(links: LinkView[], self: string): OverviewHost[] {
  const byId = new Map<string, OverviewHost>();
  for (const l of links) {
    if (!l.peer || l.peer === self) continue;
    const h = byId.get(l.peer);
    const up = l.state === 'up';
    // Up wins; among down links the first one's reason is kept.
    if (h && (h.state === 'up' || !up)) continue;
    byId.set(l.peer, {
      id: l.peer,
      state: up ? 'up' : 'down',
      local: false,
      // A dialled link's address has its scheme (`tcp:` or `udp:`); an accepted one is the peer's `IP:PORT`.
      ...(l.address ? { address: /^(tcp|udp):/.test(l.address) ? l.address : `tcp:${l.address}` } : {}),
      ...(up ? {} : { reason: `link "${l.name}" is ${l.state}: ${l.reason}` }),
    });
  }
  return [...byId.values()];
}

/** Peers of links (hand links to hosts outside the fabric) that are not in `known`: up while a link to them is up. */
function outsiders(links: OverviewLink[], known: Set<string>): OverviewHost[] {
  const byId = new Map<string, OverviewHost>();
  for (const l of links) {
    const h = l.peer ? byId.get(l.peer) : undefined;
    const up = l.state === 'up';
    if (!l.peer || known.has(l.peer) || (h && (h.state === 'up' || !up))) continue;
    byId.set(l.peer, {
      id: l.peer,
      state: up ? 'up' : 'down',
      local: false,
      reason: `not a member of the fabric: the peer of link "${l.name}" of host "${l.host}"${up ? '' : `, which is ${l.state}`}`,
    });
  }
  return [...byId.values()];
}

/** Networks of every part by name, with the union of the hosts that have local ports on them. */
function mergeNetworks(parts: OverviewView[]): OverviewView['networks'] {
  const byName = new Map<string, OverviewView['networks'][number]>();
  for (const p of parts)
    for (const n of p.networks) {
      const m = byName.get(n.name);
      if (!m) byName.set(n.name, { ...n, hosts: [...n.hosts] });
      else for (const h of n.hosts) if (!m.hosts.includes(h)) m.hosts.push(h);
    }
  return [...byName.values()];
}
