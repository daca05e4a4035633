/**
 * The `socket` port kind: QEMU's legacy `-netdev socket,listen=|connect=`
 * over TCP. Same framing as `-netdev stream` (QEMU net/socket.c: 4-byte
 * big-endian length before each frame), so it is a {@link StreamPort} with a
 * TCP address. QEMU 7.2 accepts IPv4 only here (parse_host_port fills a
 * sockaddr_in); use `stream` for IPv6 or unix sockets.
 */
import type { Port, PortContext } from '../port.js';
import { type StreamSpec, streamPort } from './stream.js';

/** Factory for `kind: socket` ports. */
export function socketPort(spec: StreamSpec, ctx: PortContext): Port {
  return streamPort(spec, ctx);
}
