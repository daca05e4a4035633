/**
 * The StateStore contract: where the daemon keeps the networks, ports and
 * exports added through the control API, so they come back after a restart.
 *
 * A store holds the raw input objects exactly as the API received them (not
 * the parsed forms): on load they are validated again by the current schema,
 * so a stored item never bypasses validation. Implementations: the embedded
 * store (a snapshot and a journal in host.state_dir, the default); an etcd
 * store for clusters later.
 */

/** A stored item: the object as given to the API (`POST /v1/networks`, `/v1/ports` or `/v1/exports` body). */
export type StoredItem = Record<string, unknown> & { name: string };

/** Everything a store holds, in the order items were first stored. */
export interface StoredState {
  networks: StoredItem[];
  ports: StoredItem[];
  /** NBD exports (`POST /v1/exports` bodies); empty in state written before exports existed. */
  exports: StoredItem[];
  /** Overlay links added with `POST /v1/links`; absent when none is stored. */
  links?: StoredItem[];
}

export interface StateStore {
  /** Reads the stored state. Rejects with a clear error when it cannot be read or is corrupt; never resets silently. */
  load(): Promise<StoredState>;
  /** Stores (or replaces, by `item.name`) a network. Resolves once the change is durable. */
  putNetwork(item: StoredItem): Promise<void>;
  /** Forgets a network; no error when it is not stored. Resolves once durable. */
  deleteNetwork(name: string): Promise<void>;
  /** Stores (or replaces, by `item.name`) a port. Resolves once the change is durable. */
  putPort(item: StoredItem): Promise<void>;
  /** Forgets a port; no error when it is not stored. Resolves once durable. */
  deletePort(name: string): Promise<void>;
  /** Stores (or replaces, by `item.name`) an export. Resolves once the change is durable. */
  putExport(item: StoredItem): Promise<void>;
  /** Forgets an export; no error when it is not stored. Resolves once durable. */
  deleteExport(name: string): Promise<void>;
  /** Stores (or replaces, by `item.name`) an overlay link. Resolves once durable. */
  putLink(item: StoredItem): Promise<void>;
  /** Forgets an overlay link; no error when it is not stored. Resolves once durable. */
  deleteLink(name: string): Promise<void>;
  /** Waits for pending writes and releases resources. Idempotent. */
  close(): Promise<void>;
}
