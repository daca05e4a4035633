/**
 * The port manager: the one owner of every port the daemon runs (config and
 * API ports; overlay link ports belong to the overlay). For each port it
 * holds the switch port, the spec as given, its QoS policy (through the
 * {@link QosService}) and its captures; nothing else registers or removes a
 * daemon port.
 */
import type { CaptureTap, PortViewOut } from '../api/backend.js';
import type { PortConfig } from '../config/schema.js';
import { portNetworkRefs } from '../config/schema.js';
import { describeError, VmlinkError } from '../errors.js';
import type { Logger } from '../log.js';
import { PortNotFoundError, PortOpenError } from '../net/errors.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type PortContext, type PortState } from '../net/port.js';
import type { Switch, SwitchPort } from '../net/switch/switch.js';
import type { Source } from '../reconcile/state.js';
import { createPort } from './port-registry.js';
import type { QosService } from './qos.js';
import { addressOf, portBinding } from './specs.js';
import { UnavailablePort } from './unavailable-port.js';

/** One port the daemon owns. */
export interface PortEntry {
  sp: SwitchPort;
  source: Source;
  spec: PortConfig;
  /** The port as given: the API body, or the config entry with addresses in text form. */
  raw: Record<string, unknown>;
  /** Reason of the last state change. */
  reason: string;
  /** Capture taps attached to this port. */
  taps: Set<CaptureTap>;
}

/** A change of a port for the event stream (daemon/events.ts): added, removed, up or down (with the state it is in and why). */
export interface PortChange {
  change: 'added' | 'removed' | 'up' | 'down';
  port: string;
  kind: string;
  network?: string | undefined;
  state: PortState;
  reason: string;
}

export interface PortManagerOptions {
  switch: Switch;
  qos: QosService;
  logger: Logger;
}

export class PortManager {
  readonly #sw: Switch;
  readonly #qos: QosService;
  readonly #log: Logger;
  readonly #ports = new Map<string, PortEntry>();
  readonly #watchers = new Set<(c: PortChange) => void>();

  constructor(opts: PortManagerOptions) {
    this.#sw = opts.switch;
    this.#qos = opts.qos;
    this.#log = opts.logger;
  }

