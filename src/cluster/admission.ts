/**
 * Fabric admission: QoS reservations that share one capacity (an overlay link
 * between two hosts, the same capacity seen from both ends) are admitted in
 * one etcd transaction, so two hosts cannot together admit more than it
 * carries. The local check (qos/admission.ts) runs first; this one sees every
 * host's reservations.
 *
 * One key per shared capacity, relative to the fabric prefix:
 *
 *   admission/<link-key> = { capacity_bps, capacities: { <host>: bps }, reservations: { "<host>/<port>": bps } }
 *
 * `<link-key>` names the capacity: {@link pairKey} for a link between two
 * hosts (sorted host ids), or any name the hosts sharing it agree on. Each
 * host states the capacity it knows in `capacities` when it admits;
 * `capacity_bps` is the smallest of them (a capacity is raised only when
 * every host that stated it agrees).
 *
 * A change is a transaction comparing the key's mod_revision (0 when absent);
 * when another host wrote first, its `else` branch returns the new value and
 * the change is decided again (at most {@link ROUNDS} times). On one host the
 * changes waiting for the same key go together in one transaction, so a burst
 * of requests costs a few round trips and hosts only race each other; after
 * its own write a host waits a random 0-{@link TURN_MS} ms before its next
 * transaction on that key, so a host that lost a race wins the next one.
 *
 * A refusal is a QosAdmissionError (ERR_QOS_ADMISSION) naming the link, its
 * capacity, the sum reserved fabric-wide and by whom. etcd away, an operation
 * timed out: ClusterUnavailableError; a corrupt value at the key:
 * ClusterRecordCorruptError (both ERR_CLUSTER_UNAVAILABLE, 503), nothing
 * changed. A corrupt value is never read as "nothing reserved": that link
 * admits nothing until the key is fixed or deleted (logged once per
 * revision). The key changing under every one of {@link ROUNDS}
 * transactions: ClusterConflictError (ERR_CLUSTER_CONFLICT, 409), ask again.
 *
 * A host that dies leaves its reservations behind: whoever sees its
 * `alive/<host>` key go (the membership watch) calls {@link
 * FabricAdmission.sweep} with the hosts still alive, which removes the dead
 * hosts' reservations and stated capacities in the same kind of transaction.
 * A host that comes back prunes its entries of ports it no longer has
 * ({@link FabricAdmission.prune}) and admits its ports again (its own
 * entries are replaced, not added to). So does a host whose alive key was
 * lost and written again (an etcd outage longer than the lease): the others
 * may have swept it meanwhile.
 */
import type { Namespace } from 'etcd3';
import { describeError, VmlinkError } from '../errors.js';
import type { Logger } from '../log.js';
import { type AdmissionRecord, type Change, decide, hostOf, parseRecord, sum } from './admission-record.js';
import { ClusterConflictError, ClusterRecordCorruptError, ClusterUnavailableError } from './errors.js';

/** Transactions tried per batch of changes before giving up (the key changed under us each time). */
const ROUNDS = 20;
const DIR = 'admission/';
/** After writing a key, this host waits up to this long (random) before its next transaction on it. */
const TURN_MS = 10;
const KEY_RE = /^[A-Za-z0-9_.~:-]{1,200}$/;

/** One key of `view()`: the record, or why it cannot be used. */
export interface AdmissionKeyView {
  link: string;
  record?: AdmissionRecord & { reserved_bps: number };
  /** Set when the value is not a valid record: the link admits nothing until it is fixed. */
  problem?: string;
}

