/**
 * What a member host runs beside its store (daemon/cluster.ts): the cluster
 * agent (host record and lease, MAC locations), the links the fabric plans
 * for it, the MAC locations installed in the switch toward the links that
 * reach their hosts, join tokens, and the join endpoint where it holds the
 * fabric CA key.
 *
 * The agent's view of the hosts drives the link plan (cluster/topology.ts)
 * whenever it changes; a location is installed toward `overlay.portToward`
 * of its host and re-resolved when that host's link ports change. Networks
 * and link states of this host are sampled by one 2 s sweep and written by
 * the agent only when they differ.
 */
import { readFile } from 'node:fs/promises';
import type { ClusterHostView, ClusterTokenView } from '../api/views.js';
import { createFabricAdmission, pairKey } from '../cluster/admission.js';
import { ClusterAgent } from '../cluster/agent.js';
import type { EtcdConnection } from '../cluster/etcd.js';
import { type JoinServer, startJoinServer } from '../cluster/join.js';
import { JoinBadRequestError } from '../cluster/join-errors.js';
import type { LocationSink } from '../cluster/locations.js';
import type { HostView, LinkState, MemberRecord } from '../cluster/membership.js';
import { createToken } from '../cluster/token.js';
import { planLinks } from '../cluster/topology.js';
import type { ClusterConfig } from '../config/cluster-schema.js';
import { type Config, portNetworkRefs } from '../config/schema.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Switch } from '../net/switch/switch.js';
import { formatAddress, parseAddress } from '../util/address.js';
import type { OverlayService } from './overlay.js';
import type { PortManager } from './port-manager.js';
import type { QosService } from './qos.js';

/** The daemon's parts the fabric works with. */
export interface FabricParts {
  config: Config;
  switch: Switch;
  overlay: OverlayService;
  ports: PortManager;
  qos: QosService;
}

export interface FabricContext {
  conn: EtcdConnection;
  settings: ClusterConfig;
  logger: Logger;
  /** The address other hosts dial this host's links on, `tcp:IP:PORT`; none for a dial-out host. */
  address: string | undefined;
  /** This host's HTTP endpoint as the others reach it, `http://IP:PORT`; none without an `http:` section. */
  http?: string | undefined;
}

/** A running membership: see {@link startFabric}. */
export interface Fabric {
  /** The desired state changed (ports, networks): sample what this host publishes now. */
  changed(): void;
  hosts(): ClusterHostView[];
  corrupt(): { key: string; reason: string }[];
  /** Where a MAC installed from the fabric lives: its host and mobility sequence number. */
  location(network: string, mac: string): { host: string; seq: number } | undefined;
  token(body: unknown): Promise<ClusterTokenView>;
  /** Stops the agent (revoking its lease: this host is down everywhere at once), the join endpoint and the sweep. */
  stop(): Promise<void>;
}

const SWEEP_MS = 2000;
const REGISTER_WAIT_MS = 5000;

/** `IP:PORT` of a tcp address, as the join endpoint takes it. */
const hostPort = (a: { host: string; port: number }): string =>
  a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;

