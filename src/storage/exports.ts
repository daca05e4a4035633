/**
 * The exports a server offers: name -> backend, description, read-only flag
 * and QoS weight. The daemon fills it from config; the NBD server only reads.
 */
import type { BlockBackend } from './backend.js';
import { ExportError } from './errors.js';
import { IoStats } from './io-stats.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface ExportSpec {
  /** Export name as clients ask for it (1-64 characters: letters, digits, '_', '.', '-'). */
  name: string;
  /** Where the bytes live. */
  backend: BlockBackend;
  /** Shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION; default empty. */
  description?: string;
  /** Serve read-only even if the backend is writable; default: the backend's own flag. */
  readOnly?: boolean;
  /** DWRR weight (share of backend service relative to other exports); default 1. */
  weight?: number;
  /**
   * Access policy: called at the handshake with the client's IP address
   * (undefined for unix-socket clients); false refuses the export
   * (NBD_REP_ERR_POLICY). Default: every client is allowed.
   */
  allowClient?: (address: string | undefined) => boolean;
  /**
   * Serve only over TLS (SELECTIVETLS): without STARTTLS the export is
   * refused (`NBD_REP_ERR_TLS_REQD`) and left out of `NBD_OPT_LIST`; default false.
   */
  tlsOnly?: boolean;
}

/** Live counters of one export, kept by the connections that use it. */
export interface ExportStats {
  /** Clients in the transmission phase on this export now. */
  clients: number;
  /** Requests received (DISC excluded). */
  requests: number;
  /** Requests answered with an error. */
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** Per-operation requests, errors and latency; requests in flight. */
  readonly io: IoStats;
}

export interface NbdExport {
  readonly name: string;
  readonly backend: BlockBackend;
  readonly description: string;
  readonly readOnly: boolean;
  readonly weight: number;
  /** See {@link ExportSpec.allowClient}; undefined: everyone. */
  readonly allowClient: ((address: string | undefined) => boolean) | undefined;
  /** See {@link ExportSpec.tlsOnly}. */
  readonly tlsOnly: boolean;
  /** Live counters (mutated by connections). */
  readonly stats: ExportStats;
}

/**
 * An export served (`subject: "export"`, `open`) or removed, or a client
 * that entered transmission on it or left (`subject: "client"`); `clients`:
 * connected now.
 */
export interface ExportChange {
  export: string;
  subject: 'export' | 'client';
  open: boolean;
  clients: number;
  reason?: string | undefined;
}

export interface ExportRegistryOptions {
  /** Export served for the empty name (the NBD "default export"); default: the only export, if there is one. */
  defaultExport?: string;
}

export class ExportRegistry {
  #exports = new Map<string, NbdExport>();
  #default: string | undefined;
  #onRemove: ((exp: NbdExport) => void)[] = [];
  readonly #watchers = new Set<(change: ExportChange) => void>();

  constructor(opts: ExportRegistryOptions = {}) {
    this.#default = opts.defaultExport;
  }

  /** Adds an export; throws ExportError (ERR_EXPORT_EXISTS, ERR_EXPORT_INVALID) on a bad spec. */
  add(spec: ExportSpec): NbdExport {
    if (!NAME_RE.test(spec.name))
      throw new ExportError(
        'ERR_EXPORT_INVALID',
        `export name "${spec.name}" is invalid: use 1-64 letters, digits, '_', '.', '-' (not first)`,
        400,
      );
    if (this.#exports.has(spec.name))
      throw new ExportError('ERR_EXPORT_EXISTS', `export "${spec.name}" already exists; remove it first`, 409);
    const weight = spec.weight ?? 1;
    if (!(weight > 0) || !Number.isFinite(weight))
      throw new ExportError(
        'ERR_EXPORT_INVALID',
        `export "${spec.name}": weight ${weight} must be a positive number`,
        400,
      );
    const exp: NbdExport = {
      name: spec.name,
      backend: spec.backend,
      description: spec.description ?? '',
      readOnly: (spec.readOnly ?? false) || spec.backend.readOnly,
      weight,
      allowClient: spec.allowClient,
      tlsOnly: spec.tlsOnly ?? false,
      stats: { clients: 0, requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0, io: new IoStats() },
    };
    this.#exports.set(spec.name, exp);
    this.#tell({ export: exp.name, subject: 'export', open: true, clients: 0, reason: 'served' });
    return exp;
  }

  /** Removes an export (open connections keep using its backend until they close). */
  remove(name: string): NbdExport {
    const exp = this.#exports.get(name);
    if (!exp)
      throw new ExportError('ERR_EXPORT_NOT_FOUND', `export "${name}" does not exist (known: ${this.names()})`, 404);
    this.#exports.delete(name);
    for (const fn of this.#onRemove) fn(exp);
    this.#tell({
      export: name,
      subject: 'export',
      open: false,
      clients: exp.stats.clients,
      reason: 'the export was removed',
    });
    return exp;
  }

  /** A client entered transmission on `exp`: counted and told; returns what to call when it leaves (once). */
  clientJoined(exp: NbdExport): () => void {
    exp.stats.clients++;
    this.#tell({ export: exp.name, subject: 'client', open: true, clients: exp.stats.clients });
    let left = false;
    return () => {
      if (left) return;
      left = true;
      exp.stats.clients--;
      this.#tell({ export: exp.name, subject: 'client', open: false, clients: exp.stats.clients });
    };
  }

  /** Calls `fn` as exports are served and removed and clients come and go; returns the stop function. */
  onChange(fn: (change: ExportChange) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  #tell(change: ExportChange): void {
    for (const fn of this.#watchers) {
      try {
        fn(change);
      } catch {
        // A watcher's failure is its own (DaemonEvents logs its own errors); the export goes on.
      }
    }
  }

  /** Calls `fn` with each export removed from now on (the I/O scheduler forgets its queue). */
  onRemove(fn: (exp: NbdExport) => void): void {
    this.#onRemove.push(fn);
  }

  get(name: string): NbdExport | undefined {
    return this.#exports.get(name);
  }

  /** The export a client means by `name`; the empty name is the default export. */
  resolve(name: string): NbdExport | undefined {
    if (name !== '') return this.#exports.get(name);
    if (this.#default !== undefined) return this.#exports.get(this.#default);
    return this.#exports.size === 1 ? this.#exports.values().next().value : undefined;
  }

  list(): NbdExport[] {
    return [...this.#exports.values()];
  }

  /** Closes every export's backend (persisting their data). */
  async close(): Promise<void> {
    await Promise.allSettled(this.list().map((e) => e.backend.close()));
  }

  private names(): string {
    return this.#exports.size ? [...this.#exports.keys()].join(', ') : 'none';
  }
}
