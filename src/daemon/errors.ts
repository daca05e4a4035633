/** Errors of the daemon's control operations. Each has a stable code. */
import { VmlinkError } from '../errors.js';

/** No export of that name. */
export class ExportNotFoundError extends VmlinkError {
  override readonly status = 404;
  constructor(name: string, known: readonly string[]) {
    super(
      'ERR_EXPORT_NOT_FOUND',
      `export "${name}" does not exist (exports: ${known.join(', ') || 'none'}; see: vmlink export list)`,
    );
  }
}

/** An export of that name exists already. */
export class ExportExistsError extends VmlinkError {
  override readonly status = 409;
  constructor(name: string) {
    super('ERR_EXPORT_EXISTS', `export "${name}" already exists; choose another name or delete it first`);
  }
}

/** An export with connected clients cannot be deleted. */
export class ExportInUseError extends VmlinkError {
  override readonly status = 409;
  constructor(name: string, clients: number) {
    super(
      'ERR_EXPORT_IN_USE',
      `export "${name}" has ${clients} client${clients === 1 ? '' : 's'} connected; disconnect ${clients === 1 ? 'it' : 'them'} (stop the VM or detach the disk) first`,
    );
  }
}

/** An export's backend could not be opened (missing image, unreachable remote): nothing was changed. */
export class ExportBackendError extends VmlinkError {
  override readonly status = 422;
  constructor(name: string, reason: string, options?: ErrorOptions) {
    super('ERR_EXPORT_BACKEND', `export "${name}": cannot open its backend: ${reason}`, options);
  }
}

/** The NBD server could not listen, so exports cannot be served. */
export class StorageUnavailableError extends VmlinkError {
  override readonly status = 503;
  constructor(reason: string, options?: ErrorOptions) {
    super(
      'ERR_STORAGE_UNAVAILABLE',
      `the NBD server is not running: ${reason}; fix storage.listen in the config file and restart the daemon`,
      options,
    );
  }
}

/** An export's file lies outside `storage.roots`. */
export class ExportPathError extends VmlinkError {
  override readonly status = 403;
  constructor(name: string, field: string, path: string, real: string, roots: readonly string[]) {
    super(
      'ERR_EXPORT_PATH_OUTSIDE_ROOTS',
      `export "${name}": ${field} ${path}${real === path ? '' : ` (resolved: ${real})`} is outside the directories exports may use ` +
        `[${roots.join(', ')}]; move the image into one of them, or add its directory to storage.roots in the config file`,
    );
  }
}

/** Memory exports together would declare more than `storage.memory_limit`. */
export class ExportMemoryLimitError extends VmlinkError {
  override readonly status = 422;
  constructor(name: string, bytes: number, used: number, limit: number, isDefault: boolean) {
    super(
      'ERR_EXPORT_MEMORY_LIMIT',
      `export "${name}": its memory backend of ${bytes} bytes and the ${used} bytes of the other memory exports ` +
        `exceed storage.memory_limit of ${limit} bytes${isDefault ? " (the default: a quarter of this host's RAM)" : ''}; ` +
        'use a smaller size or a file backend, delete another memory export, or raise storage.memory_limit',
    );
  }
}

/** A copy-on-write export that reads from itself. */
export class ExportCowLoopError extends VmlinkError {
  override readonly status = 422;
  constructor(name: string, reason: string) {
    super('ERR_EXPORT_COW_LOOP', `export "${name}": ${reason}`);
  }
}

/** A file another export already writes. */
export class ExportFileInUseError extends VmlinkError {
  override readonly status = 409;
  constructor(name: string, field: string, real: string, other: string, otherField: string) {
    super(
      'ERR_EXPORT_FILE_IN_USE',
      `export "${name}": ${field} ${real} is already written by export "${other}" (${otherField}); ` +
        'two writers of one image corrupt it: make this export read_only: true, or give it a cow backend over that image',
    );
  }
}

/** `vmlink cluster init` or `join` on a host that is already a member of a fabric. */
export class ClusterMemberError extends VmlinkError {
  override readonly status = 409;
  constructor(host: string, s: { etcd: string[]; prefix: string }) {
    super(
      'ERR_CLUSTER_MEMBER',
      `host "${host}" is already a member of the fabric in etcd ${s.etcd.join(',')} (prefix ${s.prefix}); ` +
        'to move it to another fabric, stop the daemon, remove cluster.json from its state directory and start it again',
    );
  }
}

/** A fabric operation (`vmlink cluster token`) on a host that is not a member of one. */
export class ClusterNotMemberError extends VmlinkError {
  override readonly status = 409;
  constructor(host: string) {
    super(
      'ERR_CLUSTER_NOT_MEMBER',
      `host "${host}" is not a member of a fabric; start one with vmlink cluster init --etcd URL, or join one with vmlink cluster join TOKEN`,
    );
  }
}

/** `vmlink cluster init` where a fabric already exists under the prefix. */
export class ClusterExistsError extends VmlinkError {
  override readonly status = 409;
  constructor(etcd: string[], prefix: string) {
    super(
      'ERR_CLUSTER_EXISTS',
      `a fabric already exists in etcd ${etcd.join(',')} under prefix ${prefix}; ` +
        'join it instead: run vmlink cluster token on one of its hosts, then vmlink cluster join TOKEN here (or init with another --prefix)',
    );
  }
}