export interface FabricAdmission {
  /**
   * Reserves `bps` for port `who` of this host on the capacity `linkKey`
   * (this host knows it as `capacityBps`), replacing the port's earlier
   * reservation there; `bps` 0 releases it. Throws QosAdmissionError when the
   * fabric's reservations would exceed the capacity, ClusterUnavailableError
   * when etcd cannot decide; nothing changed then.
   */
  admit(linkKey: string, capacityBps: number, who: string, bps: number): Promise<void>;
  /** Removes port `who`'s reservation on `linkKey` (none: nothing to do). */
  release(linkKey: string, who: string): Promise<void>;
  /**
   * Reserves `bps` for `who` on every link, in order; when one refuses, the
   * links already changed get their earlier reservation back and the refusal
   * is thrown.
   */
  reserve(links: readonly { key: string; capacityBps: number }[], who: string, bps: number): Promise<void>;
  /** Every admission key under the prefix. */
  view(): Promise<AdmissionKeyView[]>;
  /**
   * Removes the reservations and stated capacities of hosts not in `alive`
   * (run by whoever sees an `alive/<host>` key go); answers how many
   * reservations went. A link that could not be swept is logged and the first
   * such failure thrown after the others were tried.
   */
  sweep(alive: ReadonlySet<string>): Promise<number>;
  /**
   * Removes this host's reservations that `keep` (link key -> port names)
   * does not hold: run at start-up, before the ports admit again, so a port
   * deleted while the daemon was down leaves nothing reserved. Answers how
   * many went; failures as {@link sweep}.
   */
  prune(keep: ReadonlyMap<string, ReadonlySet<string>>): Promise<number>;
}

export interface FabricAdmissionOptions {
  /** The fabric's namespace (EtcdConnection.kv). */
  kv: Namespace;
  /** This host's id. */
  host: string;
  logger: Logger;
  /** Deadline of each etcd operation, ms; default 3000 (unused with `run`). */
  opTimeoutMs?: number;
  /** Runs each etcd operation (EtcdConnection.run: its deadline, its health state); default a deadline of `opTimeoutMs`. */
  run?: <T>(what: string, op: () => Promise<T>) => Promise<T>;
}

/** The key of the capacity of a link between hosts `a` and `b`: the same from both ends. */
export function pairKey(a: string, b: string): string {
  return a < b ? `${a}~${b}` : `${b}~${a}`;
}

interface Pending {
  change: Change;
  resolve: (c: Change) => void;
  reject: (err: Error) => void;
}

interface Current {
  /** The key's mod_revision, '0' when absent. */
  rev: string;
  record: AdmissionRecord | undefined;
  /** Why the stored value is not a record. */
  problem?: string | undefined;
}

export function createFabricAdmission(opts: FabricAdmissionOptions): FabricAdmission {
  return new EtcdAdmission(opts);
}

class EtcdAdmission implements FabricAdmission {
  readonly #kv: Namespace;
  readonly #host: string;
  readonly #log: Logger;
  readonly #timeout: number;
  readonly #run: (<T>(what: string, op: () => Promise<T>) => Promise<T>) | undefined;
  /** Per key: the changes waiting, and whether a transaction is under way. */
  readonly #queues = new Map<string, { waiting: Pending[]; busy: boolean }>();
  /** When this host last wrote each key (performance.now()); pruned as it grows. */
  readonly #wrote = new Map<string, number>();
  /** Corrupt values already reported, `key@revision`. */
  readonly #reported = new Set<string>();

  constructor(o: FabricAdmissionOptions) {
    this.#kv = o.kv;
    this.#host = o.host;
    this.#log = o.logger;
    this.#timeout = o.opTimeoutMs ?? 3000;
    this.#run = o.run;
  }

  async admit(linkKey: string, capacityBps: number, who: string, bps: number): Promise<void> {
    await this.#set(linkKey, capacityBps, who, bps);
  }

  async release(linkKey: string, who: string): Promise<void> {
    await this.#set(linkKey, 0, who, 0);
  }

