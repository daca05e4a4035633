/**
 * The `dgram` port kind: QEMU's `-netdev dgram`, one Ethernet frame per
 * datagram, over UDP (udp-dgram.ts) or unix datagram sockets
 * (unix-dgram.ts); both batch with recvmmsg/sendmmsg through the addon.
 */
import type { Port, PortContext } from '../port.js';
import { UdpDgramPort, type UdpDgramSpec } from './udp-dgram.js';
import { UnixDgramPort, type UnixDgramSpec } from './unix-dgram.js';

/** A dgram port's spec: UDP or unix datagram addresses (the daemon maps the validated config onto it). */
interface DgramSpec {
  name: string;
  /** Where vmlink binds and receives; `unix` or `udp`, the same type as `remote` (the schema checks it). */
  local: UdpDgramSpec['local'] | UnixDgramSpec['local'];
  /** Where vmlink sends. */
  remote: UdpDgramSpec['remote'] | UnixDgramSpec['remote'];
  /** Mode, owner and group of a bound unix socket. */
  socket?: UnixDgramSpec['socket'];
}

/** Factory for `kind: dgram` ports: UDP, or unix datagram sockets when the addresses are `unix:`. */
export function dgramPort(spec: DgramSpec, ctx: PortContext): Port {
  if (spec.local.type === 'unix' || spec.remote.type === 'unix') return new UnixDgramPort(spec as UnixDgramSpec, ctx);
  return new UdpDgramPort(spec as UdpDgramSpec, ctx);
}
