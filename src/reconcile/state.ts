/**
 * Desired state: what should run on this host, as one value. It is the
 * config (source "config") plus what the control API stored (source "api"),
 * per kind, by name. The reconciler (reconciler.ts) drives the running
 * networks, ports, exports and links toward it; a cluster store plugs in by
 * producing the same value from what it holds for this host.
 */

/** Where a desired item comes from: the config file, or the control API (kept in the state store). */
export type Source = 'config' | 'api';

/** The kinds of things reconciled, in the order they are created (and the reverse order they are removed). */
export const KINDS = ['networks', 'ports', 'exports', 'links'] as const;

export type Kind = (typeof KINDS)[number];

/** One thing that should run. */
export interface DesiredItem<T = unknown> {
  name: string;
  source: Source;
  /** The item as given: the API body, or the config entry in its text form. Two items are the same when these are. */
  raw: Record<string, unknown>;
  /** The validated spec built from `raw`. */
  spec: T;
}

/** Everything that should run, per kind, by name (insertion order is creation order). */
export type DesiredState = Record<Kind, Map<string, DesiredItem>>;

/** An empty desired state. */
export function emptyDesired(): DesiredState {
  return { networks: new Map(), ports: new Map(), exports: new Map(), links: new Map() };
}

/** True when `a` and `b` describe the same thing (same source, same content whatever the key order). */
export function sameItem(a: DesiredItem, b: DesiredItem): boolean {
  return a.source === b.source && canonical(a.raw) === canonical(b.raw);
}

/** JSON with object keys sorted, so equal content compares equal. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );
}

/** The singular noun of a kind, for messages. */
export function noun(kind: Kind): 'network' | 'port' | 'export' | 'link' {
  return kind.slice(0, -1) as 'network' | 'port' | 'export' | 'link';
}
