/**
 * Builds the desired state from the config and what a state store holds.
 * Config items come first and win: a stored item of the same name, one that
 * no longer validates, or one that does not fit (a check of the caller, e.g.
 * its network is gone) is left out, logged with the reason, and stays in the
 * store untouched.
 */
import type { StoredState } from '../control/store.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { DeclaredInConfigError } from './errors.js';
import { type DesiredItem, type DesiredState, emptyDesired, KINDS, type Kind, noun } from './state.js';

export interface DesiredStateOptions {
  /** The config's items per kind, validated, in config order. */
  config: Record<Kind, DesiredItem[]>;
  /** What the store holds (items as the API received them). */
  stored: StoredState;
  /** Validates a stored item of a kind and returns its spec; throws (a ConfigError) when it does not fit the schema. */
  parse: Record<Kind, (raw: Record<string, unknown>, what: string) => unknown>;
  /** A further check of a stored item against the desired state built so far (limits, references); throws to leave it out. */
  check?: (kind: Kind, item: DesiredItem, desired: DesiredState) => void;
  /** Named in conflicts. */
  configPath: string | undefined;
  /** Where left-out items are reported. */
  logger: Logger;
  /** Called for each stored item left out, instead of logging it. */
  onSkip?: ((kind: Kind, name: string, err: unknown) => void) | undefined;
}

/** The desired state of `config` plus `stored`. */
export function desiredState(opts: DesiredStateOptions): DesiredState {
  const d = emptyDesired();
  for (const kind of KINDS) for (const item of opts.config[kind]) d[kind].set(item.name, item);
  for (const kind of KINDS) {
    for (const raw of opts.stored[kind] ?? []) {
      try {
        const spec = opts.parse[kind](raw, `stored ${noun(kind)} "${raw.name}"`);
        const item: DesiredItem = { name: raw.name, source: 'api', raw, spec };
        if (d[kind].get(item.name)?.source === 'config')
          throw new DeclaredInConfigError(noun(kind), item.name, opts.configPath);
        opts.check?.(kind, item, d);
        d[kind].set(item.name, item);
      } catch (err) {
        if (opts.onSkip) {
          opts.onSkip(kind, String(raw.name), err);
          continue;
        }
        opts.logger.error(
          { [noun(kind)]: raw.name, code: (err as { code?: unknown }).code },
          `${noun(kind)} "${String(raw.name)}" from the state store was not restored: ${describeError(err)}`,
        );
      }
    }
  }
  return d;
}
