/**
 * The control API's operations ({@link ControlBackend}) over the daemon's
 * collaborators. Reads come from the owners (port manager, switch, storage,
 * overlay, QoS); every change goes through the reconciler's chain, so an API
 * change, a config reload and start-up create and remove things the same way.
 */
import type {
  CaptureTap,
  ClusterTokenView,
  ClusterView,
  ControlBackend,
  DiskArgsView,
  ExportView,
  HttpStatusView,
  LibvirtXmlView,
  NetworkView,
  OverviewScope,
  OverviewView,
  PortViewOut,
  QemuArgsView,
  ReloadView,
  StatusView,
} from '../api/backend.js';
import { linkSchema } from '../config/overlay-schema.js';
import { parseWith } from '../config/parse.js';
import { exportSchema, networkSchema, portSchema } from '../config/schema.js';
import type { StateStore, StoredItem } from '../control/store.js';
import type { Logger } from '../log.js';
import { NetworkExistsError, NetworkNotFoundError, PortExistsError } from '../net/errors.js';
import type { LinkView, ListenerView } from '../net/overlay/overlay.js';
import type { FdbRow, Switch } from '../net/switch/switch.js';
import type { QosPortView, QosView } from '../qos/view.js';
import { DeclaredInConfigError } from '../reconcile/errors.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import type { AdmissionStatus } from '../util/admission.js';
import type { LinkActuator, NetworkActuator } from './actuators.js';
import type { ClusterService } from './cluster.js';
import { ClusterNotMemberError, ExportExistsError, ExportInUseError } from './errors.js';
import { defaultDiskId, diskArgs, exportView } from './export-specs.js';
import { libvirtDisk, libvirtInterface } from './libvirt-xml.js';
import type { OverlayService } from './overlay.js';
import { OverviewService } from './overview.js';
import { PeerOverviews } from './overview-peers.js';
import type { PortManager } from './port-manager.js';
import type { ProcessStats } from './process-stats.js';
import { defaultMac, qemuArgs, shellQuote } from './qemu-args.js';
import type { QosService } from './qos.js';
import type { StorageService } from './storage.js';

export interface DaemonBackendOptions {
  hostId: string;
  stateDir: string;
  controlPath: string;
  configPath: string | undefined;
  version: string;
  logger: Logger;
  store: StateStore;
  switch: Switch;
  ports: PortManager;
  networks: NetworkActuator;
  links: LinkActuator;
  qos: QosService;
  storage: StorageService;
  overlay: OverlayService;
  reconciler: Reconciler;
  processStats: ProcessStats;
  /** The control listener's admission counters (the API server is built after the backend). */
  controlAdmission: () => AdmissionStatus;
  /** Re-reads the config file and reconciles toward it. */
  reload: () => Promise<ReloadView>;
  /** The fabric membership (`vmlink cluster ...`). */
  cluster?: ClusterService | undefined;
  /** The HTTP endpoint's state, when `http:` is configured (the server is built after the backend). */
  httpStatus?: (() => HttpStatusView | undefined) | undefined;
}

export class DaemonBackend implements ControlBackend {
  readonly #o: DaemonBackendOptions;
  readonly #log: Logger;
  readonly #startedAt = performance.now();
  readonly #overview: OverviewService;

