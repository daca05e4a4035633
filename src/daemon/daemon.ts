/**
 * The daemon: wiring. It holds the collaborators (built by
 * {@link buildCollaborators} or handed in), brings them up in order, drives
 * the reconciler toward the desired state (config plus what the API stored)
 * at start-up and on a reload, and stops them gracefully. The API's
 * operations live in daemon/backend.ts.
 *
 * Start order: check the control socket is free (so a second daemon stops
 * before touching anyone's sockets), load the state store, build the desired
 * state, admit the config's QoS, then reconcile networks and ports (every
 * port opened), exports (then the NBD server starts when configured or when
 * there is an export), links (after the overlay listener), and serve the
 * API. A port that cannot open is logged and shown as `down` with the
 * reason; it does not stop the daemon.
 */
import type { ReloadView } from '../api/backend.js';
import type { Config } from '../config/schema.js';
import type { StoredState } from '../control/store.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DesiredState, Kind } from '../reconcile/state.js';
import { buildCollaborators, type CollaboratorOptions, type Collaborators } from './collaborators.js';
import { daemonDesired } from './desired-config.js';
import { reloadConfig } from './reload.js';

export interface DaemonOptions extends CollaboratorOptions {
  /** The collaborators; default built from the options by {@link buildCollaborators}. */
  collaborators?: Collaborators | undefined;
}

export class Daemon {
  readonly logger: Logger;
  /** Control socket path in use. */
  readonly controlPath: string;
  readonly #configPath: string | undefined;
  readonly #c: Collaborators;
  #config: Config;
  #started = false;
  #stopping: Promise<void> | undefined;

  constructor(opts: DaemonOptions) {
    this.#config = opts.config;
    this.#configPath = opts.configPath;
    this.#c = opts.collaborators ?? buildCollaborators(opts, () => this.reload());
    this.#c.cluster.desired = (stored) => this.#desired(this.#config, stored);
    this.logger = this.#c.logger;
    this.controlPath = this.#c.controlPath;
  }

  /** The configuration in force (the last one loaded or reloaded). */
  get config(): Config {
    return this.#config;
  }

  /** Brings everything up; rejects (after undoing what it did) when the control socket or the store is unusable. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const c = this.#c;
    try {
      await c.api.checkPath();
      // A member of a fabric loads its desired state from etcd (or its cached copy when etcd is away).
      await c.cluster.open();
      const stored = await c.store.load();
      c.switch.start();
      const cfg = this.#config;
      const desired = this.#desired(cfg, stored);
      const networks = cfg.networks.map((n) => n.name);
      c.qos.checkConfig(cfg.ports, this.#configPath ?? 'the configuration', networks, cfg.links, cfg.overlay?.peer_qos);
      c.qos.start();
      await this.#converge(desired, ['networks', 'ports']);
      await c.storage.prepare();
      await this.#converge(desired, ['exports']);
      await this.#ensureStorage();
      await c.overlay.start();
      await this.#converge(desired, ['links']);
      // The HTTP endpoint first: the fabric's member record publishes its address.
      await c.http?.listen();
      await c.cluster.start();
      await c.api.listen();
    } catch (err) {
      await this.stop();
      throw err;
    }
    const ports = c.ports.entries();
    this.logger.info(
      {
        control: this.controlPath,
        networks: c.networks.running().size,
        ports: ports.length,
        down: ports.filter((e) => e.sp.state === 'down').length,
        exports: c.storage.entries().length,
        nbd: c.storage.listen(),
        version: c.version,
      },
      'vmlink daemon started',
    );
  }

  /** Each port's name, state and the reason of its last change (the service manager's STATUS line). */
  portStates(): { name: string; state: string; reason: string }[] {
    return this.#c.ports.entries().map((e) => ({ name: e.sp.name, state: e.sp.state, reason: e.reason }));
  }

  /** The desired state of `config` plus what the store holds. */
  #desired(
    config: Config,
    stored: StoredState,
    onSkip?: (kind: Kind, name: string, err: unknown) => void,
  ): DesiredState {
    return daemonDesired({ config, configPath: this.#configPath, stored, logger: this.logger, onSkip });
  }

  /** Converges `kinds` toward `desired` on the reconciler's chain. */
  #converge(desired: DesiredState, kinds: readonly Kind[]): Promise<unknown> {
    return this.#c.reconciler.serial(() => this.#c.reconciler.converge(desired, kinds));
  }

  /** The NBD server runs when `storage:` is configured or as soon as there is an export. */
  async #ensureStorage(): Promise<void> {
    const s = this.#c.storage;
    if (s.configured || s.entries().length > 0) await s.ensureServer(true);
  }

  /**
   * Re-reads the config file and reconciles toward it (SIGHUP, `vmlink reload`,
   * `POST /v1/reload`). A config that does not load, validate or admit, or
   * that changes what only a restart applies, is refused with nothing changed.
   */
  reload(): Promise<ReloadView> {
    return this.#c.reconciler.serial(async () => {
      const { config, view } = await reloadConfig({
        current: this.#config,
        configPath: this.#configPath,
        collaborators: this.#c,
        desired: (next, stored, onSkip) => this.#desired(next, stored, onSkip),
      });
      await this.#ensureStorage();
      this.#config = config;
      return view;
    });
  }

  /** Closes the API, flushes and closes every port, stops the switch, closes the store. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const c = this.#c;
    const log = this.logger;
    // Captures end first: their streaming answers would keep the API from closing.
    c.ports.endCaptures('the daemon is stopping');
    await c.api.close().catch((err) => log.error({ err }, `closing the control API: ${describeError(err)}`));
    await c.http?.close().catch((err) => log.error({ err }, `closing the HTTP endpoint: ${describeError(err)}`));
    // The lease is revoked first: other hosts see this one go at once, not after its TTL.
    await c.cluster.stop().catch((err) => log.error({ err }, `leaving the fabric: ${describeError(err)}`));
    await c.overlay.stop().catch((err) => log.error({ err }, `stopping the overlay: ${describeError(err)}`));
    await c.ports.close();
    c.switch.stop();
    c.qos.stop();
    await c.reconciler.idle().catch(() => undefined);
    // After pending API changes: an export being added is then closed too.
    await c.storage.close();
    await c.store.close().catch((err) => log.error({ err }, describeError(err)));
    c.processStats.stop();
    if (this.#started) log.info('vmlink daemon stopped');
  }
}
