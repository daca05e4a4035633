/**
 * Config reload (SIGHUP, `vmlink reload`, `POST /v1/reload`): the config file
 * is read and validated again, and the running networks, ports, exports and
 * links are reconciled toward it plus what the API stored, exactly as at
 * start-up. Refused with nothing changed when the file does not load or
 * validate (ERR_CONFIG_INVALID), when its QoS does not admit, when it changes
 * a section only a restart applies, or when an item added through the API
 * would no longer fit (its network left the config) (ERR_RELOAD_REFUSED).
 */
import type { ReloadView } from '../api/backend.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { StoredState } from '../control/store.js';
import { describeError } from '../errors.js';
import { ReloadRefusedError, ReloadUnavailableError } from '../reconcile/errors.js';
import { type DesiredState, type Kind, noun } from '../reconcile/state.js';
import type { Collaborators } from './collaborators.js';

/** What a reload may change; every other top-level section applies only at a restart. */
const RELOADABLE = new Set(['networks', 'ports', 'exports', 'links']);

export interface ReloadOptions {
  current: Config;
  configPath: string | undefined;
  collaborators: Collaborators;
  /** The desired state of a config plus the store; `onSkip` gets each stored item left out. */
  desired: (
    config: Config,
    stored: StoredState,
    onSkip: (kind: Kind, name: string, err: unknown) => void,
  ) => DesiredState;
}

/** Loads, checks and applies the config file; resolves with the new config and what changed. */
export async function reloadConfig(opts: ReloadOptions): Promise<{ config: Config; view: ReloadView }> {
  const path = opts.configPath;
  if (path === undefined) throw new ReloadUnavailableError();
  const c = opts.collaborators;
  const log = c.logger;
  try {
    const next = await loadConfig(path);
    const fixed = staticChanges(opts.current, next);
    if (fixed.length)
      throw new ReloadRefusedError(
        path,
        `${fixed.join(', ')} changed, and only a restart of the daemon applies ${fixed.length > 1 ? 'those' : 'that'} ` +
          '(a reload applies networks, ports, exports and links); put the old values back to reload, or restart',
      );
    const stored = await c.store.load();
    const skipped: string[] = [];
    const desired = opts.desired(next, stored, (kind, name, err) => {
      const what = `${noun(kind)} "${name}"`;
      if ((err as { code?: unknown }).code === 'ERR_DECLARED_IN_CONFIG') {
        log.warn(
          { [noun(kind)]: name },
          `${what} added through the API is now declared in the config: the config's replaces it`,
        );
      } else if (c.reconciler.desired[kind].get(name)?.source === 'api') {
        skipped.push(`${what} (added through the API) would no longer fit: ${describeError(err)}`);
      } else {
        log.error({ [noun(kind)]: name }, `${what} from the state store was not restored: ${describeError(err)}`);
      }
    });
    if (skipped.length)
      throw new ReloadRefusedError(
        path,
        `${skipped.join('; ')}; delete it through the API first, or keep what it needs in the config`,
      );
    c.qos.checkConfig(
      next.ports,
      path,
      next.networks.map((n) => n.name),
      next.links,
      next.overlay?.peer_qos,
    );
    const report = await c.reconciler.converge(desired);
    log.info(
      { config: path, created: report.created, removed: report.removed, failed: report.failed.length },
      `config reloaded: ${report.created.length} created, ${report.removed.length} removed, ${report.failed.length} failed`,
    );
    return { config: next, view: { config: path, ...report } };
  } catch (err) {
    log.error({ config: path, code: (err as { code?: unknown }).code }, `reload refused: ${describeError(err)}`);
    throw err;
  }
}

/** Dotted paths (one level deep) of the sections outside {@link RELOADABLE} that differ. */
function staticChanges(a: Config, b: Config): string[] {
  const out: string[] = [];
  const A = a as unknown as Record<string, unknown>;
  const B = b as unknown as Record<string, unknown>;
  for (const key of new Set([...Object.keys(A), ...Object.keys(B)])) {
    if (RELOADABLE.has(key) || same(A[key], B[key])) continue;
    const x = A[key];
    const y = B[key];
    if (isObject(x) && isObject(y)) {
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) if (!same(x[k], y[k])) out.push(`${key}.${k}`);
    } else out.push(key);
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function same(x: unknown, y: unknown): boolean {
  return JSON.stringify(x) === JSON.stringify(y);
}
