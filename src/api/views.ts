/**
 * The shapes of the control API's answers and request bodies (docs/api.md),
 * as ControlClient (client.ts) returns and takes them. Types only.
 */

import type { ListenerView } from '../net/overlay/overlay.js';
import type { IoStatsView } from '../storage/io-stats.js';
import type { AdmissionStatus } from '../util/admission.js';

/** `POST /v1/reload`: what a config reload changed. */
export interface ReloadView {
  /** The config file that was read. */
  config: string;
  /** `kind/name` of each network, port, export or link created (a changed one is removed, then created). */
  created: string[];
  /** `kind/name` of each one removed. */
  removed: string[];
  /** Items that could not be created or removed, with the reason; the daemon retries them at the next reload. */
  failed: { item: string; code: string | undefined; reason: string }[];
}

/** `GET /v1/status`. */
export interface StatusView {
  host: { id: string; version: string; pid: number; uptime_s: number; control: string; state_dir: string };
  networks: number;
  ports: { total: number; up: number };
  /** The NBD server: bound listen addresses (empty while it is not running), exports, connected clients. */
  storage: StorageStatusView;
  /**
   * Connection admission of each listener (docs/api.md "Admission"): `control`
   * always, `nbd` while the NBD server runs, `links` while the link listener runs.
   */
  admission?: { control: AdmissionStatus; nbd?: AdmissionStatus; links?: AdmissionStatus };
  /** The overlay's link listener: up, down with the reason (retried with backoff), or off. */
  overlay?: { listener: ListenerView };
  /** The daemon process's resources and responsiveness. */
  process: ProcessStatusView;
  /** The read-only HTTP endpoint (`http:`), when configured. */
  http?: HttpStatusView;
}

/** What `GET /v1/status` shows of the HTTP endpoint. */
export interface HttpStatusView {
  /** Bound address (`tcp:127.0.0.1:9470`, port 0 resolved) while listening; empty otherwise. */
  listen: string[];
  /** Why it is not listening, when it failed to start. */
  reason?: string;
}

/** The process part of `GET /v1/status`. */
export interface ProcessStatusView {
  /** Resident set size, bytes. */
  rss_bytes: number;
  /** JavaScript heap in use (V8 heapUsed), bytes. */
  heap_used_bytes: number;
  /** Open file descriptors (-1 where /proc/self/fd cannot be read). */
  fds: number;
  /**
   * Event-loop delay in ms (how late a 20 ms timer fires): p50, p99 and max over the last
   * complete one-second window (0 before the first), and the largest window max since start.
   */
  event_loop_delay_ms: { p50: number; p99: number; max: number; max_since_start: number };
}

/** The storage part of `GET /v1/status`. */
export interface StorageStatusView {
  /** The NBD server is listening. */
  running: boolean;
  /** Bound addresses, e.g. `unix:/run/vmlink/nbd.sock`, `tcp:127.0.0.1:10809` (port 0 resolved). */
  listen: string[];
  /** Number of exports (served or down). */
  exports: number;
  /** NBD clients connected now. */
  clients: number;
  /** Why the server is not running, when it failed to start. */
  reason?: string;
}

/** One export in `GET /v1/exports`. */
export interface ExportView {
  name: string;
  source: Source;
  /** `up`: served; `down`: its backend could not be opened (see `reason`). */
  state: 'up' | 'down';
  reason: string;
  /** The backend as given: `{ type: file|memory|remote|cow, ... }`. */
  backend: Record<string, unknown>;
  /** Device size in bytes; null while down. */
  size: number | null;
  read_only: boolean;
  weight: number;
  description: string;
  /** TCP clients allowed (addresses/CIDRs); absent: everyone. */
  allowed_clients?: string[];
  /** Served only to clients that started TLS. */
  tls_only?: boolean;
  /** Clients connected to this export now. */
  clients: number;
  counters: { requests: number; errors: number; bytes_read: number; bytes_written: number };
  /** Requests, errors and latency histogram per operation; requests in flight (zeros while down). */
  io: IoStatsView;
  /** `nbd+unix:///NAME?socket=PATH` (or `nbd://HOST:PORT/NAME`) while the server listens; null otherwise. */
  uri: string | null;
  /** The export as given (config entry or API body). */
  spec: Record<string, unknown>;
}

/** Body of `POST /v1/exports`: an `exports:` entry of the config. */
export type ExportBody = Record<string, unknown> & { name: string; backend: Record<string, unknown> };

