/**
 * Host membership in the fabric (docs ISSUE14 key layout):
 * - `members/<host>`: the persistent host record (written at registration);
 * - `alive/<host>`: bound to the host's lease (TTL default 10 s, kept alive by
 *   etcd3's Lease). A host that stops renewing vanishes after the TTL and every
 *   watcher sees the delete: it is `down` everywhere within the TTL.
 *
 * The alive record carries the networks the host has local ports on and its
 * link states; it is rewritten only when one of them changes (never
 * periodically: the lease keepalive is the heartbeat).
 *
 * When the lease is lost (etcd away for longer than its TTL, or etcd says it
 * expired), a new one is granted with a bounded backoff once etcd answers, and
 * the records are put again; `onLease` tells the locations to republish.
 *
 * The hosts view: one watch on `members/`, one on `alive/`.
 */
import type { Lease } from 'etcd3';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { Backoff } from '../util/backoff.js';
import type { EtcdConnection } from './etcd.js';
import { jsonObject } from './json-record.js';
import { watchPrefix } from './watch.js';

/** The persistent host record at `members/<host>`. */
export interface MemberRecord {
  id: string;
  /** Overlay listener `tcp:IP:PORT`, or null for a host that only dials out. */
  overlay: string | null;
  /** False for hosts that can only dial out. */
  reachable: boolean;
  relay: boolean;
  issuer: boolean;
  join?: string;
  /** Its read-only HTTP endpoint, `http://IP:PORT` (`GET /v1/overview` of the fabric fetches from it); absent without one. */
  http?: string;
  /** ISO time the host joined. */
  joined: string;
}

/** One link of a host as published in its alive record. */
export interface LinkState {
  name: string;
  peer: string;
  state: string;
  path?: string;
}

/** The leased record at `alive/<host>`. */
export interface AliveRecord {
  id: string;
  /** ISO time the host's current lease was granted (its registration). */
  since: string;
  /** Networks the host has local ports on. */
  networks: string[];
  links: LinkState[];
}

/** One host as this agent sees it (`vmlink cluster status`). */
export interface HostView {
  id: string;
  /** `up` while the host's alive record exists (its lease is renewed), else `down`. */
  state: 'up' | 'down';
  /** The persistent record, when the host has one. */
  member: MemberRecord | undefined;
  /**
   * Lease age: ms since the host's current lease was granted (its alive
   * record's `since`), i.e. how long it has been up without losing its lease;
   * it starts again at 0 after a host re-registers. null when down.
   */
  leaseAgeMs: number | null;
  /** up: ISO time of `since`; down: ISO time this agent saw the host go (null if never seen up). */
  since: string | null;
  networks: string[];
  links: LinkState[];
}

/** Time source (ms since the epoch); tests and the bench hand in their own. */
export interface Clock {
  now(): number;
}

export interface MembershipOptions {
  conn: EtcdConnection;
  /** This host's id. */
  host: string;
  logger: Logger;
  clock: Clock;
  /** Lease TTL in seconds (default 10). */
  ttlSec?: number;
  /** The persistent record to put at `members/<host>` at each registration; none when omitted. */
  member?: Omit<MemberRecord, 'id'>;
  /** Called after each (re)registration with the new lease id (locations republish under it). */
  onLease?: (leaseId: string) => void;
  /** Called (coalesced, at most every `hostsDebounceMs`) when the hosts view changes. */
  hostsChanged?: (hosts: HostView[]) => void;
  /** Coalescing window of hostsChanged in ms (default 50). */
  hostsDebounceMs?: number;
}

const str = (v: unknown): v is string => typeof v === 'string';

function parseLinks(v: unknown): LinkState[] | undefined {
  if (!Array.isArray(v)) return undefined;
  for (const l of v) if (!l || !str(l.name) || !str(l.peer) || !str(l.state)) return undefined;
  return v as LinkState[];
}

/** A parsed alive record, or a reason it is not one. */
function parseAlive(host: string, buf: Buffer): AliveRecord | string {
  const v = jsonObject(buf);
  if (typeof v === 'string') return v;
  if (v['id'] !== host) return `id ${JSON.stringify(v['id'])} is not the key's host`;
  if (!str(v['since'])) return 'since is not a string';
  const nets = v['networks'];
  if (!Array.isArray(nets) || !nets.every(str)) return 'networks is not a list of names';
  const links = parseLinks(v['links']);
  if (!links) return 'links is not a list of {name, peer, state}';
  return { id: host, since: v['since'], networks: nets, links };
}

