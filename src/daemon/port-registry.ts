/**
 * Port kinds: kind name -> factory. The daemon builds every port through
 * {@link createPort}; adding a kind means adding its module here and its
 * schema in config/schema.ts, nothing else.
 */
import type { PortConfig } from '../config/schema.js';
import { PortKindError } from '../net/errors.js';
import type { Port, PortContext, PortFactory } from '../net/port.js';
import { dgramPort } from '../net/ports/dgram.js';
import { hostPort } from '../net/ports/host.js';
import { socketPort } from '../net/ports/socket.js';
import { streamPort } from '../net/ports/stream.js';
import { tapPort } from '../net/ports/tap.js';
import { vdePort } from '../net/ports/vde.js';
import { vhostUserPort } from '../net/vhost/vhost-user-port.js';

type FactoryMap = { [K in PortConfig['kind']]?: PortFactory<Extract<PortConfig, { kind: K }>> };

/** Registered factories. Filled in by the port modules' entries below. */
const factories: FactoryMap = {
  stream: streamPort,
  socket: socketPort,
  dgram: dgramPort,
  tap: tapPort,
  vde: vdePort,
  host: hostPort,
  'vhost-user': vhostUserPort,
};

/** Builds (but does not open) a port for a validated spec. */
export function createPort(spec: PortConfig, ctx: PortContext): Port {
  const make = factories[spec.kind] as PortFactory<PortConfig> | undefined;
  if (!make) throw new PortKindError(spec.kind, Object.keys(factories));
  return make(spec, ctx);
}
