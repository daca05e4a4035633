/**
 * The daemon's storage service: the NBD server and its exports. The
 * reconciler adds and removes exports (config ones, source "config", and
 * those the API stored, source "api"); this service opens their backends and
 * keeps the one {@link ExportRegistry} the server reads.
 *
 * The server runs when `storage:` is given or as soon as there is an export.
 * An export whose backend cannot be opened at start or on a reload (image
 * missing, remote unreachable) is shown `down` with the reason and retried;
 * the daemon keeps running. Through the API, such an export is refused
 * (422 ERR_EXPORT_BACKEND) and nothing is stored.
 */
import type { StorageStatusView } from '../api/client.js';
import type { ExportConfig, StorageConfig } from '../config/schema.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BlockBackend } from '../storage/backend.js';
import { type ExportChange, ExportRegistry } from '../storage/exports.js';
import { createNbdServer, type NbdServer } from '../storage/nbd/server.js';
import { loadNbdTls } from '../storage/nbd/tls.js';
import { type Address, formatAddress } from '../util/address.js';
import type { AdmissionStatus } from '../util/admission.js';
import { mkdirp } from '../util/fs.js';
import { resolveSocketAccess } from '../util/unix-socket.js';
import { ExportBackendError, ExportInUseError, ExportNotFoundError, StorageUnavailableError } from './errors.js';
import { checkExport, type ExportClaims, realOrResolved, settleClaims } from './export-guard.js';
import { ExportRetry } from './export-retry.js';
import { backendSpec, clientPolicy, type ExportEntry, type Source } from './export-specs.js';
import { openWithin } from './open-within.js';
import { defaultMemoryLimit, defaultRoot, plainTcp, warnOpenExport, warnPlainTcp } from './storage-exposure.js';

export interface StorageServiceOptions {
  logger: Logger;
  /** `storage:` of the config; undefined: defaults, and the server starts with the first export. */
  config: StorageConfig | undefined;
  /** Where the server listens when `storage.listen` is not given (config/storage-schema.ts `defaultNbdSocket`). */
  defaultSocket: string;
  /** `host.state_dir`: the default root for export files is `<stateDir>/exports`. */
  stateDir: string;
  /**
   * A backend that has not opened within this many ms (a remote that accepts
   * but never answers) counts as failed, so neither the daemon's start nor the
   * API's chain of changes waits for it; default `backend_open_timeout_ms` of the config, else 10000.
   */
  openTimeoutMs?: number;
  /** Retries of a backend that did not open (config and stored exports): first and largest delay in ms; default 1000 and 60000. */
  retryMinMs?: number;
  retryMaxMs?: number;
}

export class StorageService {
  readonly #log: Logger;
  readonly #config: StorageConfig | undefined;
  readonly #defaultSocket: string;
  readonly #openTimeoutMs: number;
  readonly #registry = new ExportRegistry();
  readonly #entries = new Map<string, ExportEntry>();
  /** What each admitted export uses (files, memory, reads of our own exports), by name; see export-guard.ts. */
  readonly #claims = new Map<string, ExportClaims>();
  /** Directories export files must lie in. */
  readonly #roots: readonly string[];
  /** Most bytes all memory exports may declare together. */
  readonly #memoryLimit: number;
  #server: NbdServer | undefined;
  /** Why the server is not running, when it failed to start. */
  #serverError: Error | undefined;
  #closing: Promise<void> | undefined;
  readonly #retry: ExportRetry;

