/**
 * Errors of the cluster control plane (etcd). Each has a stable code and the
 * HTTP status the control API answers it with. Other cluster modules append
 * their classes here.
 */
import { VmlinkError } from '../errors.js';

/** Base of the cluster errors; never thrown as it is. */
export class ClusterError extends VmlinkError {}

/**
 * etcd cannot be reached (every endpoint refused, timed out or lost quorum):
 * a change to the fabric's state cannot be made now. The data plane is not
 * affected.
 */
export class ClusterUnavailableError extends ClusterError {
  override readonly status = 503;

  constructor(what: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_CLUSTER_UNAVAILABLE',
      `cannot ${what}: the etcd endpoints are unreachable (${reason}); forwarding, links and NBD exports go on ` +
        `unchanged, but the fabric's state cannot change until etcd is back: retry when etcd answers again`,
      options,
    );
  }
}

/** The TLS files given for etcd (CA, client certificate, key) cannot be read. */
export class ClusterTlsConfigError extends ClusterError {
  override readonly status = 400;

  constructor(field: string, file: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_CLUSTER_TLS',
      `cannot read ${field} ${file} for the etcd client: ${reason}; give the path of a readable PEM file`,
      options,
    );
  }
}

/**
 * A change contradicts what the fabric holds (a network's VNI differs between
 * this host and the fabric), or the keys it compares kept changing. Nothing
 * was written.
 */
export class ClusterConflictError extends ClusterError {
  override readonly status = 409;

  constructor(
    detail: string,
    advice = 'rename or renumber the network on this host (delete it and create it again), or change it in the fabric, then retry',
    options?: ErrorOptions,
  ) {
    super('ERR_CLUSTER_CONFLICT', `${detail}; nothing was written: ${advice}`, options);
  }
}