function parseMember(host: string, buf: Buffer): MemberRecord | string {
  const v = jsonObject(buf);
  if (typeof v === 'string') return v;
  if (v['id'] !== host) return `id ${JSON.stringify(v['id'])} is not the key's host`;
  if (v['overlay'] !== null && !str(v['overlay'])) return 'overlay is neither a string nor null';
  if (typeof v['reachable'] !== 'boolean') return 'reachable is not a boolean';
  // A bad endpoint costs only the overview of that host: the field is dropped, the record kept.
  if (v['http'] !== undefined && !str(v['http'])) delete v['http'];
  return v as unknown as MemberRecord;
}

export class Membership {
  readonly #o: MembershipOptions;
  readonly #ttl: number;
  #lease: Lease | undefined;
  #leaseId: string | undefined;
  #since = '';
  #networks: string[] = [];
  #links: LinkState[] = [];
  #written = '';
  #writing = false;
  #closed = false;
  #lostLogged = false;
  #registering: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  #aliveRetry: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #offState: (() => void) | undefined;
  readonly #backoff = new Backoff(500, 5000);
  readonly #members = new Map<string, MemberRecord>();
  readonly #alive = new Map<string, AliveRecord>();
  readonly #downSince = new Map<string, number>();
  readonly #corrupt = new Set<string>();
  #watches: { close(): Promise<void> }[] = [];
  #notify: NodeJS.Timeout | undefined;

  constructor(opts: MembershipOptions) {
    this.#o = opts;
    this.#ttl = opts.ttlSec ?? 10;
  }

  /** The current lease id, or undefined while the host is not registered. */
  get leaseId(): string | undefined {
    return this.#leaseId;
  }

