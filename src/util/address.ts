/**
 * Transport addresses as written in config and on the CLI:
 * `unix:/run/vmlink/vm1.sock`, `tcp:127.0.0.1:5555`, `tcp:[::1]:5555`,
 * `udp:127.0.0.1:7001`. One syntax for every port kind.
 */

export type Address =
  | { type: 'unix'; path: string }
  | { type: 'tcp'; host: string; port: number }
  | { type: 'udp'; host: string; port: number };

/** Parses an address; returns an error string (what is wrong and the expected form) instead of throwing. */
export function parseAddress(text: string, allowed: readonly Address['type'][]): Address | string {
  const i = text.indexOf(':');
  const scheme = i < 0 ? '' : text.slice(0, i);
  const rest = i < 0 ? '' : text.slice(i + 1);
  const forms = allowed.map((t) => (t === 'unix' ? 'unix:/path/to.sock' : `${t}:HOST:PORT`)).join(' or ');
  if (!(allowed as readonly string[]).includes(scheme)) {
    return `"${text}" is not a valid address here; expected ${forms}`;
  }
  if (scheme === 'unix') {
    if (!rest.startsWith('/')) return `"${text}": a unix socket path must be absolute (unix:/path/to.sock)`;
    if (Buffer.byteLength(rest) > 107) return `"${text}": a unix socket path must be at most 107 bytes`;
    return { type: 'unix', path: rest };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) return `"${text}" is not a valid address; expected ${forms} with PORT 0-65535`;
  return { type: scheme as 'tcp' | 'udp', host: (m[1] ?? m[2]) as string, port };
}

/** The canonical text form of an address. */
export function formatAddress(a: Address): string {
  if (a.type === 'unix') return `unix:${a.path}`;
  return `${a.type}:${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}