  constructor(opts: StorageServiceOptions) {
    this.#retry = new ExportRetry({
      attempt: (name, n) => this.#retryOpen(name, n),
      minMs: opts.retryMinMs,
      maxMs: opts.retryMaxMs,
    });
    this.#log = opts.logger;
    this.#config = opts.config;
    this.#defaultSocket = opts.defaultSocket;
    this.#openTimeoutMs = opts.openTimeoutMs ?? opts.config?.backend_open_timeout_ms ?? 10_000;
    this.#roots = opts.config?.roots ?? [defaultRoot(opts.stateDir)];
    this.#memoryLimit = opts.config?.memory_limit ?? defaultMemoryLimit();
  }

  /** Directories export files must lie in (`storage.roots`, default `<state_dir>/exports`). */
  get roots(): readonly string[] {
    return this.#roots;
  }

  /** Most bytes all memory exports may declare together (`storage.memory_limit`, default a quarter of RAM). */
  get memoryLimit(): number {
    return this.#memoryLimit;
  }

  /** Daemon start: makes the default export directory (0700) so images can be put there; configured roots are the operator's. */
  async prepare(): Promise<void> {
    if (this.#config?.roots !== undefined) return;
    await mkdirp(this.#roots[0] as string, 0o700).catch((err) =>
      this.#log.warn({ dir: this.#roots[0] }, `cannot create the export directory: ${describeError(err)}`),
    );
  }

  /** True when `storage:` is configured: the server runs even without exports. */
  get configured(): boolean {
    return this.#config !== undefined;
  }

  get(name: string): ExportEntry | undefined {
    return this.#entries.get(name);
  }

  /** The entry, or ERR_EXPORT_NOT_FOUND. */
  entry(name: string): ExportEntry {
    const e = this.#entries.get(name);
    if (!e) throw new ExportNotFoundError(name, [...this.#entries.keys()]);
    return e;
  }

  entries(): ExportEntry[] {
    return [...this.#entries.values()];
  }

  /**
   * Opens the backend and serves the export. With `tolerant` (config and
   * stored exports) a backend that cannot open leaves the export `down`;
   * otherwise ERR_EXPORT_BACKEND is thrown and nothing changes.
   */
  async add(spec: ExportConfig, raw: Record<string, unknown>, source: Source, tolerant: boolean): Promise<ExportEntry> {
    const entry: ExportEntry = { name: spec.name, source, spec, raw, reason: 'not opened yet', exp: undefined };
    let claims: ExportClaims;
    try {
      claims = await checkExport(spec, {
        roots: this.#roots,
        memoryLimit: this.#memoryLimit,
        memoryLimitIsDefault: this.#config?.memory_limit === undefined,
        admitted: this.#claims,
        ownAddresses: this.#ownAddresses(),
      });
    } catch (err) {
      if (!tolerant) throw err;
      // Refused for good (not retried): the config or the stored export must change.
      entry.reason = `refused: ${describeError(err)}`;
      this.#entries.set(spec.name, entry);
      this.#log.error({ export: spec.name, code: (err as { code?: unknown }).code }, describeError(err));
      return entry;
    }
    let backend: BlockBackend;
    try {
      backend = await openWithin(
        backendSpec(spec.backend, spec.read_only, await this.#realRoots()),
        this.#openTimeoutMs,
      );
    } catch (err) {
      if (!tolerant) throw new ExportBackendError(spec.name, describeError(err), { cause: err });
      entry.reason = `cannot open its backend: ${describeError(err)}; retrying with backoff`;
      this.#entries.set(spec.name, entry);
      this.#claims.set(spec.name, claims);
      this.#log.error(
        { export: spec.name, code: (err as { code?: unknown }).code },
        `export "${spec.name}" ${entry.reason}`,
      );
      if (!this.#closing) this.#retry.schedule(spec.name);
      return entry;
    }
    await settleClaims(claims);
    this.#claims.set(spec.name, claims);
    this.#serve(entry, backend);
    this.#warnIfOpen(spec);
    return entry;
  }

  /** The roots with symlinks resolved, as the file backend checks an open image against them. */
  #realRoots(): Promise<string[]> {
    return Promise.all(this.#roots.map(realOrResolved));
  }

  /** Where our NBD server listens (bound addresses once running), to spot remote backends that point back at it. */
  #ownAddresses(): Address[] {
    const running = this.#server?.addresses();
    if (running) return running;
    return this.#config?.listen ?? [{ type: 'unix', path: this.#defaultSocket }];
  }

  /** Plain TCP listeners (no `storage.tls`): the addresses anyone who reaches them may use. */
  #plainTcp(): string[] {
    return plainTcp(this.#server?.addresses() ?? this.#config?.listen ?? [], this.#config?.tls !== undefined);
  }

  /** An export without allowed_clients on a plain TCP listener: say so, loudly. */
  #warnIfOpen(spec: ExportConfig): void {
    if (this.#server && spec.allowed_clients === undefined) warnOpenExport(this.#log, spec.name, this.#plainTcp());
  }

  /**
   * One retry of a down export's backend (ExportRetry): true when it is
   * served now or no longer wanted (deleted, daemon stopping).
   */
  async #retryOpen(name: string, attempt: number): Promise<boolean> {
    const entry = this.#entries.get(name);
    if (!entry || entry.exp || this.#closing) return true;
    let backend: BlockBackend;
    try {
      backend = await openWithin(
        backendSpec(entry.spec.backend, entry.spec.read_only, await this.#realRoots()),
        this.#openTimeoutMs,
      );
    } catch (err) {
      entry.reason = `cannot open its backend: ${describeError(err)}; retrying with backoff (${attempt} tries so far)`;
      this.#log.warn({ export: name, code: (err as { code?: unknown }).code }, `export "${name}" ${entry.reason}`);
      return false;
    }
    if (this.#entries.get(name) !== entry || this.#closing) {
      await backend.close().catch(() => undefined);
      return true;
    }
    const claims = this.#claims.get(name);
    if (claims) await settleClaims(claims);
    this.#serve(entry, backend);
    return true;
  }

  /** Puts an export whose backend is open into the registry the NBD server reads. */
  #serve(entry: ExportEntry, backend: BlockBackend): void {
    const spec = entry.spec;
    entry.exp = this.#registry.add({
      name: spec.name,
      backend,
      description: spec.description,
      readOnly: spec.read_only,
      weight: spec.weight,
      allowClient: clientPolicy(spec.allowed_clients),
      tlsOnly: spec.tls_only,
    });
    entry.reason = 'served';
    this.#entries.set(spec.name, entry);
    this.#log.info(
      { export: spec.name, backend: backend.kind, size: backend.size, read_only: entry.exp.readOnly },
      `export "${spec.name}" ready (${backend.kind}, ${backend.size} bytes${entry.exp.readOnly ? ', read-only' : ''})`,
    );
  }

  /** Calls `fn` as exports are served and removed and NBD clients come and go (ExportRegistry.onChange); returns the stop function. */
  onExportChange(fn: (change: ExportChange) => void): () => void {
    return this.#registry.onChange(fn);
  }

  /** Stops serving an export and closes its backend (flushing it). Refused while clients are connected. */
  async remove(name: string, force = false): Promise<void> {
    const e = this.entry(name);
    const clients = e.exp?.stats.clients ?? 0;
    if (clients > 0 && !force) throw new ExportInUseError(name, clients);
    this.#entries.delete(name);
    this.#claims.delete(name);
    this.#retry.cancel(name);
    if (!e.exp) return;
    this.#registry.remove(name);
    await e.exp.backend
      .close()
      .catch((err) => this.#log.warn({ export: name, err }, `closing export backend: ${describeError(err)}`));
  }

  /**
   * Starts the NBD server if it is not running. `tolerant` (daemon start):
   * a listen failure is logged and kept for status; otherwise it is thrown
   * as ERR_STORAGE_UNAVAILABLE.
   */
  async ensureServer(tolerant: boolean): Promise<void> {
    if (this.#server || this.#closing) return;
    if (this.#serverError && !tolerant) throw new StorageUnavailableError(describeError(this.#serverError));
    const c = this.#config;
    let server: NbdServer;
    try {
      const tls = c?.tls ? await loadNbdTls({ ...c.tls, verifyClients: c.tls.verify_clients }) : undefined;
      const socketAccess = await resolveSocketAccess(c?.socket, 'storage.socket');
      server = createNbdServer({
        socketAccess,
        logger: this.#log.child({ component: 'nbd' }),
        exports: this.#registry,
        listen: c?.listen ?? [{ type: 'unix', path: this.#defaultSocket }],
        maxInFlightPerClient: c?.max_in_flight_per_client,
        concurrency: c?.concurrency,
        maxConnections: c?.max_connections,
        maxConnectionsPerSource: c?.max_connections_per_source,
        maxUnixConnections: c?.max_unix_connections,
        handshakeTimeoutMs: c?.handshake_timeout_ms,
        allowedClients: clientPolicy(c?.allowed_clients),
        tls,
      });
      await server.open();
    } catch (err) {
      this.#serverError = err as Error;
      if (!tolerant) throw new StorageUnavailableError(describeError(err), { cause: err });
      this.#log.error({ code: (err as { code?: unknown }).code }, `storage is down: ${describeError(err)}`);
      return;
    }
    this.#server = server;
    this.#warnPlainTcp();
  }

  /** A TCP listener with neither TLS nor allowed_clients on every export: one loud warning at start. */
  #warnPlainTcp(): void {
    const admitted = this.entries().filter((e) => this.#claims.has(e.name));
    const open = admitted.filter((e) => e.spec.allowed_clients === undefined).map((e) => e.name);
    warnPlainTcp(this.#log, this.#plainTcp(), open, admitted.length);
  }

  /** Bound listen addresses in text form (TCP port 0 resolved); empty while the server is not running. */
  listen(): string[] {
    return this.#server ? this.#server.addresses().map(formatAddress) : [];
  }

  /**
   * What QEMU needs to reach export `tlsOnly` over TLS (`storage.tls`
   * client_dir and hostname), or undefined when it may connect in plain text.
   */
  tlsClient(tlsOnly: boolean): { dir: string; hostname: string } | undefined {
    const t = this.#config?.tls;
    if (!t || (t.mode === 'optional' && !tlsOnly)) return undefined;
    return { dir: t.client_dir, hostname: t.hostname };
  }

  /** The first unix socket the server listens on, if any. */
  unixSocket(): string | undefined {
    for (const a of this.#server?.addresses() ?? []) if (a.type === 'unix') return a.path;
    return undefined;
  }

  /** The first TCP address the server listens on, as a client dials it (0.0.0.0 means this host). */
  tcpAddress(): { host: string; port: number } | undefined {
    for (const a of this.#server?.addresses() ?? []) {
      if (a.type !== 'tcp') continue;
      const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '::1' : a.host;
      return { host, port: a.port };
    }
    return undefined;
  }

  /** The NBD server's admission counters (`GET /v1/status` `admission.nbd`); undefined while it is not running. */
  admission(): AdmissionStatus | undefined {
    return this.#server?.admission();
  }

  /** `GET /v1/status`'s storage part. */
  status(): StorageStatusView {
    return {
      running: this.#server !== undefined,
      listen: this.listen(),
      exports: this.#entries.size,
      clients: this.#server?.connections ?? 0,
      ...(this.#serverError && !this.#server ? { reason: describeError(this.#serverError) } : {}),
    };
  }

  /** Stops the server gracefully (in-flight requests answered, backends flushed), then closes every backend. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#retry.close();
      await this.#server
        ?.close()
        .catch((err) => this.#log.error({ err }, `closing the NBD server: ${describeError(err)}`));
      await this.#registry.close();
    })();
    return this.#closing;
  }
}