/** Starts the agent, the plan, locations and the join endpoint for this member. */
export async function startFabric(parts: FabricParts, ctx: FabricContext): Promise<Fabric> {
  const { config, switch: sw, overlay, ports } = parts;
  const { conn, settings, logger: log } = ctx;
  const self = config.host.id;
  const locations = new Map<string, { network: string; mac: string; host: string; seq: number }>();
  const key = (network: string, mac: string) => `${network}/${mac}`;
  const place = (l: { network: string; mac: string; host: string }) => {
    if (!sw.hasNetwork(l.network)) return;
    try {
      sw.setLocation(l.network, l.mac, overlay.portToward(l.host, l.network));
    } catch (err) {
      log.debug({ err }, `location of ${l.mac} in ${l.network} not installed: ${describeError(err)}`);
    }
  };
  const sink: LocationSink = {
    install(network, mac, host, seq) {
      const l = { network, mac, host, seq };
      locations.set(key(network, mac), l);
      place(l);
    },
    withdraw(network, mac, host) {
      const k = key(network, mac);
      if (locations.get(k)?.host !== host) return;
      locations.delete(k);
      if (sw.hasNetwork(network)) sw.setLocation(network, mac, undefined);
    },
  };
  const stopPorts = overlay.onPortsChanged((host) => {
    for (const l of locations.values()) if (l.host === host) place(l);
  });

  const joinAddress = settings.join_listen ? hostPort(settings.join_listen) : undefined;
  const member: Omit<MemberRecord, 'id'> = {
    overlay: ctx.address ?? null,
    reachable: settings.reachable ?? ctx.address !== undefined,
    relay: config.overlay?.relay ?? false,
    issuer: Boolean(settings.ca?.key && joinAddress),
    ...(joinAddress ? { join: joinAddress } : {}),
    ...(ctx.http ? { http: ctx.http } : {}),
    joined: new Date().toISOString(),
  };
  // QoS reservations sharing a link's capacity are admitted fabric-wide (cluster/admission.ts).
  const admission = createFabricAdmission({
    kv: conn.kv,
    host: self,
    logger: log,
    run: (what, op) => conn.run(what, op),
  });
  const peerOf = (link: string) => overlay.links().find((l) => l.name === link)?.peer ?? link;
  parts.qos.setFabricAdmission((port, bps, links) =>
    admission.reserve(
      links.map((l) => ({ key: pairKey(self, peerOf(l.name)), capacityBps: l.capacity })),
      port,
      bps,
    ),
  );
  let down = new Set<string>();
  let replanning = false;
  const replan = (hosts: HostView[]) => {
    if (replanning) return;
    replanning = true;
    queueMicrotask(() => {
      replanning = false;
      // A host that went down leaves reservations behind: whoever sees it go sweeps them (a transaction, idempotent).
      const nowDown = new Set(hosts.filter((h) => h.state === 'down').map((h) => h.id));
      if ([...nowDown].some((h) => !down.has(h))) {
        const alive = new Set(hosts.filter((h) => h.state === 'up').map((h) => h.id));
        alive.add(self);
        admission.sweep(alive).catch((err) => log.debug({ err }, `admission sweep: ${describeError(err)}`));
      }
      down = nowDown;
      const members = hosts.flatMap((h) => (h.member ? [h.member] : []));
      const alive = new Map(hosts.filter((h) => h.state === 'up').map((h) => [h.id, { networks: h.networks }]));
      const plan = planLinks(self, members, alive);
      overlay
        .setFabricLinks(plan)
        .then((conflicts) => {
          for (const c of conflicts) log.warn({ peer: c.host }, `no fabric link to host "${c.host}": ${c.reason}`);
        })
        .catch((err) => log.error({ err }, `applying the fabric's links failed: ${describeError(err)}`));
    });
  };
  const agent = new ClusterAgent({
    conn,
    host: self,
    logger: log.child({ component: 'cluster' }),
    sink,
    macs: {
      onMacEvent: (fn) =>
        sw.onMacEvent(fn, () => {
          for (const m of sw.localMacs()) agent.learn(m.network, m.mac, m.port, false);
        }),
      localMacs: () => sw.localMacs(),
    },
    member,
    ttlSec: settings.lease_ttl_sec,
    hostsChanged: replan,
  });

  const sample = () => {
    const nets = new Set<string>();
    for (const e of ports.entries()) for (const [, n] of portNetworkRefs(e.spec)) nets.add(n);
    agent.setNetworks([...nets].sort());
    const links: LinkState[] = overlay
      .links()
      .filter((l) => l.peer !== undefined)
      .map((l) => ({ name: l.name, peer: l.peer as string, state: l.state }));
    agent.setLinks(links);
  };
  sample();
  const sweep = setInterval(sample, SWEEP_MS);
  sweep.unref();
  // Registered within a few seconds when etcd answers (so init and join show this host); never blocks longer.
  const started = agent.start().catch((err) => log.error({ err }, `cluster agent: ${describeError(err)}`));
  await Promise.race([started, new Promise((r) => setTimeout(r, REGISTER_WAIT_MS).unref())]);
  // Reservations made before this start (or swept while this host was away) are stated again.
  void started.then(() => parts.qos.reassertInFabric());

  let join: JoinServer | undefined;
  if (member.issuer && settings.ca?.key && settings.host_cert && joinAddress) {
    join = await startJoinServer({
      listen: joinAddress,
      ca: { cert: settings.ca.cert, key: settings.ca.key },
      serverCert: settings.host_cert,
      kv: conn.kv,
      etcd: {
        endpoints: settings.etcd,
        prefix: settings.prefix,
        // Joining hosts get this host's etcd client certificate too: etcd's own PKI need not know the fabric CA.
        ...(settings.etcd_tls ? { tls: settings.etcd_tls } : {}),
      },
      logger: log.child({ component: 'join' }),
      onJoined: (j) => log.info({ joined: j.host, from: j.remote }, `host "${j.host}" joined the fabric`),
    });
  }

  return {
    changed: sample,
    location: (network, mac) => agent.location(network, mac),
    hosts: () =>
      agent.hosts().map((h) => ({
        id: h.id,
        state: h.state,
        ...(h.member?.overlay ? { address: h.member.overlay } : {}),
        ...(h.member?.http ? { http: h.member.http } : {}),
        reachable: h.member?.reachable ?? false,
        relay: h.member?.relay ?? false,
        issuer: h.member?.issuer ?? false,
        ...(h.leaseAgeMs !== null ? { lease_age_s: h.leaseAgeMs / 1000 } : {}),
        networks: h.networks,
        links: h.links.map((l) => ({ name: l.name, peer: l.peer, state: l.state })),
        ...(h.member?.joined ? { joined: h.member.joined } : {}),
      })),
    corrupt: () => agent.corruptKeys().map((k) => ({ key: k, reason: 'not a valid record (skipped)' })),
    token: async (body) => {
      const b = (body ?? {}) as { ttl_sec?: unknown; rejoin?: unknown };
      if (b.ttl_sec !== undefined && (typeof b.ttl_sec !== 'number' || !Number.isInteger(b.ttl_sec)))
        throw new JoinBadRequestError('ttl_sec must be a whole number of seconds');
      if (b.rejoin !== undefined && typeof b.rejoin !== 'string')
        throw new JoinBadRequestError('rejoin must be a host id');
      const issuers = agent
        .hosts()
        .filter((h) => h.state === 'up' && h.member?.issuer && h.member.join)
        .map((h) => h.member?.join as string);
      if (issuers.length === 0)
        throw new JoinBadRequestError(
          'no host of the fabric serves joins now: run cluster init with --join-listen on the host that holds the CA key, and keep it up',
        );
      const caPath = settings.ca?.cert;
      if (!caPath) throw new JoinBadRequestError('this host does not know the fabric CA certificate');
      const t = await conn.run('make a join token', async () =>
        createToken(conn.kv, {
          ...(typeof b.ttl_sec === 'number' ? { ttlSec: b.ttl_sec } : {}),
          ...(typeof b.rejoin === 'string' ? { rejoin: b.rejoin } : {}),
          joinAddresses: issuers.slice(0, 8),
          caCertPem: await readFile(caPath, 'utf8'),
        }),
      );
      return { token: t.token, expires: t.expires.toISOString(), join: issuers.slice(0, 8) };
    },
    stop: async () => {
      parts.qos.setFabricAdmission(undefined);
      clearInterval(sweep);
      stopPorts();
      await join?.close().catch(() => undefined);
      await agent.close({ revoke: true }).catch(() => undefined);
    },
  };
}

