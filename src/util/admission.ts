/**
 * Connection admission for a listener (NBD server, link listener, control
 * API): who may hold a connection before it has proved anything.
 *
 * - TCP clients share the listener's budget (`maxConnections`) and each
 *   source (an IPv4 address, or an IPv6 /64) has its own smaller one
 *   (`maxPerSource`), so one source cannot fill the listener.
 * - Unix-socket clients have a budget of their own (`maxUnix`): a TCP flood
 *   never locks out local clients.
 * - `allowed` (a listener's `allowed_clients`) is checked first, before any
 *   byte is read.
 * - A connection is *pending* until its owner calls
 *   {@link AdmissionTicket.established} (NBD handshake done, link hello
 *   checked, first HTTP request read); one still pending after
 *   `handshakeTimeoutMs` is closed. A full budget makes room by closing a
 *   pending connection (`evicted`): for TCP the oldest one of the source
 *   holding the most connections, so a flood evicts itself before a lone
 *   peer in its handshake; for unix the oldest. Only when every connection
 *   is established is the new one refused (`listener_full`).
 *
 * What is refused or closed is counted per reason and reported in one log
 * line per `logIntervalMs` at most, never one per connection.
 *
 * {@link Admission} is pure bookkeeping (clock injected, no timers, no
 * sockets); {@link AdmissionGate} adds the one timer per listener that
 * expires pending connections and flushes the report.
 */
import type { Logger } from '../log.js';

/** Why a connection was refused at accept or closed before it was established. */
export type Refusal = 'not_allowed' | 'per_source' | 'listener_full' | 'evicted' | 'handshake_timeout';

/** Every {@link Refusal}, in report order. */
const REFUSALS: readonly Refusal[] = ['not_allowed', 'per_source', 'listener_full', 'evicted', 'handshake_timeout'];

/** The limits of one listener. */
export interface AdmissionLimits {
  /** TCP connections at once, pending and established. */
  maxConnections: number;
  /** TCP connections at once from one source (an IPv4 address, or an IPv6 /64). */
  maxPerSource: number;
  /** Unix-socket connections at once (a budget apart from TCP's). */
  maxUnix: number;
  /** A connection must be established within this many ms or it is closed. */
  handshakeTimeoutMs: number;
  /** Whether a TCP client address may connect at all; undefined: every address. Unix clients always may. */
  allowed?: ((address: string) => boolean) | undefined;
}

/** Counters and occupancy of one listener, as the API shows them. */
export interface AdmissionStatus {
  /** TCP connections now. */
  tcp: number;
  /** Unix-socket connections now. */
  unix: number;
  /** Connections not established yet (both kinds). */
  pending: number;
  /** Connections refused or closed since start, by reason. */
  refused: Record<Refusal, number>;
}

/** One admitted connection's place in the budget. */
export interface AdmissionTicket {
  /** The source key (see {@link sourceKey}); undefined for a unix-socket client. */
  readonly source: string | undefined;
  /** The connection proved itself: no handshake deadline, never evicted. */
  established(): void;
  /** The connection is gone: its place is free again. Idempotent. */
  release(): void;
}

/**
 * The key a TCP client address is counted under: an IPv4 address as is
 * (IPv4-mapped IPv6 too), an IPv6 address by its /64 (one subscriber's
 * prefix), e.g. `2001:db8:0:1::/64`.
 */
export function sourceKey(address: string): string {
  const a = address.replace(/%.*$/, '').toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1];
  if (mapped !== undefined) return mapped;
  if (!a.includes(':')) return a;
  // Expand `::` to the zero groups it stands for (a dotted-quad tail is two groups).
  const [head = '', tail] = a.split('::', 2) as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const width = (gs: string[]) => gs.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const gap = tail === undefined ? 0 : Math.max(0, 8 - width(left) - width(right));
  const all = [...left, ...Array<string>(gap).fill('0'), ...right];
  const first = all.slice(0, 4).map((g) => (g.includes('.') ? '0' : (Number.parseInt(g, 16) || 0).toString(16)));
  while (first.length < 4) first.push('0');
  return `${first.join(':')}::/64`;
}

interface Entry extends AdmissionTicket {
  readonly deadline: number;
  readonly close: () => void;
  pending: boolean;
  released: boolean;
}

/** Options of {@link Admission}. */
export interface AdmissionOptions {
  limits: AdmissionLimits;
  /** ms clock; default performance.now. */
  clock?: () => number;
}

