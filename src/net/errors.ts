/** Errors of the switch core and port layer. Each has a stable code. */
import { VmlinkError } from '../errors.js';

export class NetError extends VmlinkError {}

export class NetworkExistsError extends NetError {
  override readonly status = 409;
  constructor(name: string) {
    super('ERR_NETWORK_EXISTS', `network "${name}" already exists; choose another name or delete it first`);
  }
}

export class NetworkNotFoundError extends NetError {
  override readonly status = 404;
  constructor(name: string, known: readonly string[]) {
    super(
      'ERR_NETWORK_NOT_FOUND',
      `network "${name}" does not exist (known: ${known.length ? known.join(', ') : 'none'})`,
    );
  }
}

export class NetworkInUseError extends NetError {
  override readonly status = 409;
  constructor(name: string, ports: readonly string[]) {
    super('ERR_NETWORK_IN_USE', `network "${name}" still has ports [${ports.join(', ')}]; delete them first`);
  }
}

/** Creating one more network would pass the host's cap (config `limits.networks`). */
export class NetworkLimitError extends NetError {
  override readonly status = 409;
  constructor(count: number, cap: number) {
    super(
      'ERR_NETWORK_LIMIT',
      `this host already has ${count} networks, the most limits.networks allows (${cap}); delete a network first, or raise limits.networks in the config (up to 65536) and restart the daemon`,
    );
  }
}

export class VniInUseError extends NetError {
  override readonly status = 409;
  constructor(vni: number, by: string) {
    super('ERR_VNI_IN_USE', `VNI ${vni} is already used by network "${by}"; each network needs its own VNI`);
  }
}

export class PortExistsError extends NetError {
  override readonly status = 409;
  constructor(name: string) {
    super('ERR_PORT_EXISTS', `port "${name}" already exists; choose another name or delete it first`);
  }
}

export class PortNotFoundError extends NetError {
  override readonly status = 404;
  constructor(name: string) {
    super('ERR_PORT_NOT_FOUND', `port "${name}" does not exist (see: vmlink port list)`);
  }
}

export class PortKindError extends NetError {
  override readonly status = 400;
  constructor(kind: string, known: readonly string[]) {
    super('ERR_PORT_KIND', `port kind "${kind}" is not supported here (supported: ${known.join(', ')})`);
  }
}

/** A transport address could not be used (bind/listen/connect set-up). */
export class PortAddressError extends NetError {
  override readonly status = 422;
  constructor(port: string, address: string, reason: string, options?: ErrorOptions) {
    super('ERR_PORT_ADDRESS', `port "${port}": cannot use ${address}: ${reason}`, options);
  }
}

/**
 * A port's transport could not be opened for a reason of its own kind; the
 * code says which (`ERR_TAP_NOT_FOUND`, `ERR_HOST_PERMISSION`, ...) and the
 * message names the port once. The API answers 422: nothing was changed.
 * `ERR_PORT_OPEN` is the code for a failure no port kind has a code for.
 */
export class PortOpenError extends NetError {
  override readonly status = 422;
}

/** A MAC given to the switch (a location) is not a unicast MAC address. */
export class MacAddressError extends NetError {
  override readonly status = 400;
  constructor(text: string) {
    super('ERR_MAC_ADDRESS', `"${text}" is not a unicast MAC address; write it as 52:54:00:12:34:56`);
  }
}

/** A location was to be installed toward a port that is not in the location's network. */
export class PortNotInNetworkError extends NetError {
  override readonly status = 409;
  constructor(port: string, network: string, networks: readonly string[]) {
    super(
      'ERR_PORT_NOT_IN_NETWORK',
      `port "${port}" is not in network "${network}" (it is in: ${networks.length ? networks.join(', ') : 'none'}); install the location toward a port of that network`,
    );
  }
}

/** An address given to the switch (ARP suppression) is not an IPv4 address. */
export class IpAddressError extends NetError {
  override readonly status = 400;
  constructor(text: string) {
    super('ERR_IP_ADDRESS', `"${text}" is not an IPv4 address; write it as 10.0.0.5`);
  }
}
