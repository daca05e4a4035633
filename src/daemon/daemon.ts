/**
 * The daemon: wires the switch, the ports, the state store and the control
 * API together, and implements the API's operations ({@link ControlBackend}).
 *
 * Start order: check the control socket is free (so a second daemon stops
 * before touching anyone's sockets), load the state store, build networks and
 * ports from the config (source "config") then from the store (source "api"),
 * open every port, build the exports (config, then stored) and start the NBD
 * server (daemon/storage.ts), then serve the API. A port that cannot open is logged and
 * shown as `down` with the reason; it does not stop the daemon.
 */
import type {
  CaptureTap,
  ControlBackend,
  DiskArgsView,
  ExportView,
  NetworkView,
  PortViewOut,
  QemuArgsView,
  StatusView,
} from '../api/backend.js';
import { ApiServer } from '../api/server.js';
import {
  type Config,
  defaultNbdSocket,
  type NetworkConfig,
  networkSchema,
  type PortConfig,
  portSchema,
} from '../config/schema.js';
import { createEmbeddedStore } from '../control/embedded-store.js';
import type { StateStore, StoredItem } from '../control/store.js';
import { describeError, VmlinkError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import {
  NetworkExistsError,
  NetworkInUseError,
  NetworkLimitError,
  NetworkNotFoundError,
  PortExistsError,
  PortNotFoundError,
  PortOpenError,
} from '../net/errors.js';
import type { LinkView, ListenerView } from '../net/overlay/overlay.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type PortContext, type PortState } from '../net/port.js';
import { type FdbRow, Switch, type SwitchPort } from '../net/switch/switch.js';
import type { QosPortView, QosView } from '../qos/view.js';
import { DeclaredInConfigError } from './errors.js';
import { diskArgs, exportView } from './export-specs.js';
import { OverlayService } from './overlay.js';
import { createPort } from './port-registry.js';
import { startProcessStats } from './process-stats.js';
import { defaultMac, qemuArgs, shellQuote } from './qemu-args.js';
import { QosService } from './qos.js';
import { addressOf, packageVersion, parseWith, portBinding, rawOf } from './specs.js';
import { StorageService } from './storage.js';
import { UnavailablePort } from './unavailable-port.js';

export type Source = 'config' | 'api';

export interface DaemonOptions {
  /** The validated configuration. */
  config: Config;
  /** Path of the config file, named in messages; optional. */
  configPath?: string | undefined;
  /** Control socket path; overrides `host.control`. */
  control?: string | undefined;
  /** Root logger; default a new one at `log.level` with the host id on every line. */
  logger?: Logger | undefined;
  /** State store; default the embedded store in `host.state_dir`. */
  store?: StateStore | undefined;
}

interface PortEntry {
  sp: SwitchPort;
  source: Source;
  spec: PortConfig;
  /** The port as given: the API body, or the config entry with addresses in text form. */
  raw: Record<string, unknown>;
  /** Reason of the last state change. */
  reason: string;
  taps: Set<CaptureTap>;
}

export class Daemon implements ControlBackend {
  readonly config: Config;
  readonly logger: Logger;
  /** Control socket path in use. */
  readonly controlPath: string;
  readonly #configPath: string | undefined;
  readonly #store: StateStore;
  readonly #switch: Switch;
  readonly #api: ApiServer;
  readonly #storage: StorageService;
  readonly #qos: QosService;
  readonly #overlay: OverlayService;
  readonly #networkSource = new Map<string, Source>();
  readonly #ports = new Map<string, PortEntry>();
  readonly #version = packageVersion();
  readonly #startedAt = performance.now();
  /** RSS, fds and event-loop delay for the status API. */
  readonly #processStats = startProcessStats();
  /** Tail of the chain that serializes changes (API calls). */
  #chain: Promise<unknown> = Promise.resolve();
  #started = false;
  #stopping: Promise<void> | undefined;

  constructor(opts: DaemonOptions) {
    this.config = opts.config;
    this.#configPath = opts.configPath;
    this.controlPath = opts.control ?? opts.config.host.control;
    this.logger = opts.logger ?? createLogger({ level: opts.config.log?.level, base: { host: opts.config.host.id } });
    this.#store = opts.store ?? createEmbeddedStore({ dir: opts.config.host.state_dir, logger: this.logger });
    this.#switch = new Switch({ logger: this.logger, agingSec: opts.config.host.aging_sec });
    this.#qos = new QosService({ switch: this.#switch, logger: this.logger });
    this.#storage = new StorageService({
      logger: this.logger,
      config: opts.config.storage,
      store: this.#store,
      configPath: opts.configPath,
      defaultSocket: defaultNbdSocket(this.controlPath),
      stateDir: opts.config.host.state_dir,
    });
    this.#overlay = new OverlayService({
      logger: this.logger,
      switch: this.#switch,
      hostId: opts.config.host.id,
      config: opts.config.overlay,
      links: opts.config.links,
      admitLink: (name, qos, networks) => this.#qos.admitLink(name, qos, networks),
    });
    this.#qos.setLinks(() => this.#overlay.shapedLinks());
    this.#api = new ApiServer({
      backend: this,
      logger: this.logger,
      path: this.controlPath,
      maxConnections: opts.config.host.control_max_connections,
      headersTimeoutMs: opts.config.host.control_headers_timeout_ms,
      socket: opts.config.host.control_socket,
    });
  }

  /** Brings everything up; rejects (after undoing what it did) when the control socket or the store is unusable. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    try {
      await this.#api.checkPath();
      const stored = await this.#store.load();
      this.#switch.start();
      for (const n of this.config.networks) this.#addNetwork(n, 'config');
      for (const p of this.config.ports) this.#addPort(p, rawOf(p), 'config', true);
      const cfg = this.config;
      this.#qos.checkConfig(cfg.ports, this.#configPath ?? 'the configuration', cfg.links, cfg.overlay?.peer_qos);
      this.#qos.start();
      this.#restore(stored.networks, stored.ports);
      await Promise.all([...this.#ports.values()].map((e) => this.#openAtStart(e)));
      await this.#storage.start(this.config.exports, stored.exports);
      await this.#overlay.start();
      this.#restoreLinks(stored.links ?? []);
      await this.#api.listen();
    } catch (err) {
      await this.stop();
      throw err;
    }
    const ports = [...this.#ports.values()];
    this.logger.info(
      {
        control: this.controlPath,
        networks: this.#networkSource.size,
        ports: ports.length,
        down: ports.filter((e) => e.sp.state === 'down').length,
        exports: this.#storage.entries().length,
        nbd: this.#storage.listen(),
        version: this.#version,
      },
      'vmlink daemon started',
    );
  }

  /** Closes the API, flushes and closes every port, stops the switch, closes the store. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    for (const e of this.#ports.values()) for (const t of e.taps) t.end('the daemon is stopping');
    await this.#api
      .close()
      .catch((err) => this.logger.error({ err }, `closing the control API: ${describeError(err)}`));
    await this.#overlay
      .stop()
      .catch((err) => this.logger.error({ err }, `stopping the overlay: ${describeError(err)}`));
    await Promise.all(
      [...this.#ports.values()].map((e) =>
        e.sp.port
          .close()
          .catch((err) => this.logger.warn({ port: e.sp.name, err }, `closing port: ${describeError(err)}`)),
      ),
    );
    this.#switch.stop();
    this.#qos.stop();
    await this.#chain.catch(() => undefined);
    // After pending API changes: an export being added is then closed too.
    await this.#storage.close();
    await this.#store.close().catch((err) => this.logger.error({ err }, describeError(err)));
    this.#processStats.stop();
    if (this.#started) this.logger.info('vmlink daemon stopped');
  }

  // ---- building -------------------------------------------------------------------

  /** Throws when one more network would pass `limits.networks`. */
  #checkNetworkCap(): void {
    const cap = this.config.limits.networks;
    if (this.#networkSource.size >= cap) throw new NetworkLimitError(this.#networkSource.size, cap);
  }

  #addNetwork(n: NetworkConfig, source: Source): void {
    this.#switch.addNetwork({ name: n.name, vni: n.vni, mtu: n.mtu });
    this.#networkSource.set(n.name, source);
  }

  /**
   * Creates the port on the switch (not opened). Throws when a network is
   * missing or the name is taken. With `tolerant` (config and stored ports) a
   * transport that cannot be built becomes an {@link UnavailablePort}, shown
   * down with the reason; otherwise (API) the error is thrown.
   */
  #addPort(spec: PortConfig, raw: Record<string, unknown>, source: Source, tolerant: boolean): PortEntry {
    const log = this.logger.child({ port: spec.name });
    const entry = { source, spec, raw, reason: 'not opened yet', taps: new Set<CaptureTap>() } as PortEntry;
    entry.sp = this.#switch.addPort(spec.name, portBinding(spec), (sink, sp) => {
      const ctx: PortContext = {
        sink,
        sinkBatch: sp.ingressBatch,
        onState: (state: PortState, reason: string) => {
          this.#switch.portState(sp, state);
          entry.reason = reason;
          log.info({ state, reason }, `port ${state}: ${reason}`);
        },
        onMalformed: (reason: string) => this.#switch.malformed(sp, reason),
        onRoom: sp.onRoom,
        logger: log,
        maxFrameLen: MAX_FRAME_LEN,
        queueLen: spec.queue_len ?? DEFAULT_QUEUE_LEN,
      };
      if (!tolerant) return createPort(spec, ctx);
      try {
        return createPort(spec, ctx);
      } catch (err) {
        return new UnavailablePort(spec.name, spec.kind, err);
      }
    });
    this.#ports.set(spec.name, entry);
    this.#qos.attach(spec);
    return entry;
  }

  /** Re-creates what the API added before; an item that no longer fits is logged and skipped (kept in the store). */
  #restore(networks: StoredItem[], ports: StoredItem[]): void {
    const skip = (what: string, name: unknown, err: unknown): void => {
      this.logger.error(
        { [what]: name, code: (err as { code?: unknown }).code },
        `${what} "${String(name)}" from the state store was not restored: ${describeError(err)}`,
      );
    };
    for (const raw of networks) {
      try {
        const n = parseWith(networkSchema, raw, `stored network "${raw.name}"`);
        if (this.#networkSource.get(n.name) === 'config')
          throw new DeclaredInConfigError('network', n.name, this.#configPath);
        this.#checkNetworkCap();
        this.#addNetwork(n, 'api');
      } catch (err) {
        skip('network', raw.name, err);
      }
    }
    for (const raw of ports) {
      try {
        const p = parseWith(portSchema, raw, `stored port "${raw.name}"`);
        if (this.#ports.get(p.name)?.source === 'config')
          throw new DeclaredInConfigError('port', p.name, this.#configPath);
        this.#qos.admit(p);
        this.#addPort(p, raw, 'api', true);
      } catch (err) {
        skip('port', raw.name, err);
      }
    }
  }

  /** Re-adds the links added through the API before; one that no longer fits is logged and skipped. */
  #restoreLinks(links: StoredItem[]): void {
    for (const raw of links) {
      try {
        this.#overlay.addLink(raw);
      } catch (err) {
        this.logger.error(
          { link: raw.name, code: (err as { code?: unknown }).code },
          `link "${raw.name}" from the state store was not restored: ${describeError(err)}`,
        );
      }
    }
  }

  async #openAtStart(e: PortEntry): Promise<void> {
    try {
      await e.sp.port.open();
    } catch (err) {
      e.reason = `cannot open: ${describeError(err)}`;
      this.#switch.portState(e.sp, 'down');
      this.logger.error({ port: e.sp.name, code: (err as { code?: unknown }).code }, `port "${e.sp.name}" ${e.reason}`);
    }
  }

  /** Runs API changes one at a time, so each sees the state the previous one left. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#chain.then(fn);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  // ---- ControlBackend ------------------------------------------------------------

  status(): StatusView {
    const ports = [...this.#ports.values()];
    return {
      host: {
        id: this.config.host.id,
        version: this.#version,
        pid: process.pid,
        uptime_s: Math.floor((performance.now() - this.#startedAt) / 1000),
        control: this.controlPath,
        state_dir: this.config.host.state_dir,
      },
      networks: this.#networkSource.size,
      ports: { total: ports.length, up: ports.filter((e) => e.sp.state === 'up').length },
      storage: this.#storage.status(),
      admission: this.#admissionStatus(),
      process: this.#processStats.view(),
      overlay: { listener: this.#overlay.listener() },
    };
  }

  /** Each listener's admission counters: control always, nbd and links while they listen. */
  #admissionStatus(): NonNullable<StatusView['admission']> {
    const nbd = this.#storage.admission();
    const links = this.#overlay.admission();
    return {
      control: this.#api.admission(),
      ...(nbd ? { nbd } : {}),
      ...(links ? { links } : {}),
    };
  }

  networks(): NetworkView[] {
    return this.#switch.networks().map((n) => ({ ...n, source: this.#networkSource.get(n.name) ?? 'api' }));
  }

  #networkView(name: string): NetworkView {
    // One lookup, not a list of every network: a create's answer must not cost more as networks grow.
    const n = this.#switch.network(name);
    if (!n) throw new NetworkNotFoundError(name, [...this.#networkSource.keys()]);
    return { ...n, source: this.#networkSource.get(n.name) ?? 'api' };
  }

  addNetwork(body: unknown): Promise<NetworkView> {
    return this.#serial(async () => {
      const n = parseWith(networkSchema, body, 'the network in the request body');
      const source = this.#networkSource.get(n.name);
      if (source === 'config') throw new DeclaredInConfigError('network', n.name, this.#configPath);
      if (source) throw new NetworkExistsError(n.name);
      this.#checkNetworkCap();
      this.#addNetwork(n, 'api');
      try {
        await this.#store.putNetwork(body as StoredItem);
      } catch (err) {
        this.#switch.removeNetwork(n.name);
        this.#networkSource.delete(n.name);
        throw err;
      }
      this.#overlay.networksChanged();
      this.logger.info({ network: n.name, vni: n.vni, mtu: n.mtu }, `network "${n.name}" created`);
      return this.#networkView(n.name);
    });
  }

  deleteNetwork(name: string): Promise<void> {
    return this.#serial(async () => {
      const source = this.#networkSource.get(name);
      if (!source) throw new NetworkNotFoundError(name, [...this.#networkSource.keys()]);
      if (source === 'config') throw new DeclaredInConfigError('network', name, this.#configPath);
      // Overlay link ports do not hold a network: they go with it.
      const users = this.#networkView(name).ports.filter((p) => !p.startsWith('link/'));
      if (users.length) throw new NetworkInUseError(name, users);
      // Store first: if it fails, nothing changed.
      await this.#store.deleteNetwork(name);
      await this.#overlay.releaseNetwork(name);
      this.#switch.removeNetwork(name);
      this.#networkSource.delete(name);
      this.#overlay.networksChanged();
      this.logger.info({ network: name }, `network "${name}" deleted`);
    });
  }

  ports(): PortViewOut[] {
    return [...this.#ports.values()].map((e) => this.#portView(e));
  }

  port(name: string): PortViewOut {
    return this.#portView(this.#entry(name));
  }

  #entry(name: string): PortEntry {
    const e = this.#ports.get(name);
    if (!e) throw new PortNotFoundError(name);
    return e;
  }

  #portView(e: PortEntry): PortViewOut {
    const sp = e.sp;
    return {
      name: sp.name,
      kind: e.spec.kind,
      source: e.source,
      state: sp.state,
      reason: e.reason,
      ...(e.spec.network === undefined ? {} : { network: e.spec.network }),
      ...(e.spec.trunk === undefined ? {} : { trunk: e.spec.trunk }),
      spec: e.raw,
      transport: sp.port.describe(),
      counters: sp.counterSnapshot(),
      macs: sp.learned,
    };
  }

  addPort(body: unknown): Promise<PortViewOut> {
    return this.#serial(async () => {
      const spec = parseWith(portSchema, body, 'the port in the request body');
      const existing = this.#ports.get(spec.name);
      if (existing?.source === 'config') throw new DeclaredInConfigError('port', spec.name, this.#configPath);
      if (existing) throw new PortExistsError(spec.name);
      this.#qos.admit(spec);
      const e = this.#addPort(spec, body as Record<string, unknown>, 'api', false);
      try {
        await e.sp.port.open();
      } catch (err) {
        await this.#removePort(spec.name);
        // A port's own error has its specific code and names the port already: pass it on as it is.
        if (err instanceof VmlinkError) throw err;
        throw new PortOpenError(
          'ERR_PORT_OPEN',
          `port "${spec.name}": cannot open its ${spec.kind} transport (${addressOf(spec)}): ${describeError(err)}`,
          { cause: err },
        );
      }
      try {
        await this.#store.putPort(body as StoredItem);
      } catch (err) {
        await this.#removePort(spec.name);
        throw err;
      }
      this.logger.info({ port: spec.name, kind: spec.kind }, `port "${spec.name}" created`);
      return this.#portView(e);
    });
  }

  deletePort(name: string): Promise<void> {
    return this.#serial(async () => {
      const e = this.#entry(name);
      if (e.source === 'config') throw new DeclaredInConfigError('port', name, this.#configPath);
      await this.#store.deletePort(name);
      await this.#removePort(name);
      this.logger.info({ port: name }, `port "${name}" deleted`);
    });
  }

  async #removePort(name: string): Promise<void> {
    const e = this.#ports.get(name);
    if (!e) return;
    this.#ports.delete(name);
    this.#qos.detach(name);
    for (const t of e.taps) t.end('the port was deleted');
    await this.#switch.removePort(name);
  }

  fdb(network?: string): FdbRow[] {
    return this.#switch.fdb(network);
  }

  qemuArgs(name: string, id?: string): QemuArgsView {
    const { spec } = this.#entry(name);
    const mac = spec.mac ?? spec.allowed_macs?.[0] ?? defaultMac(name);
    const args = qemuArgs(spec, { mac, id: id ?? name });
    return { args, mac, command: shellQuote(args) };
  }

  exports(): ExportView[] {
    return this.#storage.entries().map((e) => exportView(e, this.#storage));
  }

  export(name: string): ExportView {
    return exportView(this.#storage.entry(name), this.#storage);
  }

  addExport(body: unknown): Promise<ExportView> {
    return this.#serial(async () => exportView(await this.#storage.addFromApi(body), this.#storage));
  }

  deleteExport(name: string): Promise<void> {
    return this.#serial(() => this.#storage.deleteFromApi(name));
  }

  diskArgs(name: string, id?: string): DiskArgsView {
    return diskArgs(this.#storage.entry(name), this.#storage, id);
  }

  qos(): QosView {
    return this.#qos.view();
  }

  qosRequest(name: string, body: unknown): Promise<QosPortView> {
    return this.#serial(async () => {
      const e = this.#entry(name);
      const before = this.#qos.policy(name);
      const view = this.#qos.request(name, body);
      // A port added over the API keeps what it was granted across restarts; a config port's policy is the file's.
      if (e.source === 'api') {
        const raw: Record<string, unknown> = { ...e.raw, qos: this.#qos.policy(name) };
        try {
          await this.#store.putPort(raw as StoredItem);
        } catch (err) {
          this.#qos.restore(name, before);
          throw err;
        }
        e.raw = raw;
      }
      return view;
    });
  }

  links(): LinkView[] {
    return this.#overlay.links();
  }

  linkListener(): ListenerView {
    return this.#overlay.listener();
  }

  link(name: string): LinkView {
    return this.#overlay.link(name);
  }

  addLink(body: unknown): Promise<LinkView> {
    return this.#serial(async () => {
      const v = this.#overlay.addLink(body);
      try {
        await this.#store.putLink(body as StoredItem);
      } catch (err) {
        await this.#overlay.deleteLink(v.name);
        throw err;
      }
      this.logger.info({ link: v.name, address: v.address }, `link "${v.name}" added`);
      return v;
    });
  }

  setLinkQos(name: string, body: unknown): Promise<LinkView> {
    return this.#serial(async () => {
      const { before, qos } = this.#overlay.setLinkQos(name, body);
      const view = this.#overlay.link(name);
      // A link added over the API keeps its QoS across restarts; a config link's is the file's (until restart).
      if (view.source === 'api') {
        const stored = (await this.#store.load()).links?.find((l) => l.name === name);
        if (stored) {
          const { qos: _old, ...rest } = stored;
          try {
            await this.#store.putLink((qos ? { ...rest, qos: body } : rest) as StoredItem);
          } catch (err) {
            this.#overlay.restoreLinkQos(name, before);
            throw err;
          }
        }
      }
      this.logger.info({ link: name, qos: body ?? null }, `QoS of link "${name}" changed`);
      return this.#overlay.link(name);
    });
  }

  deleteLink(name: string): Promise<void> {
    return this.#serial(async () => {
      this.#overlay.checkDeletable(name);
      await this.#store.deleteLink(name);
      await this.#overlay.deleteLink(name);
      this.logger.info({ link: name }, `link "${name}" deleted`);
    });
  }

  capture(name: string, tap: CaptureTap): () => void {
    const e = this.#entry(name);
    const sp = e.sp;
    sp.taps.push(tap);
    e.taps.add(tap);
    return () => {
      e.taps.delete(tap);
      const i = sp.taps.indexOf(tap);
      if (i >= 0) sp.taps.splice(i, 1);
    };
  }
}