  constructor(opts: DaemonBackendOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    this.#overview = new OverviewService({
      host: opts.hostId,
      views: this,
      fdb: () => opts.switch.fdb(),
      qosPolicy: (port) => opts.qos.policy(port),
      cluster: () => this.cluster(),
      peers: new PeerOverviews({ logger: opts.logger.child({ component: 'overview' }) }),
    });
  }

  status(): StatusView {
    const { ports, storage, overlay } = this.#o;
    const all = ports.entries();
    const nbd = storage.admission();
    const links = overlay.admission();
    const http = this.#o.httpStatus?.();
    return {
      host: {
        id: this.#o.hostId,
        version: this.#o.version,
        pid: process.pid,
        uptime_s: Math.floor((performance.now() - this.#startedAt) / 1000),
        control: this.#o.controlPath,
        state_dir: this.#o.stateDir,
      },
      networks: this.#o.networks.running().size,
      ports: { total: all.length, up: all.filter((e) => e.sp.state === 'up').length },
      storage: storage.status(),
      admission: { control: this.#o.controlAdmission(), ...(nbd ? { nbd } : {}), ...(links ? { links } : {}) },
      process: this.#o.processStats.view(),
      overlay: { listener: overlay.listener() },
      ...(http ? { http } : {}),
    };
  }

  reload(): Promise<ReloadView> {
    return this.#o.reload();
  }

  // ---- cluster -------------------------------------------------------------------

  #cluster(): ClusterService {
    const c = this.#o.cluster;
    if (!c) throw new ClusterNotMemberError(this.#o.hostId);
    return c;
  }

  cluster(): Promise<ClusterView> {
    return this.#cluster().view();
  }

  clusterInit(body: unknown): Promise<ClusterView> {
    return this.#o.reconciler.serial(() => this.#cluster().init(body));
  }

  clusterToken(body: unknown): Promise<ClusterTokenView> {
    return this.#cluster().token(body);
  }

  clusterJoin(body: unknown): Promise<ClusterView> {
    return this.#o.reconciler.serial(() => this.#cluster().join(body));
  }

  overview(scope?: OverviewScope): Promise<OverviewView> {
    return this.#overview.view(scope);
  }

  // ---- networks ----------------------------------------------------------------

  networks(): NetworkView[] {
    const nets = this.#o.networks;
    return this.#o.switch.networks().map((n) => ({ ...n, source: nets.get(n.name)?.source ?? 'api' }));
  }

  #networkView(name: string): NetworkView {
    // One lookup, not a list of every network: a create's answer must not cost more as networks grow.
    const n = this.#o.switch.network(name);
    if (!n) throw new NetworkNotFoundError(name, [...this.#o.networks.running().keys()]);
    return { ...n, source: this.#o.networks.get(n.name)?.source ?? 'api' };
  }

  addNetwork(body: unknown): Promise<NetworkView> {
    return this.#o.reconciler.serial(async () => {
      const n = parseWith(networkSchema, body, 'the network in the request body');
      const source = this.#o.networks.get(n.name)?.source;
      if (source === 'config') throw new DeclaredInConfigError('network', n.name, this.#o.configPath);
      if (source) throw new NetworkExistsError(n.name);
      const raw = body as StoredItem;
      await this.#o.reconciler.apply('networks', { name: n.name, source: 'api', raw, spec: n }, () =>
        this.#o.store.putNetwork(raw),
      );
      this.#log.info({ network: n.name, vni: n.vni, mtu: n.mtu }, `network "${n.name}" created`);
      return this.#networkView(n.name);
    });
  }

  deleteNetwork(name: string): Promise<void> {
    return this.#o.reconciler.serial(async () => {
      const source = this.#o.networks.get(name)?.source;
      if (!source) throw new NetworkNotFoundError(name, [...this.#o.networks.running().keys()]);
      if (source === 'config') throw new DeclaredInConfigError('network', name, this.#o.configPath);
      this.#o.networks.checkUnused(name);
      // Store first: if it fails, nothing changed.
      await this.#o.reconciler.remove('networks', name, () => this.#o.store.deleteNetwork(name));
      this.#log.info({ network: name }, `network "${name}" deleted`);
    });
  }

  // ---- ports -------------------------------------------------------------------

  ports(): PortViewOut[] {
    const pm = this.#o.ports;
    return pm.entries().map((e) => pm.view(e));
  }

  port(name: string): PortViewOut {
    return this.#o.ports.view(this.#o.ports.entry(name));
  }

  addPort(body: unknown): Promise<PortViewOut> {
    return this.#o.reconciler.serial(async () => {
      const spec = parseWith(portSchema, body, 'the port in the request body');
      const existing = this.#o.ports.get(spec.name);
      if (existing?.source === 'config') throw new DeclaredInConfigError('port', spec.name, this.#o.configPath);
      if (existing) throw new PortExistsError(spec.name);
      const raw = body as StoredItem;
      await this.#o.reconciler.apply('ports', { name: spec.name, source: 'api', raw, spec }, () =>
        this.#o.store.putPort(raw),
      );
      this.#log.info({ port: spec.name, kind: spec.kind }, `port "${spec.name}" created`);
      return this.port(spec.name);
    });
  }

  deletePort(name: string): Promise<void> {
    return this.#o.reconciler.serial(async () => {
      const e = this.#o.ports.entry(name);
      if (e.source === 'config') throw new DeclaredInConfigError('port', name, this.#o.configPath);
      await this.#o.reconciler.remove('ports', name, () => this.#o.store.deletePort(name));
      this.#log.info({ port: name }, `port "${name}" deleted`);
    });
  }

  fdb(network?: string): (FdbRow & { host?: string; seq?: number })[] {
    const rows = this.#o.switch.fdb(network);
    const c = this.#o.cluster;
    if (!c?.member) return rows;
    return rows.map((r) => ({ ...r, ...c.location(r.network, r.mac) }));
  }

  qemuArgs(name: string, id?: string): QemuArgsView {
    const { spec } = this.#o.ports.entry(name);
    const mac = spec.mac ?? spec.allowed_macs?.[0] ?? defaultMac(name);
    const args = qemuArgs(spec, { mac, id: id ?? name });
    return { args, mac, command: shellQuote(args) };
  }

  portLibvirtXml(name: string, id?: string): LibvirtXmlView {
    const { spec } = this.#o.ports.entry(name);
    const mac = spec.mac ?? spec.allowed_macs?.[0] ?? defaultMac(name);
    return libvirtInterface(spec, { mac, id: id ?? name });
  }

  capture(name: string, tap: CaptureTap): () => void {
    return this.#o.ports.capture(name, tap);
  }

  qos(): QosView {
    return this.#o.qos.view();
  }

  qosRequest(name: string, body: unknown): Promise<QosPortView> {
    return this.#o.reconciler.serial(async () => {
      const { qos, ports, store, reconciler } = this.#o;
      const e = ports.entry(name);
      const before = qos.policy(name);
      const view = await qos.requestInFabric(name, body);
      // A port added over the API keeps what it was granted across restarts; a config port's policy is the file's.
      if (e.source === 'api') {
        const raw: Record<string, unknown> = { ...e.raw, qos: qos.policy(name) };
        try {
          await store.putPort(raw as StoredItem);
        } catch (err) {
          qos.restore(name, before);
          throw err;
        }
        e.raw = raw;
        reconciler.record('ports', { name, source: 'api', raw, spec: e.spec });
      }
      return view;
    });
  }

  // ---- exports -----------------------------------------------------------------

  exports(): ExportView[] {
    const s = this.#o.storage;
    return s.entries().map((e) => exportView(e, s));
  }

  export(name: string): ExportView {
    return exportView(this.#o.storage.entry(name), this.#o.storage);
  }

  addExport(body: unknown): Promise<ExportView> {
    return this.#o.reconciler.serial(async () => {
      const spec = parseWith(exportSchema, body, 'the export in the request body');
      const existing = this.#o.storage.get(spec.name);
      if (existing?.source === 'config') throw new DeclaredInConfigError('export', spec.name, this.#o.configPath);
      if (existing) throw new ExportExistsError(spec.name);
      const raw = body as StoredItem;
      await this.#o.reconciler.apply('exports', { name: spec.name, source: 'api', raw, spec }, () =>
        this.#o.store.putExport(raw),
      );
      return this.export(spec.name);
    });
  }

  deleteExport(name: string): Promise<void> {
    return this.#o.reconciler.serial(async () => {
      const e = this.#o.storage.entry(name);
      if (e.source === 'config') throw new DeclaredInConfigError('export', name, this.#o.configPath);
      const clients = e.exp?.stats.clients ?? 0;
      if (clients > 0) throw new ExportInUseError(name, clients);
      // Store first: if it fails, nothing changed.
      await this.#o.reconciler.remove('exports', name, () => this.#o.store.deleteExport(name));
      this.#log.info({ export: name }, `export "${name}" deleted`);
    });
  }

  diskArgs(name: string, id?: string): DiskArgsView {
    return diskArgs(this.#o.storage.entry(name), this.#o.storage, id);
  }

  exportLibvirtXml(name: string, id?: string, dev?: string): LibvirtXmlView {
    const s = this.#o.storage;
    const e = s.entry(name);
    const target = {
      name: e.name,
      readOnly: e.exp ? e.exp.readOnly : e.spec.read_only,
      unix: s.unixSocket(),
      tcp: s.tcpAddress(),
      tls: s.tlsClient(e.spec.tls_only ?? false),
    };
    return libvirtDisk(target, { id: id ?? defaultDiskId(name), ...(dev === undefined ? {} : { dev }) });
  }

  // ---- links -------------------------------------------------------------------

  links(): LinkView[] {
    return this.#o.overlay.links();
  }

  linkListener(): ListenerView {
    return this.#o.overlay.listener();
  }

  link(name: string): LinkView {
    return this.#o.overlay.link(name);
  }

  addLink(body: unknown): Promise<LinkView> {
    return this.#o.reconciler.serial(async () => {
      const l = parseWith(linkSchema, body, 'the link in the request body');
      const raw = body as StoredItem;
      await this.#o.reconciler.apply('links', { name: l.name, source: 'api', raw, spec: l }, () =>
        this.#o.store.putLink(raw),
      );
      const v = this.#o.overlay.link(l.name);
      this.#log.info({ link: v.name, address: v.address }, `link "${v.name}" added`);
      return v;
    });
  }

  setLinkQos(name: string, body: unknown): Promise<LinkView> {
    return this.#o.reconciler.serial(async () => {
      const { overlay, links, store, reconciler } = this.#o;
      const { before, qos } = overlay.setLinkQos(name, body);
      // A link added over the API keeps its QoS across restarts; a config link's is the file's (until restart or reload).
      const item = links.get(name);
      if (item?.source === 'api') {
        const { qos: _old, ...rest } = item.raw;
        const raw = (qos ? { ...rest, qos: body } : rest) as StoredItem;
        try {
          await store.putLink(raw);
        } catch (err) {
          overlay.restoreLinkQos(name, before);
          throw err;
        }
        const next = { ...item, raw };
        links.set(next);
        reconciler.record('links', next);
      }
      this.#log.info({ link: name, qos: body ?? null }, `QoS of link "${name}" changed`);
      return overlay.link(name);
    });
  }

  deleteLink(name: string): Promise<void> {
    return this.#o.reconciler.serial(async () => {
      this.#o.overlay.checkDeletable(name);
      await this.#o.reconciler.remove('links', name, () => this.#o.store.deleteLink(name));
      this.#log.info({ link: name }, `link "${name}" deleted`);
    });
  }
}
