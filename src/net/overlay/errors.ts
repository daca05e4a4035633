/** Errors of the overlay (links between daemons). Each has a stable code. */
import { VmlinkError } from '../../errors.js';

export class OverlayError extends VmlinkError {}

/** A peer broke the link protocol (bad record, bad hello); the connection is closed. */
export class LinkProtocolError extends OverlayError {
  override readonly status = 400;
  constructor(peer: string, reason: string) {
    super('ERR_LINK_PROTOCOL', `link peer ${peer}: ${reason}`);
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
