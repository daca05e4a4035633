/**
 * Stores that stand in front of another one. {@link ForwardingStore} sends
 * every call on; {@link StoreSwitch} is one whose target can be replaced
 * while the daemon runs: `vmlink cluster init` and `join` move a running
 * host from its embedded store to the fabric's etcd store without a
 * restart. Callers keep one reference; every call goes to the store in use
 * at that moment.
 */
import type { StateStore, StoredItem, StoredState } from './store.js';

/** Sends every call to `target`; subclasses override what they change. */
export class ForwardingStore implements StateStore {
  #target: StateStore;

  constructor(target: StateStore) {
    this.#target = target;
  }

  protected set target(next: StateStore) {
    this.#target = next;
  }

  /** The store calls go to. */
  get target(): StateStore {
    return this.#target;
  }

  load(): Promise<StoredState> {
    return this.#target.load();
  }
  putNetwork(item: StoredItem): Promise<void> {
    return this.#target.putNetwork(item);
  }
  deleteNetwork(name: string): Promise<void> {
    return this.#target.deleteNetwork(name);
  }
  putPort(item: StoredItem): Promise<void> {
    return this.#target.putPort(item);
  }
  deletePort(name: string): Promise<void> {
    return this.#target.deletePort(name);
  }
  putExport(item: StoredItem): Promise<void> {
    return this.#target.putExport(item);
  }
  deleteExport(name: string): Promise<void> {
    return this.#target.deleteExport(name);
  }
  putLink(item: StoredItem): Promise<void> {
    return this.#target.putLink(item);
  }
  deleteLink(name: string): Promise<void> {
    return this.#target.deleteLink(name);
  }
  close(): Promise<void> {
    return this.#target.close();
  }
}

/** A forwarding store whose target can be replaced. */
export class StoreSwitch extends ForwardingStore {
  /** Uses `next` from now on; the previous store is returned, still open (the caller closes it). */
  replace(next: StateStore): StateStore {
    const prev = this.target;
    this.target = next;
    return prev;
  }
}
