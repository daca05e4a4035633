/**
 * The `dgram` port kind: QEMU's `-netdev dgram`, one Ethernet frame per
 * datagram, over UDP (udp-dgram.ts) or unix datagram sockets
 * (unix-dgram.ts); both batch with recvmmsg/sendmmsg through the addon.
 */
import type { PortConfig } from '../../config/schema.js';
import type { Port, PortContext } from '../port.js';
import { UdpDgramPort, type UdpDgramSpec } from './udp-dgram.js';
import { UnixDgramPort, type UnixDgramSpec } from './unix-dgram.js';

type DgramSpec = Extract<PortConfig, { kind: 'dgram' }>;

/** Factory for `kind: dgram` ports: UDP, or unix datagram sockets when the addresses are `unix:`. */
export function dgramPort(spec: DgramSpec, ctx: PortContext): Port {
  if (spec.local.type === 'unix' || spec.remote.type === 'unix') return new UnixDgramPort(spec as UnixDgramSpec, ctx);
  return new UdpDgramPort(spec as UdpDgramSpec, ctx);
}