/** `GET /v1/exports/:name/disk-args`. */
export interface DiskArgsView {
  /** QEMU arguments, one array element per argv word (`-blockdev ... -device virtio-blk-pci,...`). */
  args: string[];
  /** The arguments as one shell-quoted line. */
  command: string;
}

/** `GET /v1/ports/:name/libvirt-xml` and `GET /v1/exports/:name/libvirt-xml`: libvirt domain XML. */
export interface LibvirtXmlView {
  /** The device element (`<interface>` or `<disk>`) for the domain's `<devices>` or `virsh attach-device`. */
  xml: string;
  /** Elements the `<domain>` itself needs for the device (vhost-user: `<memory>` and shared `<memoryBacking>`). */
  domain?: string;
  /** What the XML cannot say and the operator has to do, one sentence each. */
  notes: string[];
}

/** Where an item was declared: the config file, or added through the API. */
export type Source = 'config' | 'api';

/** One network in `GET /v1/networks`. */
export interface NetworkView {
  name: string;
  vni: number;
  mtu: number;
  /** Names of the ports on this network. */
  ports: string[];
  /** MACs learned on this network. */
  macs: number;
  source: Source;
}

/** Body of `POST /v1/networks`: a `networks:` entry of the config. */
export interface NetworkBody {
  name: string;
  vni: number;
  /** Default 1500. */
  mtu?: number;
}

/** Per-port counters; `drops` has one entry per drop reason. */
export interface CountersView {
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  /** Large segments received, passed on whole, cut in software; checksums completed in software (absent from older daemons). */
  offload?: { rx_gso: number; tx_gso: number; tx_segmented: number; tx_csum: number };
  drops: Record<string, number>;
}

/** A port as the API describes it. */
export interface PortView {
  name: string;
  kind: string;
  source: Source;
  state: 'closed' | 'listening' | 'connecting' | 'up' | 'down';
  /** Why the port is in its state, e.g. `cannot open: ...` while down. */
  reason?: string;
  network?: string;
  trunk?: { vlans: Record<string, string>; native?: string };
  /** The port as given (config entry or API body). */
  spec: Record<string, unknown>;
  /** The transport's own description (addresses, peer, reconnects). */
  transport: Record<string, unknown>;
  counters: CountersView;
  /** Number of MACs learned on the port. */
  macs: number;
}

/** Body of `POST /v1/ports`: a `ports:` entry of the config. */
export type PortBody = Record<string, unknown> & { name: string; kind: string };

/** One row of `GET /v1/fdb`. */
export interface FdbEntryView {
  network: string;
  mac: string;
  port: string;
  /** Seconds since the MAC was last seen. */
  age: number;
  /** In a fabric: the host the control plane says the MAC is on (absent when the fabric does not know it). */
  host?: string;
  /** ...and its mobility sequence number (higher wins after a move). */
  seq?: number;
}

/** `GET /v1/ports/:name/qemu-args`. */
export interface QemuArgsView {
  /** QEMU arguments, one array element per argv word. */
  args: string[];
  /** MAC the guest NIC gets. */
  mac: string;
  /** The arguments as one shell-quoted line. */
  command: string;
}

/** One host of the fabric in `GET /v1/cluster`. */
export interface ClusterHostView {
  id: string;
  /** `up` while its lease is renewed; `down` once it lapsed (its MACs and links are withdrawn). */
  state: 'up' | 'down';
  /** Where its links are dialled, `tcp:IP:PORT`; undefined for a dial-out host without a listener. */
  address?: string | undefined;
  /** Its read-only HTTP endpoint (`http://IP:PORT`), when it has an `http:` section (`GET /v1/overview` fetches from it). */
  http?: string | undefined;
  /** Other hosts can dial it. */
  reachable: boolean;
  /** It relays between its links (a hub). */
  relay: boolean;
  /** It holds the fabric CA key and serves joins. */
  issuer: boolean;
  /** Seconds since its lease was last renewed, as seen by this daemon (undefined when down). */
  lease_age_s?: number | undefined;
  /** Networks it has local ports on. */
  networks: string[];
  /** Its links as it last published them: peer host and state. */
  links: { name: string; peer?: string | undefined; state: string }[];
  /** When it joined the fabric (ISO 8601). */
  joined?: string | undefined;
}

