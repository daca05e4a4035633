/**
 * The reconciler's hands (reconcile/reconciler.ts `Actuator`): how the daemon
 * creates and removes a network, a port, an export and a link. Each kind has
 * one owner: networks the switch (this module keeps where each came from),
 * ports the {@link PortManager}, exports the {@link StorageService}, links the
 * {@link OverlayService}.
 */
import type { LinkConfig } from '../config/overlay-schema.js';
import type { ExportConfig, NetworkConfig, PortConfig } from '../config/schema.js';
import { NetworkInUseError, NetworkLimitError } from '../net/errors.js';
import type { Switch } from '../net/switch/switch.js';
import type { Actuator } from '../reconcile/reconciler.js';
import type { DesiredItem } from '../reconcile/state.js';
import type { OverlayService } from './overlay.js';
import type { PortManager } from './port-manager.js';
import type { QosService } from './qos.js';
import type { StorageService } from './storage.js';

/** Networks on the switch; knows where each came from. */
export class NetworkActuator implements Actuator {
  readonly #items = new Map<string, DesiredItem>();
  readonly #sw: Switch;
  readonly #overlay: OverlayService;
  readonly #ports: PortManager;
  readonly #cap: number;

  constructor(opts: { switch: Switch; overlay: OverlayService; ports: PortManager; cap: number }) {
    this.#sw = opts.switch;
    this.#overlay = opts.overlay;
    this.#ports = opts.ports;
    this.#cap = opts.cap;
  }

  running(): ReadonlyMap<string, DesiredItem> {
    return this.#items;
  }

  /** The network's item, or undefined. */
  get(name: string): DesiredItem | undefined {
    return this.#items.get(name);
  }

  /** Throws when one more network would pass `limits.networks`. */
  checkCap(): void {
    if (this.#items.size >= this.#cap) throw new NetworkLimitError(this.#items.size, this.#cap);
  }

  /** Throws ERR_NETWORK_IN_USE when a port of the daemon uses the network (overlay link ports go with it). */
  checkUnused(name: string): void {
    const users = this.#ports.usersOf(name);
    if (users.length) throw new NetworkInUseError(name, users);
  }

  /** The daemon's ports on the network: they go before it is replaced, and come back on the new one. */
  dependents(name: string): { kind: 'ports'; name: string }[] {
    return this.#ports.usersOf(name).map((p) => ({ kind: 'ports', name: p }));
  }

  async create(item: DesiredItem, strict: boolean): Promise<void> {
    if (strict) this.checkCap();
    const n = item.spec as NetworkConfig;
    this.#sw.addNetwork({ name: n.name, vni: n.vni, mtu: n.mtu });
    this.#items.set(n.name, item);
    this.#overlay.networksChanged();
  }

  async destroy(name: string): Promise<void> {
    this.checkUnused(name);
    await this.#overlay.releaseNetwork(name);
    this.#sw.removeNetwork(name);
    this.#items.delete(name);
    this.#overlay.networksChanged();
  }
}

/** Ports, through the port manager; an API port is admitted (QoS reservations) before it is created. */
export class PortActuator implements Actuator {
  /** Ports open at once at start-up and reload. */
  readonly parallel = true;
  readonly #ports: PortManager;
  readonly #qos: QosService;

  constructor(opts: { ports: PortManager; qos: QosService }) {
    this.#ports = opts.ports;
    this.#qos = opts.qos;
  }

  running(): ReadonlyMap<string, DesiredItem> {
    return new Map(this.#ports.entries().map((e) => [e.spec.name, { ...e, name: e.spec.name }]));
  }

  async create(item: DesiredItem, strict: boolean): Promise<void> {
    const spec = item.spec as PortConfig;
    // The config's ports were admitted together with the config (QosService.checkConfig). A port
    // added through the API is admitted across the fabric too; one restored from the store was.
    if (item.source === 'api') {
      if (strict) await this.#qos.admitInFabric(spec);
      else this.#qos.admit(spec);
    }
    await this.#ports.add(spec, item.raw, item.source, strict);
  }

  async destroy(name: string): Promise<void> {
    // Its fabric-wide reservation goes with it; etcd being away does not keep a port from going.
    await this.#qos.releaseInFabric(name).catch(() => undefined);
    await this.#ports.remove(name);
  }
}

/** NBD exports, through the storage service. */
export class ExportActuator implements Actuator {
  readonly #storage: StorageService;

  constructor(opts: { storage: StorageService }) {
    this.#storage = opts.storage;
  }

  running(): ReadonlyMap<string, DesiredItem> {
    return new Map(this.#storage.entries().map((e) => [e.name, e]));
  }

  async create(item: DesiredItem, strict: boolean): Promise<void> {
    if (strict) await this.#storage.ensureServer(false);
    await this.#storage.add(item.spec as ExportConfig, item.raw, item.source, !strict);
  }

  destroy(name: string): Promise<void> {
    return this.#storage.remove(name, true);
  }
}

/** Overlay links of the config and the API (links a peer dialled, and direct ones, are the overlay's own). */
export class LinkActuator implements Actuator {
  readonly #items = new Map<string, DesiredItem>();
  readonly #overlay: OverlayService;

  constructor(opts: { overlay: OverlayService }) {
    this.#overlay = opts.overlay;
  }

  running(): ReadonlyMap<string, DesiredItem> {
    return this.#items;
  }

  /** The link's item, or undefined (not a config or API link). */
  get(name: string): DesiredItem | undefined {
    return this.#items.get(name);
  }

  /** Records a change made in place (its QoS). */
  set(item: DesiredItem): void {
    this.#items.set(item.name, item);
  }

  async create(item: DesiredItem, _strict: boolean): Promise<void> {
    this.#overlay.addLink(item.spec as LinkConfig, item.source, item.source === 'api');
    this.#items.set(item.name, item);
  }

  async destroy(name: string): Promise<void> {
    this.#items.delete(name);
    await this.#overlay.removeLink(name);
  }
}
