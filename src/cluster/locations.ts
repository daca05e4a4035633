/**
 * MAC locations through the store, with EVPN-style mobility sequence numbers
 * (RFC 7432 §15): `locations/<network>/<mac>` = {host, port, seq}, bound to
 * the owner's lease.
 *
 * Publishing (one etcd transaction per change, whatever the number of hosts):
 * - a MAC first seen here: `if create_revision == 0 then put seq 1 else get`;
 * - a MAC another host owns, seen here by the switch (learned, moved, RARP):
 *   `if mod_revision == theirs then put seq = theirs + 1 else get`, retried a
 *   few times on conflict;
 * - an aged-out MAC: `if mod_revision == ours then delete` (only if still ours);
 * - re-publishing (new lease, start-up) never takes a MAC from another host:
 *   only fresh evidence from the switch does, so a stale host yields.
 *
 * One watch on `locations/` installs the other hosts' MACs in the sink; a
 * local MAC that another host has taken is dropped here (sink: toward it).
 * Duplicate detection (RFC 7432 §15.1): a MAC that changes hosts more than
 * `moves` times within `windowMs` is frozen for `holdMs`: this host no longer
 * claims it, and says so once in the log. One sweep timer, no timer per MAC.
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { Backoff } from '../util/backoff.js';
import type { EtcdConnection } from './etcd.js';
import { jsonObject } from './json-record.js';
import type { Clock } from './membership.js';
import { watchPrefix } from './watch.js';

/** Where other hosts' MACs go (the switch's static locations toward link ports). */
export interface LocationSink {
  /** `mac` on `network` is at `host` with mobility sequence number `seq`. */
  install(network: string, mac: string, host: string, seq: number): void;
  /** `mac` on `network` is no longer at `host` (withdrawn or its lease expired). */
  withdraw(network: string, mac: string, host: string): void;
}

/** A MAC event of the switch for a local port (learned, moved to another port, aged out). */
export interface MacEvent {
  type: 'learned' | 'moved' | 'forgotten';
  network: string;
  mac: string;
  port: string;
  /** True when `port` is a local port (not a link). Events of link ports are ignored. */
  local: boolean;
}

/** The switch side: its MAC events and the MACs of its local ports now. */
export interface MacSource {
  onMacEvent(fn: (ev: MacEvent) => void): () => void;
  localMacs(): { network: string; mac: string; port: string }[];
}

/** Duplicate-MAC detection (RFC 7432 §15.1 defaults: 5 moves in 180 s). */
export interface DampingOptions {
  /** Host changes of one MAC tolerated within the window (default 5). */
  moves?: number;
  /** Window in ms (default 180,000). */
  windowMs?: number;
  /** How long a flapping MAC stays frozen, in ms (default 180,000). */
  holdMs?: number;
}

export interface LocationsOptions {
  conn: EtcdConnection;
  host: string;
  logger: Logger;
  clock: Clock;
  sink: LocationSink;
  /** The host's current lease id (undefined while not registered). */
  leaseId: () => string | undefined;
  damping?: DampingOptions;
}

/** What the store says of one key. */
interface Entry {
  host: string;
  seq: number;
  rev: number;
}