  /** Tells `fn` of ports added, removed, up and down; returns the function that stops it. */
  watch(fn: (c: PortChange) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  #tell(change: PortChange['change'], e: PortEntry): void {
    if (this.#watchers.size === 0) return;
    const c: PortChange = {
      change,
      port: e.spec.name,
      kind: e.spec.kind,
      network: e.spec.network,
      state: e.sp.state,
      reason: e.reason,
    };
    for (const fn of this.#watchers) {
      try {
        fn(c);
      } catch (err) {
        this.#log.warn({ err }, 'a port watcher threw; the port manager goes on');
      }
    }
  }

  /** The port's entry, or undefined. */
  get(name: string): PortEntry | undefined {
    return this.#ports.get(name);
  }

  /** The port's entry, or ERR_PORT_NOT_FOUND. */
  entry(name: string): PortEntry {
    const e = this.#ports.get(name);
    if (!e) throw new PortNotFoundError(name);
    return e;
  }

  entries(): PortEntry[] {
    return [...this.#ports.values()];
  }

  /** Names of the ports this manager owns on network `network` (access, native or tagged). */
  usersOf(network: string): string[] {
    return this.entries()
      .filter((e) => portNetworkRefs(e.spec).some(([, n]) => n === network))
      .map((e) => e.spec.name);
  }

  /**
   * Creates the port on the switch and opens it. `strict` (API): a transport
   * that cannot be built or opened throws and leaves nothing behind.
   * Otherwise (config, stored, reload) such a port stays, shown down with the
   * reason. Throws in both cases when a network is missing or the name is taken.
   */
  async add(spec: PortConfig, raw: Record<string, unknown>, source: Source, strict: boolean): Promise<PortEntry> {
    const e = this.#attach(spec, raw, source, !strict);
    if (!strict) {
      await this.#openTolerant(e);
      return e;
    }
    try {
      await e.sp.port.open();
    } catch (err) {
      await this.remove(spec.name, 'the port could not open');
      // A port's own error has its specific code and names the port already: pass it on as it is.
      if (err instanceof VmlinkError) throw err;
      throw new PortOpenError(
        'ERR_PORT_OPEN',
        `port "${spec.name}": cannot open its ${spec.kind} transport (${addressOf(spec)}): ${describeError(err)}`,
        { cause: err },
      );
    }
    return e;
  }

  #attach(spec: PortConfig, raw: Record<string, unknown>, source: Source, tolerant: boolean): PortEntry {
    const log = this.#log.child({ port: spec.name });
    const entry = { source, spec, raw, reason: 'not opened yet', taps: new Set<CaptureTap>() } as PortEntry;
    entry.sp = this.#sw.addPort(spec.name, portBinding(spec), (sink, sp) => {
      const ctx: PortContext = {
        sink,
        sinkBatch: sp.ingressBatch,
        onState: (state: PortState, reason: string) => {
          const was = sp.state;
          this.#sw.portState(sp, state);
          entry.reason = reason;
          log.info({ state, reason }, `port ${state}: ${reason}`);
          if (state === 'up') this.#tell('up', entry);
          else if (was === 'up' || state === 'down') this.#tell('down', entry);
        },
        onMalformed: (reason: string) => this.#sw.malformed(sp, reason),
        onRoom: sp.onRoom,
        logger: log,
        maxFrameLen: MAX_FRAME_LEN,
        queueLen: spec.queue_len ?? DEFAULT_QUEUE_LEN,
      };
      if (!tolerant) return createPort(spec, ctx);
      try {
        return createPort(spec, ctx);
      } catch (err) {
        return new UnavailablePort(spec.name, spec.kind, err);
      }
    });
    this.#ports.set(spec.name, entry);
    this.#qos.attach(spec);
    this.#tell('added', entry);
    return entry;
  }

  async #openTolerant(e: PortEntry): Promise<void> {
    try {
      await e.sp.port.open();
    } catch (err) {
      e.reason = `cannot open: ${describeError(err)}`;
      this.#sw.portState(e.sp, 'down');
      this.#tell('down', e);
      this.#log.error({ port: e.sp.name, code: (err as { code?: unknown }).code }, `port "${e.sp.name}" ${e.reason}`);
    }
  }

  /** Ends its captures (telling them `why`), forgets its QoS, detaches it from the switch and closes it. */
  async remove(name: string, why = 'the port was deleted'): Promise<void> {
    const e = this.#ports.get(name);
    if (!e) return;
    this.#ports.delete(name);
    this.#qos.detach(name);
    for (const t of e.taps) t.end(why);
    e.taps.clear();
    await this.#sw.removePort(name);
    e.reason = why;
    this.#tell('removed', e);
  }

  /** Attaches a capture tap; returns the function that detaches it. ERR_PORT_NOT_FOUND when there is no such port. */
  capture(name: string, tap: CaptureTap): () => void {
    const e = this.entry(name);
    const sp = e.sp;
    sp.taps.push(tap);
    e.taps.add(tap);
    return () => {
      e.taps.delete(tap);
      const i = sp.taps.indexOf(tap);
      if (i >= 0) sp.taps.splice(i, 1);
    };
  }

  /** Ends every capture, telling it `why`. */
  endCaptures(why: string): void {
    for (const e of this.#ports.values()) {
      for (const t of e.taps) t.end(why);
      e.taps.clear();
    }
  }

  /** Daemon stop: ends every capture, then closes every port (flushing it); the switch stops after. */
  async close(): Promise<void> {
    this.endCaptures('the daemon is stopping');
    await Promise.all(
      this.entries().map((e) =>
        e.sp.port
          .close()
          .catch((err) => this.#log.warn({ port: e.sp.name, err }, `closing port: ${describeError(err)}`)),
      ),
    );
  }

  /** `GET /v1/ports/:name`'s body for an entry. */
  view(e: PortEntry): PortViewOut {
    const sp = e.sp;
    return {
      name: sp.name,
      kind: e.spec.kind,
      source: e.source,
      state: sp.state,
      reason: e.reason,
      ...(e.spec.network === undefined ? {} : { network: e.spec.network }),
      ...(e.spec.trunk === undefined ? {} : { trunk: e.spec.trunk }),
      spec: e.raw,
      transport: sp.port.describe(),
      counters: sp.counterSnapshot(),
      macs: sp.learned,
    };
  }
}