  async reserve(links: readonly { key: string; capacityBps: number }[], who: string, bps: number): Promise<void> {
    const done: { key: string; capacityBps: number; previous: number }[] = [];
    try {
      for (const l of links) done.push({ ...l, previous: await this.#set(l.key, l.capacityBps, who, bps) });
    } catch (err) {
      for (const d of done.reverse()) {
        try {
          await this.#set(d.key, d.capacityBps, who, d.previous);
        } catch (undo) {
          // Left reserved: too much, never too little; the port's next request or release puts it right.
          this.#log.warn(
            { link: d.key, port: who, err: describeError(undo) },
            `could not put back the reservation of port "${who}" on link "${d.key}" after a refusal: it stays reserved until the port's next request`,
          );
        }
      }
      throw err;
    }
  }

  async view(): Promise<AdmissionKeyView[]> {
    const all = await this.#op('list the admission records', () => this.#kv.getAll().prefix(DIR).buffers());
    const out: AdmissionKeyView[] = [];
    for (const [full, value] of Object.entries(all)) {
      const link = full.slice(full.lastIndexOf('/') + 1);
      const r = parseRecord(value);
      if (typeof r === 'string') out.push({ link, problem: r });
      else out.push({ link, record: { ...r, reserved_bps: sum(r.reservations) } });
    }
    return out.sort((a, b) => (a.link < b.link ? -1 : 1));
  }

  async sweep(alive: ReadonlySet<string>): Promise<number> {
    const gone = (h: string) => !alive.has(h);
    const removed = await this.#drop('sweep', (who) => gone(hostOf(who)), gone);
    if (removed) this.#log.info({ removed }, `admission: removed ${removed} reservations of hosts that are gone`);
    return removed;
  }

  async prune(keep: ReadonlyMap<string, ReadonlySet<string>>): Promise<number> {
    const mine = `${this.#host}/`;
    return this.#drop(
      'prune',
      (who, link) => who.startsWith(mine) && !keep.get(link)?.has(who.slice(mine.length)),
      () => false,
    );
  }

