/**
 * The daemon's side of desired state: the config's items in their text form,
 * how a stored item of each kind is validated, and the checks a stored item
 * must pass against the rest (network limit, networks its port uses).
 */
import { linkSchema } from '../config/overlay-schema.js';
import { parseWith } from '../config/parse.js';
import {
  type Config,
  exportSchema,
  networkSchema,
  type PortConfig,
  portNetworkRefs,
  portSchema,
} from '../config/schema.js';
import type { StoredState } from '../control/store.js';
import type { Logger } from '../log.js';
import { NetworkLimitError, NetworkNotFoundError } from '../net/errors.js';
import { desiredState } from '../reconcile/desired.js';
import type { DesiredItem, DesiredState, Kind } from '../reconcile/state.js';
import { formatAddress } from '../util/address.js';
import { rawBackend } from './export-specs.js';
import { rawOf } from './specs.js';

type Raw = Record<string, unknown>;

const item = (name: string, raw: Raw, spec: unknown): DesiredItem => ({ name, source: 'config', raw, spec });

/** The config's networks, ports, exports and links as desired items (addresses in their text form). */
function configItems(c: Config): Record<Kind, DesiredItem[]> {
  return {
    networks: c.networks.map((n) => item(n.name, { ...n }, n)),
    ports: c.ports.map((p) => item(p.name, rawOf(p), p)),
    exports: c.exports.map((e) => item(e.name, { ...e, backend: rawBackend(e.backend) }, e)),
    links: c.links.map((l) => item(l.name, { ...l, connect: formatAddress(l.connect) }, l)),
  };
}

const parse = {
  networks: (raw: Raw, what: string) => parseWith(networkSchema, raw, what),
  ports: (raw: Raw, what: string) => parseWith(portSchema, raw, what),
  exports: (raw: Raw, what: string) => parseWith(exportSchema, raw, what),
  links: (raw: Raw, what: string) => parseWith(linkSchema, raw, what),
};

export interface DaemonDesiredOptions {
  config: Config;
  configPath: string | undefined;
  stored: StoredState;
  logger: Logger;
  /** A stored item left out; default: logged as an error. */
  onSkip?: ((kind: Kind, name: string, err: unknown) => void) | undefined;
}

/** The desired state of this daemon: `config` plus `stored`. */
export function daemonDesired(opts: DaemonDesiredOptions): DesiredState {
  const cap = opts.config.limits.networks;
  return desiredState({
    config: configItems(opts.config),
    stored: opts.stored,
    parse,
    configPath: opts.configPath,
    logger: opts.logger,
    onSkip: opts.onSkip,
    check: (kind, it, d) => {
      if (kind === 'networks' && d.networks.size >= cap) throw new NetworkLimitError(d.networks.size, cap);
      if (kind !== 'ports') return;
      for (const [, n] of portNetworkRefs(it.spec as PortConfig))
        if (!d.networks.has(n)) throw new NetworkNotFoundError(n, [...d.networks.keys()]);
    },
  });
}
