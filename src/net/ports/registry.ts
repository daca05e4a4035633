/**
 * Port kinds: kind name -> factory. The daemon builds every port through
 * {@link createPort}; adding a kind means adding its module here and its
 * schema in config/schema.ts, nothing else.
 */
import type { PortConfig } from '../../config/schema.js';
import { PortKindError } from '../errors.js';
import type { Port, PortContext, PortFactory } from '../port.js';
import { dgramPort } from './dgram.js';
import { hostPort } from './host.js';
import { socketPort } from './socket.js';
import { streamPort } from './stream.js';
import { tapPort } from './tap.js';
import { vdePort } from './vde.js';
import { vhostUserPort } from './vhost-user.js';

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

/** Kinds this build supports. */
export function portKinds(): string[] {
  return Object.keys(factories);
}
