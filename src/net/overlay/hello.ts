/**
 * The hello of a stream link (docs/overlay.md "Link protocol"): the first
 * control record each end sends, saying who it is and what it speaks. Its
 * network list follows once the hello was checked (network-sync.ts).
 */
import type { ControlMessage, PeerHello } from './transport.js';

/** Protocol name and version in every hello. */
export const PROTO = 'vmlink-link';
/** 2: the hello carries no network list; the list follows it in parts (network-sync.ts). */
export const PROTO_VERSION = 2;
/** Time allowed for the peer's hello, ms. */
export const HELLO_TIMEOUT_MS = 10_000;

/** This end's hello as a control message; it always announces offload records unless `h.offloads` is false. */
export function helloMessage(h: PeerHello): ControlMessage {
  return {
    type: 'hello',
    proto: PROTO,
    version: PROTO_VERSION,
    host: h.host,
    relay: h.relay,
    listen: h.listen,
    offloads: h.offloads !== false,
  };
}

/** Validates a decoded hello; returns the hello or the reason it is not one. */
export function parseHello(msg: ControlMessage): PeerHello | string {
  if (msg.type !== 'hello') return `expected a hello first, got a "${String(msg.type)}" message`;
  if (msg['proto'] !== PROTO) return `not a vmlink link (proto ${JSON.stringify(msg['proto'])})`;
  if (msg['version'] !== PROTO_VERSION)
    return `link protocol version ${String(msg['version'])} is not supported (this host speaks ${PROTO_VERSION}): run the same vmlink version on both hosts`;
  const host = msg['host'];
  if (typeof host !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(host)) return 'hello has no valid host id';
  const listen = msg['listen'];
  const port =
    Number.isInteger(listen) && (listen as number) > 0 && (listen as number) < 65536 ? (listen as number) : undefined;
  return {
    host,
    relay: msg['relay'] === true,
    ...(port === undefined ? {} : { listen: port }),
    ...(msg['offloads'] === true ? { offloads: true } : {}),
  };
}
