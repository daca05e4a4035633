/**
 * Where the event stream's events come from (api/events.ts EventHub), all
 * off the data path:
 * - ports added, removed, up and down: told by the port manager as it happens;
 * - MACs learned, moved and forgotten: the switch's MAC events, drained once
 *   per turn of the event loop from the ring the learn stage records into;
 * - admission decisions: told by the QoS service as it decides;
 * - reloads: published by the daemon (daemon.ts);
 * - links (up, down, path), exports (up, down, clients) and cluster hosts:
 *   their views compared once a second ({@link DaemonEvents.poll}); a change
 *   that comes and goes within that second is not seen.
 */
import type { ControlBackend } from '../api/backend.js';
import { EventHub } from '../api/events.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Switch } from '../net/switch/switch.js';
import type { PortManager } from './port-manager.js';
import type { QosService } from './qos.js';

export interface DaemonEventsOptions {
  hostId: string;
  logger: Logger;
  switch: Switch;
  ports: PortManager;
  qos: QosService;
  /** How often link, export and host views are compared, ms; default 1000. */
  pollMs?: number | undefined;
}

interface LinkSeen {
  state: string;
  peer: string | undefined;
  direct: boolean;
}

interface ExportSeen {
  state: string;
  clients: number;
}

export class DaemonEvents {
  readonly hub: EventHub;
  readonly #o: DaemonEventsOptions;
  readonly #log: Logger;
  readonly #stops: (() => void)[] = [];
  #backend: ControlBackend | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #links = new Map<string, LinkSeen>();
  #exports = new Map<string, ExportSeen>();
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
    );
    opts.qos.onAdmission = (d) => {
      const { accepted, ...rest } = d;
      hub.publish(accepted ? 'admission.accepted' : 'admission.refused', rest);
    };
    this.#stops.push(() => {
      opts.qos.onAdmission = undefined;
    });
  }

  /** Starts comparing the link, export and host views of `backend` once a second. */
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
      this.#pollLinks(b);
      this.#pollExports(b);
      const cluster = await b.cluster();
      this.#pollHosts(cluster.mode === 'member' ? cluster.hosts : []);
    } catch (err) {
      this.#log.debug({ err }, `event sources: reading the views failed: ${describeError(err)}`);
    } finally {
      this.#polling = false;
    }
  }

  #pollLinks(b: ControlBackend): void {
    const hub = this.hub;
    const now = new Map<string, LinkSeen>();
    for (const l of b.links()) {
      const seen: LinkSeen = { state: l.state, peer: l.peer, direct: l.source === 'direct' };
      now.set(l.name, seen);
      const was = this.#links.get(l.name);
      if (l.state === 'up' && was?.state !== 'up') {
        hub.publish('link.up', {
          link: l.name,
          peer: l.peer,
          transport: l.transport,
          path: l.path,
          address: l.address,
          source: l.source,
          reason: l.reason,
        });
        if (seen.direct) hub.publish('link.path', { peer: l.peer, path: 'direct', link: l.name });
      } else if (l.state !== 'up' && was?.state === 'up') {
        hub.publish('link.down', { link: l.name, peer: l.peer, state: l.state, reason: l.reason });
        if (was.direct) hub.publish('link.path', { peer: l.peer, path: 'relay', link: l.name });
      }
    }
    for (const [name, was] of this.#links) {
      if (now.has(name) || was.state !== 'up') continue;
      hub.publish('link.down', { link: name, peer: was.peer, state: 'closed', reason: 'the link is gone' });
      if (was.direct) hub.publish('link.path', { peer: was.peer, path: 'relay', link: name });
    }
    this.#links = now;
  }

  #pollExports(b: ControlBackend): void {
    const hub = this.hub;
    const now = new Map<string, ExportSeen>();
    for (const e of b.exports()) {
      now.set(e.name, { state: e.state, clients: e.clients });
      const was = this.#exports.get(e.name);
      if (e.state === 'up' && was?.state !== 'up') {
        hub.publish('export.open', { export: e.name, subject: 'export', clients: e.clients, reason: 'served' });
      } else if (e.state !== 'up' && was?.state === 'up') {
        hub.publish('export.close', { export: e.name, subject: 'export', clients: e.clients, reason: e.reason });
      }
      const before = was?.clients ?? 0;
      if (e.clients > before) {
        hub.publish('export.open', { export: e.name, subject: 'client', clients: e.clients });
      } else if (e.clients < before) {
        hub.publish('export.close', { export: e.name, subject: 'client', clients: e.clients });
      }
    }
    for (const [name, was] of this.#exports) {
      if (now.has(name) || was.state !== 'up') continue;
      hub.publish('export.close', { export: name, subject: 'export', clients: 0, reason: 'the export was removed' });
    }
    this.#exports = now;
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
