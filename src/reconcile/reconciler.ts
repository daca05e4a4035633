/**
 * The reconcile loop: one place where running networks, ports, exports and
 * links are created and removed, driven by desired state (state.ts).
 *
 * - {@link Reconciler.converge} compares everything running with a desired
 *   state and closes the gap: what runs but is not wanted (or is wanted
 *   differently) is removed, in reverse kind order, then what is wanted but
 *   not running is created, in kind order. A failure of one item is logged
 *   and reported; the others go on (start-up, config reload, restart).
 * - {@link Reconciler.apply} and {@link Reconciler.remove} change one item
 *   for the control API: strict (a failure throws and nothing changes) and
 *   with a `commit` step (the state store write) undone when it fails.
 *
 * Every change runs on one serial chain, so each sees the state the previous
 * one left. The reconciler knows no kind: an {@link Actuator} per kind
 * creates and removes the running things.
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { type DesiredItem, type DesiredState, emptyDesired, KINDS, type Kind, noun, sameItem } from './state.js';

/** Creates and removes the running things of one kind. */
export interface Actuator {
  /** What runs now that the reconciler manages (config and API items), by name. */
  running(): ReadonlyMap<string, DesiredItem>;
  /**
   * Creates and starts `item`. `strict` (API): a failure throws and leaves
   * nothing behind. Otherwise (start-up, reload) a transport or backend that
   * cannot open is kept, shown down with the reason; only an item that cannot
   * exist at all throws.
   */
  create(item: DesiredItem, strict: boolean): Promise<void>;
  /** Stops and removes the running item of that name. */
  destroy(name: string): Promise<void>;
  /** Creations of this kind may run at once (their opens overlap); default one after another. */
  readonly parallel?: boolean;
  /**
   * What must go before the running item `name` can be removed, and comes
   * back after it (the ports on a network): removed with it and created again.
   */
  dependents?(name: string): { kind: Kind; name: string }[];
}

/** What one {@link Reconciler.converge} did. */
export interface ReconcileReport {
  /** `kind/name` of each item created. */
  created: string[];
  /** `kind/name` of each item removed (a changed item is removed, then created). */
  removed: string[];
  /** Items that could not be created or removed, with the reason; they are retried by the next converge. */
  failed: { item: string; code: string | undefined; reason: string }[];
}

export interface ReconcilerOptions {
  actuators: Record<Kind, Actuator>;
  logger: Logger;
}

export class Reconciler {
  readonly #act: Record<Kind, Actuator>;
  readonly #log: Logger;
  #desired: DesiredState = emptyDesired();
  /** Tail of the chain that serializes changes. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(opts: ReconcilerOptions) {
    this.#act = opts.actuators;
    this.#log = opts.logger;
  }

  /** The desired state the running state is reconciled toward. */
  get desired(): DesiredState {
    return this.#desired;
  }

  /** Runs `fn` on the chain of changes: after every earlier change, before every later one. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#chain.then(fn);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  /** Resolves once every queued change has finished (for a graceful stop). */
  idle(): Promise<void> {
    return this.#chain.then(() => undefined);
  }

  /**
   * Makes `desired` the desired state and converges the `kinds` given
   * (default all) toward it; a dependent removed with what it depends on
   * is created again when its kind is among `kinds`. Call it on the chain
   * ({@link serial}) when other changes may run. Never throws for one item.
   */
  async converge(desired: DesiredState, kinds: readonly Kind[] = KINDS): Promise<ReconcileReport> {
    this.#desired = desired;
    const report: ReconcileReport = { created: [], removed: [], failed: [] };
    const fail = (kind: Kind, item: DesiredItem | undefined, name: string, err: unknown, verb: string) => {
      const reason = describeError(err);
      const code = (err as { code?: string }).code;
      report.failed.push({ item: `${kind}/${name}`, code, reason });
      const where = item?.source === 'api' ? 'from the state store was not restored' : `was not ${verb}`;
      this.#log.error({ [noun(kind)]: name, code }, `${noun(kind)} "${name}" ${where}: ${reason}`);
    };
    // What runs but is not wanted, or is wanted differently, goes; and with it what depends on it.
    const doomed = Object.fromEntries(KINDS.map((k) => [k, new Set<string>()])) as Record<Kind, Set<string>>;
    const stack: { kind: Kind; name: string }[] = [];
    for (const kind of kinds)
      for (const [name, item] of this.#act[kind].running()) {
        const w = desired[kind].get(name);
        if (!w || !sameItem(w, item)) stack.push({ kind, name });
      }
    for (let x = stack.pop(); x; x = stack.pop()) {
      if (doomed[x.kind].has(x.name)) continue;
      doomed[x.kind].add(x.name);
      stack.push(...(this.#act[x.kind].dependents?.(x.name) ?? []));
    }
    for (const kind of [...KINDS].reverse()) {
      for (const name of doomed[kind]) {
        try {
          await this.#act[kind].destroy(name);
          report.removed.push(`${kind}/${name}`);
        } catch (err) {
          fail(kind, undefined, name, err, 'removed');
        }
      }
    }
    for (const kind of kinds) {
      const act = this.#act[kind];
      const todo = [...desired[kind].values()].filter((i) => !act.running().has(i.name));
      const create = async (item: DesiredItem) => {
        try {
          await act.create(item, false);
          report.created.push(`${kind}/${item.name}`);
        } catch (err) {
          fail(kind, item, item.name, err, 'created');
        }
      };
      if (act.parallel) await Promise.all(todo.map(create));
      else for (const item of todo) await create(item);
    }
    return report;
  }

  /**
   * The API adds `item`: created strictly, then `commit` (the store write);
   * when that fails the item is removed again and the error thrown. On
   * success it is part of the desired state.
   */
  async apply(kind: Kind, item: DesiredItem, commit: () => Promise<void>): Promise<void> {
    await this.#act[kind].create(item, true);
    try {
      await commit();
    } catch (err) {
      await this.#act[kind].destroy(item.name).catch(() => undefined);
      throw err;
    }
    this.#desired[kind].set(item.name, item);
  }

  /** The API deletes `name`: `commit` first (the store: when it fails nothing changed), then the running item goes. */
  async remove(kind: Kind, name: string, commit: () => Promise<void>): Promise<void> {
    await commit();
    this.#desired[kind].delete(name);
    await this.#act[kind].destroy(name);
  }

  /** Records that the running item `item.name` now matches `item` (changed in place, e.g. its QoS). */
  record(kind: Kind, item: DesiredItem): void {
    this.#desired[kind].set(item.name, item);
  }
}
