/**
 * Builds the daemon's collaborators from the config, each handed what it
 * works with: the switch, the QoS service, the port manager, storage, the
 * overlay, the actuators and the reconciler over them, the API backend and
 * the API server. A test or an embedding may build them otherwise and hand
 * them to the Daemon.
 */

import type { ReloadView } from '../api/backend.js';
import { eventRoutes } from '../api/events.js';
import { HttpServer } from '../api/http-server.js';
import { createMetrics, metricsRoutes } from '../api/metrics.js';
import { ApiServer } from '../api/server.js';
import { WEB_ROOT, webRoutes } from '../api/web-routes.js';
import { type Config, defaultNbdSocket } from '../config/schema.js';
import { createEmbeddedStore } from '../control/embedded-store.js';
import type { StateStore } from '../control/store.js';
import { StoreSwitch } from '../control/store-switch.js';
import { createLogger, type Logger } from '../log.js';
import { Switch } from '../net/switch/switch.js';
import { Reconciler } from '../reconcile/reconciler.js';
import { ExportActuator, LinkActuator, NetworkActuator, PortActuator } from './actuators.js';
import { DaemonBackend } from './backend.js';
import { ClusterService } from './cluster.js';
import { DaemonEvents } from './events.js';
import { OverlayService } from './overlay.js';
import { PortManager } from './port-manager.js';
import { type ProcessStats, startProcessStats } from './process-stats.js';
import { QosService } from './qos.js';
import { packageVersion } from './specs.js';
import { StorageService } from './storage.js';

export interface CollaboratorOptions {
  /** The validated configuration. */
  config: Config;
  /** Path of the config file, named in messages and re-read by a reload; optional. */
  configPath?: string | undefined;
  /** Control socket path; overrides `host.control`. */
  control?: string | undefined;
  /** Root logger; default a new one at `log.level` with the host id on every line. */
  logger?: Logger | undefined;
  /** State store; default the embedded store in `host.state_dir`. */
  store?: StateStore | undefined;
}

export interface Collaborators {
  logger: Logger;
  controlPath: string;
  version: string;
  /** The state store in use: the embedded one, or the fabric's etcd store once a member (swapped by `cluster`). */
  store: StoreSwitch;
  cluster: ClusterService;
  switch: Switch;
  qos: QosService;
  ports: PortManager;
  storage: StorageService;
  overlay: OverlayService;
  networks: NetworkActuator;
  links: LinkActuator;
  reconciler: Reconciler;
  processStats: ProcessStats;
  api: ApiServer;
  /** The read-only HTTP endpoint (metrics, events, dashboard), when `http:` is configured. */
  http: HttpServer | undefined;
  /** The event stream and its sources. */
  events: DaemonEvents;
}

/** The daemon's collaborators for `opts`; `reload` is what `POST /v1/reload` runs. */
export function buildCollaborators(opts: CollaboratorOptions, reload: () => Promise<ReloadView>): Collaborators {
  const config = opts.config;
  const controlPath = opts.control ?? config.host.control;
  const logger = opts.logger ?? createLogger({ level: config.log?.level, base: { host: config.host.id } });
  const store = new StoreSwitch(opts.store ?? createEmbeddedStore({ dir: config.host.state_dir, logger }));
  const sw = new Switch({ logger, agingSec: config.host.aging_sec });
  const qos = new QosService({ switch: sw, logger });
  const ports = new PortManager({ switch: sw, qos, logger });
  const storage = new StorageService({
    logger,
    config: config.storage,
    defaultSocket: defaultNbdSocket(controlPath),
    stateDir: config.host.state_dir,
  });
  const overlay = new OverlayService({
    logger,
    switch: sw,
    hostId: config.host.id,
    config: config.overlay,
    admitLink: (name, q, networks) => qos.admitLink(name, q, networks),
    // overlay.tls: fabric takes the certificate this host got from cluster init or join.
    fabricTls: () => cluster.tlsFiles(),
  });
  qos.setLinks(() => overlay.shapedLinks());
  const events = new DaemonEvents({ hostId: config.host.id, logger, switch: sw, ports, qos, overlay, storage });
  const networks = new NetworkActuator({ switch: sw, overlay, ports, cap: config.limits.networks });
  const links = new LinkActuator({ overlay });
  const reconciler = new Reconciler({
    logger,
    actuators: {
      networks,
      ports: new PortActuator({ ports, qos }),
      exports: new ExportActuator({ storage }),
      links,
    },
  });
  let http: HttpServer | undefined;
  const cluster: ClusterService = new ClusterService({
    config,
    logger,
    store,
    reconciler,
    switch: sw,
    overlay,
    ports,
    qos,
    httpListen: () => http?.status().listen[0],
  });
  const processStats = startProcessStats();
  const version = packageVersion();
  let api: ApiServer | undefined;
  const backend = new DaemonBackend({
    hostId: config.host.id,
    stateDir: config.host.state_dir,
    controlPath,
    configPath: opts.configPath,
    version,
    logger,
    store,
    switch: sw,
    ports,
    networks,
    links,
    qos,
    storage,
    overlay,
    reconciler,
    processStats,
    controlAdmission: () => (api as ApiServer).admission(),
    reload,
    cluster,
    httpStatus: () => http?.status(),
  });
  api = new ApiServer({
    backend,
    logger,
    path: controlPath,
    maxConnections: config.host.control_max_connections,
    headersTimeoutMs: config.host.control_headers_timeout_ms,
    socket: config.host.control_socket,
    events: events.hub,
  });
  if (config.http) {
    const metrics = createMetrics(backend, { host: config.host.id, version });
    http = new HttpServer({
      config: config.http,
      backend,
      logger,
      routes: [metricsRoutes(metrics), eventRoutes(events.hub), webRoutes(WEB_ROOT)],
    });
  }
  events.start(backend);
  return {
    logger,
    controlPath,
    version,
    store,
    cluster,
    switch: sw,
    qos,
    ports,
    storage,
    overlay,
    networks,
    links,
    reconciler,
    processStats,
    api,
    http,
    events,
  };
}
