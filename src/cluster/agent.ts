/**
 * The cluster agent of one host: membership (host record, leased alive record,
 * hosts view) and locations (this host's MACs published with mobility
 * sequence numbers, the others' installed in a sink) over one EtcdConnection.
 *
 * Everything it needs comes in as collaborators (logger, sink, MAC source,
 * clock), so the daemon runs one and bench/cluster.ts runs hundreds in a
 * process, sharing a connection. At rest it costs one lease keepalive stream
 * and three watches (members/, alive/, locations/); no timer per entry. A
 * change is one etcd write, whatever the number of hosts.
 */
import type { Logger } from '../log.js';
import type { EtcdConnection } from './etcd.js';
import { type DampingOptions, type LocationSink, Locations, type MacEvent, type MacSource } from './locations.js';
import { type Clock, type HostView, type LinkState, type MemberRecord, Membership } from './membership.js';

export interface ClusterAgentOptions {
  /** The etcd connection (its prefix applied); may be shared by many agents. */
  conn: EtcdConnection;
  /** This host's id. */
  host: string;
  logger: Logger;
  /** Receives the other hosts' MAC locations. */
  sink: LocationSink;
  /** The switch's local MAC events; without it, MACs are published through {@link ClusterAgent.learn}. */
  macs?: MacSource;
  /** Time source; default Date.now. */
  clock?: Clock;
  /** The persistent record put at `members/<host>` at each registration; none when omitted. */
  member?: Omit<MemberRecord, 'id'>;
  /** Lease TTL in seconds (default 10): a host that stops renewing is down everywhere after it. */
  ttlSec?: number;
  /** Called (coalesced) when the hosts view changes. */
  hostsChanged?: (hosts: HostView[]) => void;
  /** Duplicate-MAC detection; default 5 moves in 180 s freezes a MAC for 180 s. */
  damping?: DampingOptions;
}

export class ClusterAgent {
  readonly host: string;
  readonly #membership: Membership;
  readonly #locations: Locations;
  readonly #macs: MacSource | undefined;
  #unsubscribe: (() => void) | undefined;
  #started: Promise<void> | undefined;

  constructor(opts: ClusterAgentOptions) {
    this.host = opts.host;
    const clock = opts.clock ?? { now: Date.now };
    this.#locations = new Locations({
      conn: opts.conn,
      host: opts.host,
      logger: opts.logger,
      clock,
      sink: opts.sink,
      leaseId: () => this.#membership.leaseId,
      ...(opts.damping ? { damping: opts.damping } : {}),
    });
    this.#membership = new Membership({
      conn: opts.conn,
      host: opts.host,
      logger: opts.logger,
      clock,
      ...(opts.ttlSec !== undefined ? { ttlSec: opts.ttlSec } : {}),
      ...(opts.member ? { member: opts.member } : {}),
      ...(opts.hostsChanged ? { hostsChanged: opts.hostsChanged } : {}),
      onLease: () => this.#locations.republish(),
    });
    this.#macs = opts.macs;
  }

  /**
   * Starts the watches, subscribes to the MAC source, publishes its current
   * local MACs and registers the host; resolves when registered the first
   * time (it keeps trying while etcd is away). Calling it again returns the same promise.
   */
  start(): Promise<void> {
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<void> {
    this.#locations.start();
    if (this.#macs) {
      this.#unsubscribe = this.#macs.onMacEvent((ev) => this.#onMacEvent(ev));
      for (const m of this.#macs.localMacs()) this.#locations.learn(m.network, m.mac, m.port, false);
    }
    await this.#membership.start();
  }

  /** Resolves once the first full read of the locations has been installed. */
  ready(): Promise<void> {
    return this.#locations.ready();
  }

  /** Publishes a MAC seen on a local port (as a `learned` event would); fresh: may take it from another host. */
  learn(network: string, mac: string, port: string, fresh = true): void {
    this.#locations.learn(network, mac, port, fresh);
  }

  /** Withdraws a local MAC (as a `forgotten` event would). */
  forget(network: string, mac: string, port: string): void {
    this.#locations.forget(network, mac, port);
  }

  /** The networks this host has local ports on (written only when they change). */
  setNetworks(names: string[]): void {
    this.#membership.setNetworks(names);
  }

  /** This host's link states (written only when they change). */
  setLinks(links: LinkState[]): void {
    this.#membership.setLinks(links);
  }

  /** Where the fabric says a MAC is: its host and mobility sequence number (this host's own MACs too). */
  location(network: string, mac: string): { host: string; seq: number } | undefined {
    return this.#locations.lookup(network, mac);
  }

  /** Every known host: state, lease age, networks, links. */
  hosts(): HostView[] {
    return this.#membership.hosts();
  }

  /** True while the host holds a lease and its records are written. */
  get registered(): boolean {
    return this.#membership.leaseId !== undefined;
  }

  /** The host's current lease id (decimal string), undefined while not registered. */
  get leaseId(): string | undefined {
    return this.#membership.leaseId;
  }

  /** Counts: hosts up, local MACs (and those not yet written under the current lease), known MACs, frozen MACs, corrupt values skipped. */
  stats(): { up: number; local: number; unwritten: number; known: number; frozen: number; corrupt: number } {
    return { up: this.#membership.upCount, ...this.#locations.stats() };
  }

  /** Keys skipped as corrupt (relative to the prefix), each reported once in the log. */
  corruptKeys(): string[] {
    return [...this.#membership.corruptKeys, ...this.#locations.corruptKeys.map((k) => `locations/${k}`)];
  }

  /**
   * Stops the agent. revoke (default true) revokes the lease: the host and its
   * MACs vanish everywhere at once. revoke false stops renewing silently, as a
   * killed daemon would: they vanish after the TTL.
   */
  async close(opts: { revoke?: boolean } = {}): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    await this.#locations.close();
    await this.#membership.close(opts);
  }

  #onMacEvent(ev: MacEvent): void {
    if (!ev.local) return;
    if (ev.type === 'forgotten') this.#locations.forget(ev.network, ev.mac, ev.port);
    else this.#locations.learn(ev.network, ev.mac, ev.port, true);
  }
}
