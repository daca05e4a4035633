/** Errors of the cluster control plane (etcd). Each has a stable code. */
import { VmlinkError } from '../errors.js';

export class ClusterError extends VmlinkError {}

/** etcd cannot be reached (or answered with something unusable): the change was not made; try again later. */
export class ClusterUnavailableError extends ClusterError {
  override readonly status = 503;
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_CLUSTER_UNAVAILABLE', message, options);
  }
}
