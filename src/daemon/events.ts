/**
 * Where the event stream's events come from (api/events.ts EventHub), all
 * off the data path:
 * - ports added, removed, up and down: told by the port manager as it happens;
 * - MACs learned, moved and forgotten: the switch's MAC events, drained once
 *   per turn of the event loop from the ring the learn stage records into;
 * - admission decisions: told by the QoS service as it decides;
 * - reloads: published by the daemon (daemon.ts);
 * - links up and down (and the path to a peer host): told by the overlay as
 *   a link's channel comes up or goes (OverlayService.onLinkState);
 * - exports served and removed, NBD clients coming and going: told by the
 *   export registry as it happens (StorageService.onExportChange);
 * - cluster hosts: their view compared once a second ({@link DaemonEvents.poll});
 *   a lease that lapses and is renewed within that second is not seen.
 */
import type { ControlBackend } from '../api/backend.js';
import { EventHub } from '../api/events.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LinkStateChange } from '../net/overlay/overlay.js';
import type { Switch } from '../net/switch/switch.js';
import type { ExportChange } from '../storage/exports.js';
import type { PortManager } from './port-manager.js';
import type { QosService } from './qos.js';

export interface DaemonEventsOptions {
  hostId: string;
  logger: Logger;
  switch: Switch;
  ports: PortManager;
  qos: QosService;
  /** The overlay's links, told as they come up and go (OverlayService.onLinkState). */
  overlay: { onLinkState(fn: (change: LinkStateChange) => void): () => void };
  /** Exports and their NBD clients, told as they change (StorageService.onExportChange). */
  storage: { onExportChange(fn: (change: ExportChange) => void): () => void };
  /** How often the cluster hosts' view is compared, ms; default 1000. */
  pollMs?: number | undefined;
}

interface LinkSeen {
  peer: string | undefined;
  direct: boolean;
}

export class DaemonEvents {
  readonly hub: EventHub;
  readonly #o: DaemonEventsOptions;
  readonly #log: Logger;
  readonly #stops: (() => void)[] = [];
  #backend: ControlBackend | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  /** The links told up and not yet down: each up and down is published once. */
  readonly #links = new Map<string, LinkSeen>();
  #hosts = new Map<string, string>();

  constructor(opts: DaemonEventsOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    this.hub = new EventHub({ host: opts.hostId, logger: opts.logger });
    const hub = this.hub;
    this.#stops.push(
      opts.ports.watch((c) => {
        const { change, ...rest } = c;
        hub.publish(`port.${change}`, rest);
      }),
      opts.switch.onMacEvent((ev) => {
        const { type, ...rest } = ev;
        hub.publish(`mac.${type}`, rest);
      }),
      opts.overlay.onLinkState((c) => this.#link(c)),
      opts.storage.onExportChange((c) => {
        const { open, ...rest } = c;
        hub.publish(open ? 'export.open' : 'export.close', rest);
      }),
    );
    opts.qos.onAdmission = (d) => {
      const { accepted, ...rest } = d;
      hub.publish(accepted ? 'admission.accepted' : 'admission.refused', rest);
    };
    this.#stops.push(() => {
      opts.qos.onAdmission = undefined;
    });
  }

  /** Starts comparing the cluster hosts' view of `backend` once a second. */
  start(backend: ControlBackend): void {
    this.#backend = backend;
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.poll(), this.#o.pollMs ?? 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const s of this.#stops.splice(0)) s();
  }

  /** A reload done (`view`) or refused (`err`). */
  reloaded(
    view: { config: string; created: string[]; removed: string[]; failed: unknown[] } | undefined,
    err?: unknown,
  ): void {
    if (view) {
      this.hub.publish('reload', {
        ok: true,
        config: view.config,
        created: view.created,
        removed: view.removed,
        failed: view.failed,
      });
    } else {
      const code = (err as { code?: unknown } | undefined)?.code;
      this.hub.publish('reload', {
        ok: false,
        code: typeof code === 'string' ? code : undefined,
        reason: describeError(err),
      });
    }
  }

  /** Compares the views with the last ones and publishes the differences. */
  async poll(): Promise<void> {
    const b = this.#backend;
    if (!b || this.#polling) return;
    this.#polling = true;
    try {
      const cluster = await b.cluster();
      this.#pollHosts(cluster.mode === 'member' ? cluster.hosts : []);
    } catch (err) {
      this.#log.debug({ err }, `event sources: reading the views failed: ${describeError(err)}`);
    } finally {
      this.#polling = false;
    }
  }

  /** A link came up or lost its channel: link.up or link.down (once each), and link.path for a direct link. */
  #link(c: LinkStateChange): void {
    const l = c.link;
    const was = this.#links.get(l.name);
    if (c.up) {
      if (was) return;
      const direct = l.source === 'direct';
      this.#links.set(l.name, { peer: l.peer, direct });
      this.hub.publish('link.up', {
        link: l.name,
        peer: l.peer,
        transport: l.transport,
        path: l.path,
        address: l.address,
        source: l.source,
        reason: l.reason,
      });
      if (direct) this.hub.publish('link.path', { peer: l.peer, path: 'direct', link: l.name });
      return;
    }
    if (!was) return;
    this.#links.delete(l.name);
    this.hub.publish('link.down', { link: l.name, peer: l.peer ?? was.peer, state: l.state, reason: l.reason });
    if (was.direct) this.hub.publish('link.path', { peer: was.peer, path: 'relay', link: l.name });
  }

  #pollHosts(hosts: readonly { id: string; state: string; address?: string | undefined }[]): void {
    const now = new Map<string, string>();
    for (const h of hosts) {
      now.set(h.id, h.state);
      const was = this.#hosts.get(h.id);
      if (was === h.state || (was === undefined && h.state !== 'up')) continue;
      if (h.state === 'up') this.hub.publish('host.up', { member: h.id, address: h.address });
      else this.hub.publish('host.down', { member: h.id });
    }
    for (const [id, state] of this.#hosts) {
      if (!now.has(id) && state === 'up') this.hub.publish('host.down', { member: id, reason: 'no longer listed' });
    }
    this.#hosts = now;
  }
}
