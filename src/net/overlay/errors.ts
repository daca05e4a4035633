/** Errors of the overlay (links between daemons). Each has a stable code. */
import { VmlinkError } from '../../errors.js';

export class OverlayError extends VmlinkError {}

/**
 * Why a link connection closed, for code that acts on it (the reason text
 * is for people): tcp-transport.ts logs a connection that hung up at debug
 * level and one that refused this host's certificate as a warning.
 */
export type LinkCloseCause =
  /** Closed by this end (close()). */
  | 'closed-here'
  /** The peer said `bye` after the hello. */
  | 'peer-bye'
  /** The peer said `bye` before its hello: it refused this end (its hello, certificate or limits). */
  | 'peer-refused'
  /** This end refused the peer's hello (a host id its certificate does not carry). */
  | 'refused-peer'
  /** The peer broke the link protocol (bad record, bad or second hello, too many early messages). */
  | 'protocol'
  /** No hello in time, or the peer went silent (keepalive). */
  | 'timeout'
  /** The connection ended or was reset before the peer's hello, without a word: proves nothing about the peer. */
  | 'hung-up'
  /** TLS: the peer closed after the handshake without a hello; it most likely refused this host's certificate. */
  | 'cert-refused'
  /** The peer closed the connection after the hello, without a `bye`. */
  | 'peer-closed'
  /** The connection was lost (mid-record, a socket error). */
  | 'lost';

/** A peer broke the link protocol (bad record, bad hello) or the connection closed before the hello. */
export class LinkProtocolError extends OverlayError {
  override readonly status = 400;
  /** Why, without the peer's address. */
  readonly reason: string;
  /** Why the connection closed, typed. */
  readonly closeCause: LinkCloseCause;
  constructor(peer: string, reason: string, closeCause: LinkCloseCause = 'protocol') {
    super('ERR_LINK_PROTOCOL', `link peer ${peer}: ${reason}`);
    this.reason = reason;
    this.closeCause = closeCause;
  }
}

/** A peer could not be reached or refused the handshake. */
export class LinkDialError extends OverlayError {
  override readonly status = 503;
  constructor(address: string, reason: string, options?: ErrorOptions) {
    super('ERR_LINK_DIAL', `cannot open a link to ${address}: ${reason}`, options);
  }
}

/** The overlay's TLS material is missing or unusable. */
export class LinkTlsConfigError extends OverlayError {
  override readonly status = 400;
  constructor(reason: string, options?: ErrorOptions) {
    super('ERR_LINK_TLS_CONFIG', reason, options);
  }
}

/** The VXLAN transport cannot be set up as configured (overlay.vxlan). */
export class VxlanConfigError extends OverlayError {
  override readonly status = 400;
  constructor(reason: string, options?: ErrorOptions) {
    super('ERR_VXLAN_CONFIG', reason, options);
  }
}

export class LinkExistsError extends OverlayError {
  override readonly status = 409;
  constructor(name: string) {
    super('ERR_LINK_EXISTS', `link "${name}" already exists; choose another name or delete it first`);
  }
}

export class LinkNotFoundError extends OverlayError {
  override readonly status = 404;
  constructor(name: string) {
    super('ERR_LINK_NOT_FOUND', `link "${name}" does not exist (see: vmlink link list)`);
  }
}

/** A link cannot be managed this way (e.g. an accepted link deleted). */
export class LinkNotDeletableError extends OverlayError {
  override readonly status = 409;
  constructor(name: string, why: string) {
    super('ERR_LINK_NOT_DELETABLE', `link "${name}" cannot be deleted: ${why}`);
  }
}