  /** Drops the reservations and capacities picked on every link that has some; answers how many reservations went. */
  async #drop(
    what: string,
    reservation: (who: string, link: string) => boolean,
    capacity: (host: string) => boolean,
  ): Promise<number> {
    const links = (await this.view()).filter(
      ({ link, record: r }) =>
        r &&
        (Object.keys(r.reservations).some((w) => reservation(w, link)) || Object.keys(r.capacities).some(capacity)),
    );
    let removed = 0;
    let first: unknown;
    for (const { link } of links) {
      try {
        const c = await this.#enqueue(link, { kind: 'drop', reservation: (w) => reservation(w, link), capacity });
        if (c.kind === 'drop') removed += c.removed ?? 0;
      } catch (err) {
        first ??= err;
        this.#log.warn({ link, err: describeError(err) }, `admission ${what} of link "${link}" failed`);
      }
    }
    if (first !== undefined) throw first;
    return removed;
  }

  /** Sets `who`'s reservation on `link` (0: none); answers the one it replaced (0: none). */
  async #set(link: string, capacity: number, who: string, bps: number): Promise<number> {
    if (!KEY_RE.test(link))
      throw new Error(`admission link key "${link}" must be 1-200 of: letters, digits, _ . ~ : -`);
    if (!Number.isFinite(bps) || bps < 0) throw new Error(`reservation ${bps} of port "${who}" is not a rate`);
    const c = await this.#enqueue(link, { kind: 'set', who: `${this.#host}/${who}`, bps, capacity });
    return c.kind === 'set' ? (c.previous ?? 0) : 0;
  }

  #enqueue(link: string, change: Change): Promise<Change> {
    return new Promise((resolve, reject) => {
      let q = this.#queues.get(link);
      if (!q) {
        q = { waiting: [], busy: false };
        this.#queues.set(link, q);
      }
      q.waiting.push({ change, resolve, reject });
      if (!q.busy) void this.#drain(link, q);
    });
  }

  /** Runs the key's waiting changes, a batch per transaction, until none wait. */
  async #drain(link: string, q: { waiting: Pending[]; busy: boolean }): Promise<void> {
    q.busy = true;
    let cur: Current | undefined;
    try {
      while (q.waiting.length) {
        // Right after our own write to this key, give other hosts a turn (and let our burst gather).
        const since = performance.now() - (this.#wrote.get(link) ?? Number.NEGATIVE_INFINITY);
        if (since < TURN_MS) await new Promise((r) => setTimeout(r, Math.random() * TURN_MS));
        const batch = q.waiting.splice(0);
        cur = await this.#commit(link, batch, cur);
      }
    } finally {
      q.busy = false;
      this.#queues.delete(link);
    }
  }

  /**
   * Decides `batch` against the key's value and writes the outcome if the key
   * is still at that revision; else decides again on the value the failed
   * transaction read. Settles every change of the batch; answers what the key
   * holds after.
   */
  async #commit(link: string, batch: Pending[], known: Current | undefined): Promise<Current | undefined> {
    const key = DIR + link;
    try {
      let cur = known ?? (await this.#read(link));
      for (let round = 1; ; round++) {
        if (cur.problem !== undefined) {
          const err = new ClusterRecordCorruptError(
            key,
            cur.problem,
            `link "${link}" admits and releases no reservation (the record is rebuilt as ports ask again once it is deleted)`,
          );
          for (const p of batch) p.reject(err);
          return undefined;
        }
        const { record, outcomes } = decide(
          link,
          cur.record,
          batch.map((p) => p.change),
          this.#host,
        );
        const write =
          record === undefined ? this.#kv.delete().key(key) : this.#kv.put(key).value(JSON.stringify(record));
        const changed = JSON.stringify(record) !== JSON.stringify(cur.record);
        const txn = this.#kv.if(key, 'Mod', '==', cur.rev);
        if (changed) txn.then(write);
        const res = await this.#op(`admit a reservation on link "${link}"`, () =>
          txn
            .else(this.#kv.get(key))
            .options({ deadline: Date.now() + this.#timeout })
            .commit(),
        );
        if (res.succeeded) {
          if (changed) this.#noteWrite(link);
          outcomes.forEach((o, i) => {
            const p = batch[i] as Pending;
            if (o instanceof Error) p.reject(o);
            else p.resolve(o);
          });
          return { rev: changed ? (record ? res.header.revision : '0') : cur.rev, record };
        }
        cur = this.#current(link, res.responses[0]?.response_range?.kvs[0]);
        if (round >= ROUNDS) {
          const err = new ClusterConflictError(
            `the admission record of link "${link}" changed under every one of ${ROUNDS} transactions (other hosts admitting on it at once)`,
            'ask again',
          );
          for (const p of batch) p.reject(err);
          return cur;
        }
        // The value came back with the failed transaction: decide again at once, with a little jitter after a few rounds.
        if (round > 10) await new Promise((r) => setTimeout(r, Math.random() * TURN_MS));
      }
    } catch (err) {
      const e =
        err instanceof VmlinkError
          ? err
          : new ClusterUnavailableError(`admit on link "${link}"`, describeError(err), { cause: err });
      for (const p of batch) p.reject(e);
      return undefined;
    }
  }

  #noteWrite(link: string): void {
    const now = performance.now();
    if (this.#wrote.size > 1024) for (const [k, t] of this.#wrote) if (now - t > TURN_MS) this.#wrote.delete(k);
    this.#wrote.set(link, now);
  }

  async #read(link: string): Promise<Current> {
    const res = await this.#op(`read the admission record of link "${link}"`, () =>
      this.#kv
        .get(DIR + link)
        .options({ deadline: Date.now() + this.#timeout })
        .exec(),
    );
    return this.#current(link, res.kvs[0]);
  }

  #current(link: string, kv: { value: Buffer; mod_revision: string } | undefined): Current {
    if (!kv) return { rev: '0', record: undefined };
    const r = parseRecord(kv.value);
    if (typeof r !== 'string') return { rev: kv.mod_revision, record: r };
    const seen = `${link}@${kv.mod_revision}`;
    if (!this.#reported.has(seen)) {
      this.#reported.add(seen);
      this.#log.error(
        { key: DIR + link, revision: kv.mod_revision, reason: r },
        `admission record ${DIR}${link} is corrupt (${r}): link "${link}" admits no reservation until it is fixed or deleted`,
      );
    }
    return { rev: kv.mod_revision, record: undefined, problem: r };
  }

  /** One etcd operation with a deadline; any failure is ClusterUnavailableError naming `what`. */
  async #op<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.#run) return this.#run(what, op);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ClusterUnavailableError(what, `no answer within ${this.#timeout} ms`)),
        this.#timeout + 100,
      );
    });
    try {
      return await Promise.race([op(), late]);
    } catch (err) {
      if (err instanceof VmlinkError) throw err;
      throw new ClusterUnavailableError(what, describeError(err), { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}