/** `GET /v1/cluster`: this daemon's view of the fabric. */
export interface ClusterView {
  /** `single`: no fabric (the embedded store); `member`: a host of a fabric in etcd. */
  mode: 'single' | 'member';
  /** This host's id. */
  host: string;
  etcd?: {
    endpoints: string[];
    prefix: string;
    /** etcd answers now; when false, changes are refused with ERR_CLUSTER_UNAVAILABLE and forwarding goes on. */
    available: boolean;
    /** Why it is unavailable, when it is. */
    reason?: string | undefined;
    /** Seconds since the state last changed. */
    since_s: number;
  };
  /** Lease TTL in seconds. */
  lease_ttl_s?: number;
  hosts: ClusterHostView[];
  /** Keys under the prefix whose value could not be used, with the reason (skipped). */
  corrupt: { key: string; reason: string }[];
}

/** `POST /v1/cluster/token`. */
export interface ClusterTokenView {
  token: string;
  /** When it stops working (ISO 8601). */
  expires: string;
  /** Where the joining host will be served. */
  join: string[];
}

/** `GET /v1/overview?scope=`: this host only, or every host of the fabric (the default on a member). */
export type OverviewScope = 'host' | 'fabric';

/**
 * `GET /v1/overview`: one answer with everything the dashboard draws. Counters
 * are totals since the port, link or export started; a viewer computes rates
 * from two answers and their `at` (the daemon keeps no sampler for it).
 */
export interface OverviewView {
  /** When the answer was put together, ms since the epoch. */
  at: number;
  /** The answering host's id. */
  host: string;
  scope: OverviewScope;
  hosts: OverviewHost[];
  /** Networks, each with the hosts that have local ports on it. */
  networks: { name: string; vni: number; mtu: number; hosts: string[] }[];
  ports: OverviewPort[];
  links: OverviewLink[];
  exports: OverviewExport[];
}

/** A host in {@link OverviewView}. */
export interface OverviewHost {
  id: string;
  /**
   * `up`: a member whose lease is renewed, or the peer of an up link; `down`: its lease lapsed or its link is
   * down; `unreachable`: up in the fabric but its HTTP endpoint did not answer (see `reason`): its ports,
   * links and exports are missing from the answer.
   */
  state: 'up' | 'down' | 'unreachable';
  /** The answering host. */
  local: boolean;
  /** Where its links are dialled (`tcp:IP:PORT`), when known. */
  address?: string;
  /** Its HTTP endpoint (`http://IP:PORT`), when it publishes one. */
  http?: string;
  /** Why it is down or unreachable, or why its numbers are missing. */
  reason?: string;
  /** When its numbers were taken, ms since the epoch (absent when there are none). */
  at?: number;
}

/** A port in {@link OverviewView}: the counters of `GET /v1/ports`. */
export interface OverviewPort {
  /** The host it runs on. */
  host: string;
  name: string;
  kind: string;
  network?: string;
  state: string;
  /** Up to 8 MACs learned on it (`mac_count` says how many there are). */
  macs: string[];
  mac_count: number;
  /** The transport's peer (the connected or configured remote address), when known. */
  peer?: string;
  rx_bytes: number;
  rx_frames: number;
  tx_bytes: number;
  tx_frames: number;
  /** Drops by reason (every reason the switch knows, 0 included). */
  drops: Record<string, number>;
  /** Its QoS, when it has a policy, bits/s: reservation (0: none), cap (0: none), what it sent over the last second. */
  qos?: { min: number; max: number; rate: number };
}

/** A link in {@link OverviewView}. */
export interface OverviewLink {
  /** The host the link is seen from (a link between two hosts appears once from each side). */
  host: string;
  name: string;
  /** The peer host id, once known. */
  peer?: string;
  state: string;
  /** `relay`: the peer is a relaying hub (traffic to other hosts goes through it); `direct` otherwise. */
  path: 'direct' | 'relay';
  transport: string;
  /** Round-trip time while the link is up, ms. */
  rtt_ms?: number;
  /** Throughput over the last second, bits/s. */
  tx_bps: number;
  rx_bps: number;
  tx_bytes: number;
  rx_bytes: number;
  /** Drops by reason. */
  drops: Record<string, number>;
}

/** An NBD export in {@link OverviewView}: the counters of `GET /v1/exports`. */
export interface OverviewExport {
  host: string;
  name: string;
  /** `up` (served) or `down`. */
  state: string;
  /** Device size, bytes; null while down. */
  size: number | null;
  /** NBD clients connected now. */
  clients: number;
  requests: number;
  errors: number;
  bytes_read: number;
  bytes_written: number;
}