/** The address other hosts dial: the setting, else `overlay.listen` when it names an address, else `local` with the listen port. */
export function advertisedAddress(
  settings: ClusterConfig,
  config: Config,
  local: string | undefined,
): string | undefined {
  if (settings.address) return formatAddress(settings.address);
  const l = config.overlay?.listen;
  if (!l || settings.reachable === false) return undefined;
  const wildcard = l.host === '0.0.0.0' || l.host === '::' || l.host === '';
  if (!wildcard) return formatAddress(l);
  return local ? formatAddress({ type: 'tcp', host: local, port: l.port }) : undefined;
}

/**
 * The HTTP endpoint other hosts fetch overviews from: `http://IP:PORT` of the
 * bound `tcp:HOST:PORT`, a wildcard host replaced by the IP of this host's
 * advertised address, else `local` (the address toward etcd); undefined
 * without an endpoint.
 */
export function publishedHttp(
  bound: string | undefined,
  advertised: string | undefined,
  local: string | undefined,
): string | undefined {
  const a = bound === undefined ? undefined : parseAddress(bound, ['tcp']);
  if (!a || typeof a === 'string' || a.type !== 'tcp') return undefined;
  let host = a.host;
  if (host === '0.0.0.0' || host === '::' || host === '') {
    const adv = advertised === undefined ? undefined : parseAddress(advertised, ['tcp']);
    const ip = adv && typeof adv !== 'string' && adv.type === 'tcp' ? adv.host : local;
    if (!ip) return undefined;
    host = ip;
  }
  return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`;
}
