/**
 * The daemon's membership of a fabric (docs/cluster.md). Without one it is
 * idle and the daemon is a single host as before. As a member it:
 *
 * - keeps the desired state in the fabric's etcd store, through the
 *   daemon's StoreSwitch, and reconciles toward it on every change it sees
 *   (a watch), with one converge on the reconciler's chain per burst;
 * - starts from a cached copy of the last state it read when etcd is away at
 *   start, so a restart during an outage still brings up every port;
 * - runs the cluster agent (host record and lease, MAC locations) and the
 *   fabric's links (cluster-fabric.ts), and serves joins where it holds
 *   the CA key;
 * - handles `vmlink cluster init|token|join|status`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterTokenView, ClusterView } from '../api/views.js';
import { ClusterUnavailableError } from '../cluster/errors.js';
import { EtcdConnection } from '../cluster/etcd.js';
import { type ClusterConfig, clusterSchema } from '../config/cluster-schema.js';
import { parseWith } from '../config/parse.js';
import { createEtcdStore, type EtcdStore } from '../control/etcd-store.js';
import { writeAtomically } from '../control/snapshot.js';
import type { StoredState } from '../control/store.js';
import { ForwardingStore, type StoreSwitch } from '../control/store-switch.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import type { DesiredState } from '../reconcile/state.js';
import { advertisedAddress, type Fabric, type FabricParts, publishedHttp, startFabric } from './cluster-fabric.js';
import { clusterDir, loadClusterSettings, localAddressToward, saveClusterSettings } from './cluster-settings.js';
import { joinAsHost, setUpFabric } from './cluster-setup.js';
import { ClusterMemberError, ClusterNotMemberError } from './errors.js';

export interface ClusterServiceOptions extends FabricParts {
  logger: Logger;
  store: StoreSwitch;
  reconciler: Reconciler;
  /** The HTTP endpoint's bound address (`tcp:HOST:PORT`), published in the member record; none without one. */
  httpListen?: (() => string | undefined) | undefined;
}

const CACHE_FILE = 'cluster-cache.json';

/**
 * The etcd store as the daemon uses it: a load that succeeds refreshes a
 * cached copy in the state directory, and when etcd is unreachable the load
 * answers from that copy (a restart during an outage brings everything up).
 */
class CachedStore extends ForwardingStore {
  readonly #etcd: EtcdStore;
  readonly #dir: string;
  readonly #file: string;
  readonly #log: Logger;

  constructor(etcd: EtcdStore, dir: string, log: Logger) {
    super(etcd);
    this.#etcd = etcd;
    this.#dir = dir;
    this.#file = join(dir, CACHE_FILE);
    this.#log = log;
  }

  override async load(): Promise<StoredState> {
    try {
      const state = await this.#etcd.load();
      await writeAtomically(this.#dir, this.#file, JSON.stringify(state)).catch(() => undefined);
      return state;
    } catch (err) {
      if (!(err instanceof ClusterUnavailableError)) throw err;
      const text = await readFile(this.#file, 'utf8').catch(() => undefined);
      if (text === undefined) throw err;
      this.#log.warn(`etcd is unreachable: using the state cached in ${this.#file} until it is back`);
      return JSON.parse(text) as StoredState;
    }
  }
}

export class ClusterService {
  readonly #o: ClusterServiceOptions;
  readonly #log: Logger;
  #settings: ClusterConfig | undefined;
  #conn: EtcdConnection | undefined;
  #etcd: EtcdStore | undefined;
  #fabric: Fabric | undefined;
  #unwatch: (() => void) | undefined;
  #resyncQueued = false;
  #stateSince = Date.now();
  #stateReason: string | undefined;
  /** The desired state of the config in force plus what the store holds (set by the daemon). */
  desired: (stored: StoredState) => DesiredState = () => {
    throw new Error('ClusterService.desired is not set');
  };

  constructor(opts: ClusterServiceOptions) {
    this.#o = opts;
    this.#log = opts.logger;
  }

  get #hostId(): string {
    return this.#o.config.host.id;
  }

  get #stateDir(): string {
    return this.#o.config.host.state_dir;
  }

  /** True when this host is a member of a fabric. */
  get member(): boolean {
    return this.#conn !== undefined;
  }

  /** The fabric CA and this host's certificate and key (for `overlay.tls: fabric`), once a member. */
  tlsFiles(): { ca: string; cert: string; key: string } | undefined {
    const s = this.#settings;
    if (!s?.ca || !s.host_cert) return undefined;
    return { ca: s.ca.cert, cert: s.host_cert.cert, key: s.host_cert.key };
  }