/** The bookkeeping of one listener's admission (no timers; see {@link AdmissionGate}). */
export class Admission {
  readonly limits: AdmissionLimits;
  readonly #clock: () => number;
  #tcp = 0;
  #unix = 0;
  readonly #perSource = new Map<string, number>();
  /** Pending connections in arrival order (= deadline order): TCP and unix apart, for eviction. */
  readonly #pendingTcp = new Set<Entry>();
  readonly #pendingUnix = new Set<Entry>();
  readonly #refused = zeroCounts();
  /** Refusals since the last report. */
  readonly #unreported = zeroCounts();
  #unreportedTotal = 0;

  constructor(opts: AdmissionOptions) {
    this.limits = opts.limits;
    this.#clock = opts.clock ?? (() => performance.now());
  }

  /**
   * A connection arrived from `address` (undefined: a unix-socket client).
   * Returns its ticket, or why it is refused (the caller closes it at once).
   * `close` closes the connection; it is called when the connection is
   * evicted or misses its deadline (its ticket is already released then).
   */
  admit(address: string | undefined, close: () => void): AdmissionTicket | Refusal {
    const l = this.limits;
    if (address === undefined) {
      if (this.#unix >= l.maxUnix && !this.#evict(this.#pendingUnix)) return this.#refuse('listener_full');
      this.#unix++;
      return this.#enter(undefined, close);
    }
    if (l.allowed && !l.allowed(address)) return this.#refuse('not_allowed');
    const key = sourceKey(address);
    if ((this.#perSource.get(key) ?? 0) >= l.maxPerSource) return this.#refuse('per_source');
    if (this.#tcp >= l.maxConnections && !this.#evict(this.#pendingTcp)) return this.#refuse('listener_full');
    this.#tcp++;
    this.#perSource.set(key, (this.#perSource.get(key) ?? 0) + 1);
    return this.#enter(key, close);
  }

  #enter(source: string | undefined, close: () => void): AdmissionTicket {
    const pending = source === undefined ? this.#pendingUnix : this.#pendingTcp;
    const e: Entry = {
      source,
      deadline: this.#clock() + this.limits.handshakeTimeoutMs,
      close,
      pending: true,
      released: false,
      established: () => {
        if (!e.pending) return;
        e.pending = false;
        pending.delete(e);
      },
      release: () => this.#release(e),
    };
    pending.add(e);
    return e;
  }

  #release(e: Entry): void {
    if (e.released) return;
    e.released = true;
    e.established();
    if (e.source === undefined) {
      this.#unix--;
      return;
    }
    this.#tcp--;
    const n = (this.#perSource.get(e.source) ?? 1) - 1;
    if (n > 0) this.#perSource.set(e.source, n);
    else this.#perSource.delete(e.source);
  }

  /**
   * Closes a pending connection of `pending` to make room: the oldest one of
   * the source holding the most connections (unix: the oldest); false when
   * none is pending. O(pending), bounded by the listener's cap.
   */
  #evict(pending: Set<Entry>): boolean {
    let victim: Entry | undefined;
    let most = 0;
    for (const e of pending) {
      if (e.source === undefined) {
        victim = e;
        break;
      }
      // Oldest first: a later entry wins only with strictly more connections at its source.
      const n = this.#perSource.get(e.source) ?? 0;
      if (n > most) {
        most = n;
        victim = e;
      }
    }
    if (!victim) return false;
    this.#drop(victim, 'evicted');
    return true;
  }

  #drop(e: Entry, why: Refusal): void {
    this.#release(e);
    this.#refuse(why);
    e.close();
  }

  #refuse(why: Refusal): Refusal {
    this.#refused[why]++;
    this.#unreported[why]++;
    this.#unreportedTotal++;
    return why;
  }