  /** Values under members/ and alive/ skipped as corrupt, by key. */
  get corruptKeys(): readonly string[] {
    return [...this.#corrupt];
  }

  /** Starts the hosts watches and registers; resolves when registered the first time. */
  start(): Promise<void> {
    // A registration waiting out its backoff tries at once when the connection finds etcd again.
    this.#offState = this.#o.conn.onState((up) => {
      if (up) this.#wake?.();
    });
    this.#watches.push(
      watchPrefix(this.#o.conn, 'members/', {
        reset: (items) => {
          this.#members.clear();
          for (const [k, it] of items) this.#putMember(k, it.value);
          this.#changed();
        },
        put: (k, v) => {
          this.#putMember(k, v);
          this.#changed();
        },
        delete: (k) => {
          this.#members.delete(k);
          this.#changed();
        },
      }),
      watchPrefix(this.#o.conn, 'alive/', {
        reset: (items) => {
          for (const k of this.#alive.keys()) if (!items.has(k)) this.#gone(k);
          for (const [k, it] of items) this.#putAlive(k, it.value);
          this.#changed();
        },
        put: (k, v) => {
          this.#putAlive(k, v);
          this.#changed();
        },
        delete: (k) => {
          this.#gone(k);
          this.#changed();
        },
      }),
    );
    return this.#register();
  }

  /** Sets the networks this host has local ports on; the alive record is rewritten only when they change. */
  setNetworks(names: string[]): void {
    this.#networks = [...new Set(names)].sort();
    void this.#writeAlive();
  }

  /** Sets this host's link states; the alive record is rewritten only when they change. */
  setLinks(links: LinkState[]): void {
    this.#links = links.map((l) => ({ ...l })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    void this.#writeAlive();
  }

  /** Every host known from members/ or alive/, sorted by id. */
  hosts(): HostView[] {
    const now = this.#o.clock.now();
    const ids = [...new Set([...this.#members.keys(), ...this.#alive.keys(), ...this.#downSince.keys()])].sort();
    return ids.map((id) => {
      const a = this.#alive.get(id);
      const down = this.#downSince.get(id);
      const since = a ? Date.parse(a.since) : undefined;
      return {
        id,
        state: a ? 'up' : 'down',
        member: this.#members.get(id),
        leaseAgeMs: since === undefined || Number.isNaN(since) ? null : Math.max(0, now - since),
        since: a ? a.since : down === undefined ? null : new Date(down).toISOString(),
        networks: a?.networks ?? [],
        links: a?.links ?? [],
      };
    });
  }

  /** Hosts whose alive record exists. */
  get upCount(): number {
    return this.#alive.size;
  }

  /**
   * Stops. revoke (default true): revokes the lease, so the alive record and
   * every location of this host vanish at once (a clean leave). revoke false:
   * stops renewing without telling etcd, as a killed host would (they vanish after the TTL).
   */
  async close(opts: { revoke?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#wake?.();
    this.#offState?.();
    clearTimeout(this.#aliveRetry);
    clearTimeout(this.#notify);
    const lease = this.#lease;
    this.#lease = undefined;
    this.#leaseId = undefined;
    if (lease) {
      if (opts.revoke === false) lease.release();
      else await lease.revoke().catch(() => lease.release());
    }
    await Promise.all(this.#watches.map((w) => w.close().catch(() => {})));
    this.#watches = [];
  }

  #report(key: string, reason: string): void {
    if (this.#corrupt.has(key)) return;
    this.#corrupt.add(key);
    this.#o.logger.warn({ key, reason }, 'cluster: skipping a corrupt value');
  }

  #putMember(host: string, value: Buffer): void {
    const r = parseMember(host, value);
    if (typeof r === 'string') this.#report(`members/${host}`, r);
    else this.#members.set(host, r);
  }

  #putAlive(host: string, value: Buffer): void {
    const r = parseAlive(host, value);
    if (typeof r === 'string') {
      this.#report(`alive/${host}`, r);
      return;
    }
    this.#alive.set(host, r);
    this.#downSince.delete(host);
  }

  #gone(host: string): void {
    if (this.#alive.delete(host)) this.#downSince.set(host, this.#o.clock.now());
  }

  #changed(): void {
    const fn = this.#o.hostsChanged;
    if (!fn || this.#notify || this.#closed) return;
    this.#notify = setTimeout(() => {
      this.#notify = undefined;
      fn(this.hosts());
    }, this.#o.hostsDebounceMs ?? 50);
  }

  #aliveValue(): string {
    const rec: AliveRecord = { id: this.#o.host, since: this.#since, networks: this.#networks, links: this.#links };
    return JSON.stringify(rec);
  }

  /** Grants a lease and puts the records, retrying with backoff until it works or the membership closes. */
  #register(): Promise<void> {
    this.#registering ??= (async () => {
      const { conn, host, logger } = this.#o;
      for (;;) {
        if (this.#closed) return;
        let lease: Lease | undefined;
        try {
          lease = conn.lease(this.#ttl);
          const l = lease;
          l.on('lost', (err) => this.#lost(l, err));
          const id = await conn.run('grant the host lease', () => l.grant());
          if (this.#closed) {
            await l.revoke().catch(() => {});
            return;
          }
          this.#since = new Date(this.#o.clock.now()).toISOString();
          if (this.#o.member) {
            const rec: MemberRecord = { id: host, ...this.#o.member };
            await conn.run('put the host record', () =>
              conn.kv.put(`members/${host}`).value(JSON.stringify(rec)).exec(),
            );
          }
          const value = this.#aliveValue();
          await conn.run('put the alive record', () => conn.kv.put(`alive/${host}`).value(value).lease(id).exec());
          this.#written = value;
          this.#lease = l;
          this.#leaseId = id;
          this.#backoff.reset();
          if (this.#lostLogged) logger.info({ host, lease: id }, 'cluster: registered again with a new lease');
          this.#lostLogged = false;
          this.#o.onLease?.(id);
          return;
        } catch (err) {
          // Revoke, not just release: a grant or put that answers late must not leave records behind.
          if (lease) void lease.revoke().catch(() => undefined);
          if (!this.#lostLogged) {
            this.#lostLogged = true;
            logger.warn({ host, err: describeError(err) }, 'cluster: cannot register the host; retrying with backoff');
          }
          await new Promise<void>((r) => {
            this.#wake = r;
            this.#retry = setTimeout(r, this.#backoff.next());
          });
          clearTimeout(this.#retry);
          this.#wake = undefined;
        }
      }
    })().finally(() => {
      this.#registering = undefined;
    });
    return this.#registering;
  }

  #lost(lease: Lease, err: unknown): void {
    if (this.#closed || lease !== this.#lease) return;
    this.#lease = undefined;
    this.#leaseId = undefined;
    if (!this.#lostLogged) {
      this.#lostLogged = true;
      this.#o.logger.warn(
        { host: this.#o.host, err: describeError(err) },
        'cluster: host lease lost; registering again when etcd answers',
      );
    }
    void this.#register();
  }

  /** Puts the alive record if it differs from the one written; one write in flight at a time. */
  async #writeAlive(): Promise<void> {
    const id = this.#leaseId;
    if (this.#writing || id === undefined || this.#closed) return;
    const value = this.#aliveValue();
    if (value === this.#written) return;
    this.#writing = true;
    clearTimeout(this.#aliveRetry);
    const { conn } = this.#o;
    try {
      await conn.run('update the alive record', () =>
        conn.kv.put(`alive/${this.#o.host}`).value(value).lease(id).exec(),
      );
      this.#written = value;
    } catch (err) {
      // The next registration (after a lost lease) writes the current record; a failure
      // with the lease still alive is retried once the backoff passes.
      this.#o.logger.debug({ err: describeError(err) }, 'cluster: alive record update failed');
      this.#writing = false;
      clearTimeout(this.#aliveRetry);
      this.#aliveRetry = setTimeout(() => void this.#writeAlive(), this.#backoff.next());
      return;
    }
    this.#writing = false;
    if (this.#aliveValue() !== this.#written && this.#leaseId === id) void this.#writeAlive();
  }
}