  /** At start, before the store is loaded: connects to the fabric when this host is a member. */
  async open(): Promise<void> {
    const s = await loadClusterSettings(this.#o.config);
    if (s) await this.#connect(s);
  }

  /** After the daemon is up: watch the fabric, run the agent, serve joins. */
  async start(): Promise<void> {
    if (!this.#conn || !this.#etcd || !this.#settings) return;
    const etcd = this.#etcd;
    this.#unwatch = etcd.watch(() => this.#resync());
    const s = this.#settings;
    const local = await localAddressToward(s.etcd[0] as string);
    const address = advertisedAddress(s, this.#o.config, local);
    this.#fabric = await startFabric(this.#o, {
      conn: this.#conn,
      settings: s,
      logger: this.#log,
      address,
      http: publishedHttp(this.#o.httpListen?.(), address, local),
    });
  }

  async #connect(s: ClusterConfig, importing?: StoredState): Promise<void> {
    const conn = new EtcdConnection({
      endpoints: s.etcd,
      prefix: s.prefix,
      ...(s.etcd_tls ? { tls: s.etcd_tls } : {}),
      logger: this.#log.child({ component: 'etcd' }),
    });
    const etcd = createEtcdStore({ conn, host: this.#hostId, logger: this.#log });
    if (importing) {
      // Before anything changes here: a clash (a network of the same name with another VNI) leaves the host as it was.
      try {
        await etcd.importState(importing);
      } catch (err) {
        await etcd.close().catch(() => undefined);
        await conn.close().catch(() => undefined);
        throw err;
      }
    }
    conn.onState((up, reason) => {
      this.#stateSince = Date.now();
      this.#stateReason = up ? undefined : reason;
      if (up) this.#resync();
    });
    this.#conn = conn;
    this.#etcd = etcd;
    this.#settings = s;
    const cached = new CachedStore(etcd, this.#stateDir, this.#log);
    const prev = this.#o.store.replace(cached);
    await prev.close().catch(() => undefined);
  }

  /** Converges toward what the fabric holds now: one converge on the chain per burst of changes. */
  #resync(): void {
    if (this.#resyncQueued || !this.#etcd) return;
    this.#resyncQueued = true;
    const r = this.#o.reconciler;
    r.serial(async () => {
      this.#resyncQueued = false;
      let stored: StoredState;
      try {
        stored = await this.#o.store.load();
      } catch (err) {
        this.#log.debug({ err }, `resync postponed: ${describeError(err)}`);
        return;
      }
      await r.converge(this.desired(stored));
      this.#fabric?.changed();
    }).catch((err) => this.#log.error({ err }, `resync with the fabric failed: ${describeError(err)}`));
  }

  /** `POST /v1/cluster/init`. */
  async init(body: unknown): Promise<ClusterView> {
    if (this.member) throw new ClusterMemberError(this.#hostId, this.#settings as ClusterConfig);
    const req = parseWith(clusterSchema, body, 'the cluster init request body');
    const s = await setUpFabric({
      request: req,
      config: this.#o.config,
      dir: clusterDir(this.#stateDir),
      logger: this.#log,
    });
    await this.#become(s);
    return this.view();
  }

  /** `POST /v1/cluster/join`. */
  async join(body: unknown): Promise<ClusterView> {
    if (this.member) throw new ClusterMemberError(this.#hostId, this.#settings as ClusterConfig);
    const s = await joinAsHost({ body, config: this.#o.config, dir: clusterDir(this.#stateDir) });
    await this.#become(s);
    return this.view();
  }

  /** A running single host becomes a member: its stored items move to etcd, then it runs as one. */
  async #become(s: ClusterConfig): Promise<void> {
    await this.#connect(s, await this.#o.store.load());
    await saveClusterSettings(this.#stateDir, s);
    this.#log.info({ etcd: s.etcd, prefix: s.prefix }, `host "${this.#hostId}" is now a member of the fabric`);
    // overlay.tls: fabric: the links start now, with the certificate just issued.
    if (this.#o.overlay.waitingForFabric) await this.#o.overlay.start();
    await this.start();
    this.#resync();
  }

  /** `POST /v1/cluster/token`. */
  async token(body: unknown): Promise<ClusterTokenView> {
    if (!this.#fabric) throw new ClusterNotMemberError(this.#hostId);
    return this.#fabric.token(body);
  }

  /** Where a MAC installed from the fabric lives (host, mobility sequence number), for `vmlink fdb show`. */
  location(network: string, mac: string): { host: string; seq: number } | undefined {
    return this.#fabric?.location(network, mac);
  }

  /** `GET /v1/cluster`. */
  async view(): Promise<ClusterView> {
    const s = this.#settings;
    if (!s || !this.#conn) return { mode: 'single', host: this.#hostId, hosts: [], corrupt: [] };
    return {
      mode: 'member',
      host: this.#hostId,
      etcd: {
        endpoints: s.etcd,
        prefix: s.prefix,
        available: this.#conn.available,
        ...(this.#stateReason ? { reason: this.#stateReason } : {}),
        since_s: (Date.now() - this.#stateSince) / 1000,
      },
      lease_ttl_s: s.lease_ttl_sec,
      hosts: this.#fabric?.hosts() ?? [],
      corrupt: [...(this.#etcd?.corrupt ?? []), ...(this.#fabric?.corrupt() ?? [])],
    };
  }

  /** Stops the agent, the join server and the watch; closes the connection (the store is closed by the daemon). */
  async stop(): Promise<void> {
    this.#unwatch?.();
    await this.#fabric?.stop().catch(() => undefined);
    await this.#conn?.close().catch(() => undefined);
  }
}
