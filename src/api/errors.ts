/** Errors of the control API server. Each has a stable code. */
import { VmlinkError } from '../errors.js';

export class ApiServerError extends VmlinkError {}

/** A request the API cannot serve as given (bad query value, bad JSON). HTTP 400 unless `status` says otherwise. */
export class BadRequestError extends ApiServerError {
  override readonly status: number;
  constructor(message: string, status = 400) {
    super('ERR_BAD_REQUEST', message);
    this.status = status;
  }
}

/** No such route. */
export class RouteNotFoundError extends ApiServerError {
  override readonly status = 404;
  constructor(method: string, url: string) {
    super('ERR_ROUTE_NOT_FOUND', `there is no ${method} ${url} in the control API (see docs/api.md)`);
  }
}

/** Another daemon already answers on the control socket. */
export class ControlInUseError extends ApiServerError {
  override readonly status = 409;
  constructor(path: string) {
    super(
      'ERR_CONTROL_IN_USE',
      `another vmlink daemon is already answering on ${path}; stop it first, or give this one another control socket (host.control or --control)`,
    );
  }
}

/** The control socket cannot get the mode, owner or group of `host.control_socket`. */
export class ControlSocketError extends ApiServerError {
  constructor(path: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_CONTROL_SOCKET',
      `cannot create the control socket ${path}: ${reason}; fix host.control_socket in the config file`,
      options,
    );
  }
}

/** The control socket path cannot be used (not a socket, no permission, bad directory). */
export class ControlPathError extends ApiServerError {
  constructor(path: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_CONTROL_PATH',
      `cannot use ${path} as the control socket: ${reason}; choose another path (host.control or --control)`,
      options,
    );
  }
}

/** A request that would change something reached the read-only HTTP endpoint. */
export class HttpReadOnlyError extends ApiServerError {
  override readonly status = 405;
  constructor(method: string, url: string) {
    super(
      'ERR_HTTP_READ_ONLY',
      `${method} ${url}: the HTTP endpoint (http.listen) is read-only; make changes through the control socket (the vmlink command, or docs/api.md)`,
    );
  }
}