/** A MAC on a local port. */
interface Local {
  network: string;
  mac: string;
  port: string;
  /** Our sequence number (0: not yet written). */
  seq: number;
  /** mod_revision of our last write (0: none). */
  rev: number;
  /** `lease|port|seq` of the last write, to skip a rewrite that changes nothing. */
  wrote: string;
  /** Fresh evidence from the switch: may take the MAC from another host. */
  claim: boolean;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const ATTEMPTS = 5;

function parseValue(buf: Buffer): { host: string; port: string; seq: number } | string {
  const v = jsonObject(buf);
  if (typeof v === 'string') return v;
  const { host, port, seq } = v;
  if (typeof host !== 'string' || host === '') return 'host is not a name';
  if (typeof port !== 'string') return 'port is not a string';
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return 'seq is not a positive integer';
  return { host, port, seq };
}

export class Locations {
  readonly #o: LocationsOptions;
  readonly #moves: number;
  readonly #windowMs: number;
  readonly #holdMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly #local = new Map<string, Local>();
  readonly #withdrawals = new Map<string, number>();
  readonly #inflight = new Set<string>();
  readonly #again = new Set<string>();
  readonly #pending = new Set<string>();
  readonly #hosts = new Map<string, string>();
  readonly #flaps = new Map<string, number[]>();
  readonly #frozen = new Map<string, number>();
  readonly #corrupt = new Set<string>();
  readonly #backoff = new Backoff(500, 10_000);
  #retry: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #watch: { close(): Promise<void> } | undefined;
  #ready!: () => void;
  readonly #readyP = new Promise<void>((r) => {
    this.#ready = r;
  });
  #sinkFailed = false;
  #closed = false;

  constructor(opts: LocationsOptions) {
    this.#o = opts;
    this.#moves = opts.damping?.moves ?? 5;
    this.#windowMs = opts.damping?.windowMs ?? 180_000;
    this.#holdMs = opts.damping?.holdMs ?? 180_000;
  }

  /** Starts the watch on `locations/` and the damping sweep. */
  start(): void {
    this.#watch = watchPrefix(this.#o.conn, 'locations/', {
      reset: (items) => {
        for (const k of [...this.#entries.keys()]) if (!items.has(k)) this.#deleted(k);
        for (const [k, it] of items) this.#put(k, it.value, it.modRevision);
        this.#ready();
      },
      put: (k, v, rev) => this.#put(k, v, rev),
      delete: (k) => this.#deleted(k),
    });
    this.#sweep = setInterval(() => this.#sweepFlaps(), Math.min(this.#windowMs, 60_000));
    this.#sweep.unref();
  }

  /** Resolves once the first full read of `locations/` has been applied. */
  ready(): Promise<void> {
    return this.#readyP;
  }

  /** Values under `locations/` skipped as corrupt, by key (relative to the prefix). */
  get corruptKeys(): readonly string[] {
    return [...this.#corrupt];
  }

  /** What the store says of a MAC now: its host and mobility sequence number. */
  lookup(network: string, mac: string): { host: string; seq: number } | undefined {
    const e = this.#entries.get(`${network}/${mac.toLowerCase()}`);
    return e ? { host: e.host, seq: e.seq } : undefined;
  }

  /**
   * Counts for metrics and the bench: local MACs (unwritten: not yet written
   * under the current lease), MACs known from the store, frozen MACs, corrupt
   * values skipped.
   */
  stats(): { local: number; unwritten: number; known: number; frozen: number; corrupt: number } {
    const lease = this.#o.leaseId();
    let unwritten = 0;
    for (const l of this.#local.values()) if (!l.wrote.startsWith(`${lease}|`)) unwritten++;
    return {
      local: this.#local.size,
      unwritten,
      known: this.#entries.size,
      frozen: this.#frozen.size,
      corrupt: this.#corrupt.size,
    };
  }

  /**
   * A MAC is on local port `port`. fresh: the switch just saw it there (learned,
   * moved, RARP), so it may be taken from another host with seq + 1; otherwise
   * (start-up) it is published only if no other host has it.
   */
  learn(network: string, mac: string, port: string, fresh: boolean): void {
    const m = mac.toLowerCase();
    if (!MAC_RE.test(m) || network === '' || network.includes('/')) {
      this.#o.logger.warn({ network, mac }, 'cluster: not publishing a MAC with a bad name');
      return;
    }
    const key = `${network}/${m}`;
    const l = this.#local.get(key);
    if (l) {
      l.port = port;
      l.claim ||= fresh;
    } else {
      this.#local.set(key, { network, mac: m, port, seq: 0, rev: 0, wrote: '', claim: fresh });
    }
    this.#sync(key);
  }

  /** A local MAC aged out (or its port went): withdraws it if the store still says it is ours. */
  forget(network: string, mac: string, port: string): void {
    const key = `${network}/${mac.toLowerCase()}`;
    const l = this.#local.get(key);
    if (!l || l.port !== port) return;
    this.#local.delete(key);
    if (l.rev) this.#withdrawals.set(key, l.rev);
    this.#sync(key);
  }

  /** After a new lease: writes every local MAC again under it (yielding those another host took). */
  republish(): void {
    for (const [key, l] of this.#local) {
      l.wrote = '';
      this.#sync(key);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearInterval(this.#sweep);
    await this.#watch?.close().catch(() => {});
  }

  #intern(host: string): string {
    const h = this.#hosts.get(host);
    if (h !== undefined) return h;
    this.#hosts.set(host, host);
    return host;
  }

  #split(key: string): [string, string] {
    const i = key.lastIndexOf('/');
    return [key.slice(0, i), key.slice(i + 1)];
  }

  #sink(what: 'install' | 'withdraw', key: string, host: string, seq: number): void {
    const [network, mac] = this.#split(key);
    try {
      if (what === 'install') this.#o.sink.install(network, mac, host, seq);
      else this.#o.sink.withdraw(network, mac, host);
    } catch (err) {
      if (!this.#sinkFailed) this.#o.logger.error({ err: describeError(err), key }, 'cluster: location sink failed');
      this.#sinkFailed = true;
    }
  }

  #put(key: string, value: Buffer, modRevision: string): void {
    const i = key.lastIndexOf('/');
    if (i <= 0 || !MAC_RE.test(key.slice(i + 1))) {
      this.#report(key, 'key is not <network>/<mac>');
      return;
    }
    const v = parseValue(value);
    if (typeof v === 'string') {
      this.#report(key, v);
      return;
    }
    const rev = Number(modRevision);
    const old = this.#entries.get(key);
    const prev = old && { host: old.host, seq: old.seq };
    if (old && old.host !== v.host) this.#countMove(key);
    if (old) {
      old.host = this.#intern(v.host);
      old.seq = v.seq;
      old.rev = rev;
    } else {
      this.#entries.set(key, { host: this.#intern(v.host), seq: v.seq, rev });
    }
    const self = this.#o.host;
    if (v.host === self) {
      const l = this.#local.get(key);
      if (l && rev >= l.rev) {
        l.seq = v.seq;
        l.rev = rev;
      }
      return;
    }
    if (!prev || prev.host !== v.host || prev.seq !== v.seq) this.#sink('install', key, v.host, v.seq);
    if (this.#local.has(key) && !this.#inflight.has(key)) this.#yield(key);
  }

  #deleted(key: string): void {
    const prev = this.#entries.get(key);
    if (!prev) return;
    this.#entries.delete(key);
    if (prev.host !== this.#o.host) {
      this.#sink('withdraw', key, prev.host, prev.seq);
      return;
    }
    // Our key vanished (deleted by hand, or an old lease of ours expired): write it again.
    const l = this.#local.get(key);
    if (l && l.rev <= prev.rev) {
      l.rev = 0;
      l.wrote = '';
      this.#sync(key);
    }
  }

  /** Another host holds a MAC we had: stop claiming it; the sink already points at them. */
  #yield(key: string): void {
    const e = this.#entries.get(key);
    const l = this.#local.get(key);
    // Fresh evidence from the switch (l.claim) is acted on by #apply, which takes the MAC back with seq + 1.
    if (!e || !l || l.claim || e.host === this.#o.host || e.rev <= l.rev) return;
    this.#local.delete(key);
    this.#o.logger.debug({ key, host: e.host, seq: e.seq }, 'cluster: a local MAC is now at another host');
  }

  #report(key: string, reason: string): void {
    if (this.#corrupt.has(key)) return;
    if (this.#corrupt.size < 10_000) this.#corrupt.add(key);
    this.#o.logger.warn({ key: `locations/${key}`, reason }, 'cluster: skipping a corrupt location');
  }

  #countMove(key: string): void {
    const now = this.#o.clock.now();
    const times = (this.#flaps.get(key) ?? []).filter((t) => t > now - this.#windowMs);
    times.push(now);
    this.#flaps.set(key, times);
    if (times.length > this.#moves && !this.#frozen.has(key)) {
      this.#frozen.set(key, now + this.#holdMs);
      const [network, mac] = this.#split(key);
      this.#o.logger.warn(
        { network, mac, moves: times.length, windowMs: this.#windowMs, holdMs: this.#holdMs },
        'cluster: MAC moves between hosts too often (duplicate MAC?): frozen, this host stops claiming it',
      );
    }
  }

  #isFrozen(key: string): boolean {
    const until = this.#frozen.get(key);
    if (until === undefined) return false;
    if (this.#o.clock.now() < until) return true;
    this.#frozen.delete(key);
    this.#flaps.delete(key);
    return false;
  }

  #sweepFlaps(): void {
    const now = this.#o.clock.now();
    for (const [key, times] of this.#flaps) if ((times.at(-1) ?? 0) <= now - this.#windowMs) this.#flaps.delete(key);
    for (const key of this.#frozen.keys()) this.#isFrozen(key);
  }

  /** Makes the store match this host's intent for `key`; one operation per key at a time. */
  #sync(key: string): void {
    if (this.#closed) return;
    if (this.#inflight.has(key)) {
      this.#again.add(key);
      return;
    }
    this.#inflight.add(key);
    this.#pending.delete(key);
    this.#apply(key)
      .catch((err) => {
        this.#pending.add(key);
        this.#o.logger.debug({ key, err: describeError(err) }, 'cluster: location write failed; will retry');
        this.#scheduleRetry();
      })
      .finally(() => {
        this.#inflight.delete(key);
        if (this.#local.has(key)) this.#yield(key);
        if (this.#again.delete(key)) this.#sync(key);
      });
  }

  #scheduleRetry(): void {
    if (this.#retry || this.#closed) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      const keys = [...this.#pending];
      for (const k of keys) this.#sync(k);
    }, this.#backoff.next());
  }

  async #apply(key: string): Promise<void> {
    const { conn } = this.#o;
    const k = `locations/${key}`;
    const l = this.#local.get(key);
    if (!l) {
      const rev = this.#withdrawals.get(key);
      if (rev === undefined) return;
      await conn.run('withdraw a location', () =>
        conn.kv.if(k, 'Mod', '==', rev).then(conn.kv.delete().key(k)).commit(),
      );
      this.#withdrawals.delete(key);
      return;
    }
    this.#withdrawals.delete(key);
    const lease = this.#o.leaseId();
    if (lease === undefined) return; // republished when the lease comes
    if (l.wrote === `${lease}|${l.port}|${l.seq}`) return;
    // First guess from what we know: ours at l.rev, or absent.
    let cmp: ['Create' | 'Mod', number] = l.rev ? ['Mod', l.rev] : ['Create', 0];
    let seq = l.seq || 1;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const value = JSON.stringify({ host: this.#o.host, port: l.port, seq });
      const port = l.port;
      const res = await conn.run('publish a location', () =>
        conn.kv
          .if(k, cmp[0], '==', cmp[1])
          .then(conn.kv.put(k).value(value).lease(lease))
          .else(conn.kv.get(k))
          .commit(),
      );
      if (res.succeeded) {
        const rev = Number(res.header.revision);
        if (this.#local.get(key) === l) {
          l.seq = seq;
          l.rev = rev;
          l.wrote = `${lease}|${port}|${seq}`;
          l.claim = false;
        } else {
          this.#withdrawals.set(key, rev); // forgotten meanwhile: the next round deletes it
          this.#again.add(key);
        }
        return;
      }
      if (this.#local.get(key) !== l) return;
      const cur = res.responses[0]?.response_range?.kvs[0];
      if (!cur) {
        cmp = ['Create', 0];
        continue;
      }
      cmp = ['Mod', Number(cur.mod_revision)];
      const v = parseValue(cur.value);
      if (typeof v === 'string' || v.host === this.#o.host) {
        seq = typeof v === 'string' ? seq : v.seq;
        continue;
      }
      // Another host has it.
      if (!l.claim || this.#isFrozen(key)) {
        this.#local.delete(key); // the watch installs it toward its owner
        return;
      }
      seq = v.seq + 1;
    }
    throw new Error(`gave up after ${ATTEMPTS} conflicting writes`);
  }
}