  /** Closes every pending connection past its deadline; returns how many. */
  expire(): number {
    const now = this.#clock();
    let n = 0;
    for (const pending of [this.#pendingTcp, this.#pendingUnix]) {
      for (const e of pending) {
        if (e.deadline > now) break;
        this.#drop(e, 'handshake_timeout');
        n++;
      }
    }
    return n;
  }

  /** The earliest deadline of a pending connection (clock ms), or undefined when none is pending. */
  nextDeadline(): number | undefined {
    const t = this.#pendingTcp.values().next().value?.deadline;
    const u = this.#pendingUnix.values().next().value?.deadline;
    if (t === undefined) return u;
    return u === undefined ? t : Math.min(t, u);
  }

  /** Refusals since the last call (only reasons that occurred), and their total; resets them. */
  takeUnreported(): { total: number; counts: Partial<Record<Refusal, number>> } {
    const counts: Partial<Record<Refusal, number>> = {};
    for (const r of REFUSALS) {
      if (this.#unreported[r] > 0) counts[r] = this.#unreported[r];
      this.#unreported[r] = 0;
    }
    const total = this.#unreportedTotal;
    this.#unreportedTotal = 0;
    return { total, counts };
  }

  /** True when refusals wait to be reported. */
  get unreported(): number {
    return this.#unreportedTotal;
  }

  status(): AdmissionStatus {
    return {
      tcp: this.#tcp,
      unix: this.#unix,
      pending: this.#pendingTcp.size + this.#pendingUnix.size,
      refused: { ...this.#refused },
    };
  }
}

function zeroCounts(): Record<Refusal, number> {
  return { not_allowed: 0, per_source: 0, listener_full: 0, evicted: 0, handshake_timeout: 0 };
}

/** Options of {@link AdmissionGate}. */
export interface AdmissionGateOptions {
  /** The listener in log lines, e.g. `NBD server`, `link listener`, `control API`. */
  name: string;
  limits: AdmissionLimits;
  logger: Logger;
  /** Config field to raise for each limit, named in the report (e.g. `storage.max_connections_per_source`). */
  fields?: Partial<Record<Refusal, string>> | undefined;
  /** At most one report line per this many ms; default 10000. */
  logIntervalMs?: number | undefined;
}

/**
 * An {@link Admission} with its timers: one for the earliest handshake
 * deadline, one for the next report. Both are unref'd.
 */
export class AdmissionGate {
  readonly admission: Admission;
  readonly #o: AdmissionGateOptions;
  readonly #interval: number;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #reportTimer: NodeJS.Timeout | undefined;
  #lastReport = Number.NEGATIVE_INFINITY;
  #closed = false;

  constructor(opts: AdmissionGateOptions) {
    this.#o = opts;
    this.#interval = opts.logIntervalMs ?? 10_000;
    this.admission = new Admission({ limits: opts.limits });
  }

  /**
   * Admits a connection from `address` (undefined: unix socket) or refuses it
   * (the caller closes it at once). See {@link Admission.admit}.
   */
  admit(address: string | undefined, close: () => void): AdmissionTicket | Refusal {
    const r = this.admission.admit(address, close);
    this.#arm();
    return r;
  }

  status(): AdmissionStatus {
    return this.admission.status();
  }

  /** Stops the timers (reporting what is left); pending connections are the owner's to close. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#deadlineTimer);
    clearTimeout(this.#reportTimer);
    if (this.admission.unreported > 0) this.#report();
  }

  #arm(): void {
    if (this.#closed) return;
    const now = performance.now();
    if (this.admission.unreported > 0 && this.#reportTimer === undefined) {
      const wait = this.#lastReport + this.#interval - now;
      if (wait <= 0) this.#report();
      else {
        this.#reportTimer = setTimeout(() => {
          this.#reportTimer = undefined;
          this.#report();
        }, wait);
        this.#reportTimer.unref();
      }
    }
    const next = this.admission.nextDeadline();
    if (next !== undefined && this.#deadlineTimer === undefined) {
      // +1: a timer may fire a fraction of a ms early by the performance clock.
      this.#deadlineTimer = setTimeout(
        () => {
          this.#deadlineTimer = undefined;
          this.admission.expire();
          this.#arm();
        },
        Math.max(0, next - now) + 1,
      );
      this.#deadlineTimer.unref();
    }
  }

  #report(): void {
    const { total, counts } = this.admission.takeUnreported();
    if (total === 0) return;
    const now = performance.now();
    const since = Number.isFinite(this.#lastReport)
      ? ` in the last ${Math.round((now - this.#lastReport) / 1000)} s`
      : '';
    this.#lastReport = now;
    const l = this.#o.limits;
    const limit: Record<Refusal, string> = {
      not_allowed: 'not in allowed_clients',
      per_source: `${l.maxPerSource} per source`,
      listener_full: [l.maxConnections > 0 ? `${l.maxConnections} TCP` : '', l.maxUnix > 0 ? `${l.maxUnix} unix` : '']
        .filter(Boolean)
        .join(' / '),
      evicted: 'a pending one closed for a new one',
      handshake_timeout: `${l.handshakeTimeoutMs} ms`,
    };
    const parts = REFUSALS.filter((r) => counts[r] !== undefined).map((r) => {
      const field = this.#o.fields?.[r];
      return `${r} ${counts[r]} (${limit[r]}${field ? `; ${field}` : ''})`;
    });
    this.#o.logger.warn(
      { listener: this.#o.name, refused: counts },
      `${this.#o.name}: refused or closed ${total} connection${total === 1 ? '' : 's'}${since}: ${parts.join(', ')}`,
    );
  }
}

/** Type guard: the answer of {@link Admission.admit} is a refusal. */
export function isRefusal(r: AdmissionTicket | Refusal): r is Refusal {
  return typeof r === 'string';
}
