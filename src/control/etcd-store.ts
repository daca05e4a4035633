/**
 * The etcd state store: the StateStore of a host in a fabric, over the keys
 * of docs/cluster.md (relative to the connection's prefix, values JSON):
 *
 *   networks/<name>         fabric-wide: every host sees the same networks
 *   vnis/<vni>              the name of the network holding that VNI (keeps VNIs unique across hosts)
 *   ports/<host>/<name>     this host's ports; likewise exports/<host>/ and links/<host>/
 *
 * Every write is one etcd request or transaction. A network is stored with
 * compare-and-swap on its key and on its VNI's key, so two hosts cannot give
 * one VNI to two networks. When etcd is away, every call rejects with
 * ERR_CLUSTER_UNAVAILABLE at once (a refused connection) or within the
 * connection's operation deadline (a silent one); nothing hangs in retries.
 *
 * A value that is not a JSON object named as its key is reported once per
 * key (a warning, and `corrupt` for status) and skipped: load() leaves it
 * out, watch() keeps the last good value. The store stays usable.
 *
 * The store does not own the connection: close() stops its watches only.
 */
import type { IKeyValue } from 'etcd3';
import { ClusterConflictError } from '../cluster/errors.js';
import type { EtcdConnection } from '../cluster/etcd.js';
import { type PrefixWatch, watchPrefix } from '../cluster/watch.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { VniInUseError } from '../net/errors.js';
import type { StateStore, StoredItem, StoredState } from './store.js';

const KINDS = ['networks', 'ports', 'exports', 'links'] as const;
type Kind = (typeof KINDS)[number];
const SINGULAR: Record<Kind, string> = { networks: 'network', ports: 'port', exports: 'export', links: 'link' };

/** Items per import transaction (networks: two comparisons and two puts each), under etcd's --max-txn-ops (128). */
const IMPORT_CHUNK = 50;
const PUT_CHUNK = 100;
/** Attempts of a compare-and-swap write before giving up on a key that keeps changing. */
const CAS_ATTEMPTS = 5;

export interface EtcdStoreOptions {
  conn: EtcdConnection;
  /** This host's id: its ports, exports and links live under `<kind>/<host>/`. */
  host: string;
  logger: Logger;
  /** watch(): changes within this window reach onChange as one call; default 50 ms. */
  debounceMs?: number;
}

/** A skipped value: its key relative to the prefix (e.g. `networks/lan`) and why. */
export interface CorruptValue {
  key: string;
  reason: string;
}

export interface EtcdStore extends StateStore {
  /**
   * Calls `onChange` with the whole state (fabric networks, this host's
   * ports, exports and links) once all of it has been read, then after every
   * batch of changes (many events, one call). Survives etcd outages and
   * compaction. Returns the function that stops it.
   */
  watch(onChange: (state: StoredState) => void): () => void;
  /**
   * Moves a host's embedded state into etcd (`vmlink cluster init` / join).
   * A network already in the fabric under the same name and VNI is kept as
   * it is; one with the same name and another VNI, or the same VNI under
   * another name, rejects with ERR_CLUSTER_CONFLICT before anything is written.
   */
  importState(state: StoredState): Promise<void>;
  /** Values skipped because they are corrupt (each reported once). */
  readonly corrupt: readonly CorruptValue[];
}

/** An item and its create revision (sorting by it gives the order items were first stored). */
type Entry = { item: StoredItem; rev: bigint };

type Maps = Record<Kind, Map<string, Entry>>;

const emptyMaps = (): Maps => ({ networks: new Map(), ports: new Map(), exports: new Map(), links: new Map() });

/** The item stored under `name`, or why the value is not one. */
function decode(name: string, value: Buffer): StoredItem | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch (err) {
    return `not JSON (${describeError(err)})`;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'not a JSON object';
  const got = (parsed as { name?: unknown }).name;
  if (got !== name) return `its name ${JSON.stringify(got)} does not match the key`;
  return parsed as StoredItem;
}

function vniOf(value: Buffer | StoredItem | undefined): number | undefined {
  if (value === undefined) return undefined;
  let item: unknown = value;
  if (Buffer.isBuffer(value))
    try {
      item = JSON.parse(value.toString('utf8'));
    } catch {
      return undefined;
    }
  const vni = (item as { vni?: unknown } | null)?.vni;
  return typeof vni === 'number' ? vni : undefined;
}

/** Items in the order first stored; those of one transaction (an import) in name order. */
function toState(maps: Maps): StoredState {
  const order = (a: Entry, b: Entry) =>
    a.rev !== b.rev ? (a.rev < b.rev ? -1 : 1) : a.item.name < b.item.name ? -1 : a.item.name > b.item.name ? 1 : 0;
  const list = (m: Map<string, Entry>) => [...m.values()].sort(order).map((e) => e.item);
  const state: StoredState = { networks: list(maps.networks), ports: list(maps.ports), exports: list(maps.exports) };
  const links = list(maps.links);
  if (links.length > 0) state.links = links;
  return state;
}

function chunks<T>(all: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < all.length; i += size) out.push(all.slice(i, i + size));
  return out;
}

/** Builds the etcd state store of host `opts.host`. Nothing is read until the first call. */
export function createEtcdStore(opts: EtcdStoreOptions): EtcdStore {
  return new EtcdStateStore(opts);
}

class EtcdStateStore implements EtcdStore {
  readonly #conn: EtcdConnection;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #prefix: Record<Kind, string>;
  readonly #corrupt = new Map<string, string>();
  readonly #views = new Set<() => Promise<void>>();

  constructor(opts: EtcdStoreOptions) {
    this.#conn = opts.conn;
    this.#log = opts.logger;
    this.#debounceMs = opts.debounceMs ?? 50;
    const h = opts.host;
    this.#prefix = { networks: 'networks/', ports: `ports/${h}/`, exports: `exports/${h}/`, links: `links/${h}/` };
  }

  get corrupt(): readonly CorruptValue[] {
    return [...this.#corrupt].map(([key, reason]) => ({ key, reason }));
  }

  /** Reads the four prefixes at one revision. */
  load(): Promise<StoredState> {
    return this.#conn.run('read the stored state', async () => {
      const maps = emptyMaps();
      let rev: string | undefined;
      for (const kind of KINDS) {
        const range = this.#conn.kv.getAll().prefix(this.#prefix[kind]);
        if (rev !== undefined) range.revision(rev);
        const res = await range.exec();
        rev ??= res.header.revision;
        const skip = this.#prefix[kind].length;
        for (const kv of res.kvs)
          this.#take(maps[kind], kind, kv.key.toString().slice(skip), kv.value, kv.create_revision);
      }
      return toState(maps);
    });
  }

  putNetwork(item: StoredItem): Promise<void> {
    return this.#conn.run(`store network "${item.name}"`, () =>
      this.#cas(`network "${item.name}"`, () => this.#tryPutNetwork(item)),
    );
  }

  deleteNetwork(name: string): Promise<void> {
    return this.#conn.run(`delete network "${name}"`, () =>
      this.#cas(`network "${name}"`, () => this.#tryDeleteNetwork(name)),
    );
  }

  putPort(item: StoredItem): Promise<void> {
    return this.#put('ports', item);
  }

  deletePort(name: string): Promise<void> {
    return this.#delete('ports', name);
  }

  putExport(item: StoredItem): Promise<void> {
    return this.#put('exports', item);
  }

  deleteExport(name: string): Promise<void> {
    return this.#delete('exports', name);
  }

  putLink(item: StoredItem): Promise<void> {
    return this.#put('links', item);
  }

  deleteLink(name: string): Promise<void> {
    return this.#delete('links', name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#views].map((stop) => stop()));
  }

  watch(onChange: (state: StoredState) => void): () => void {
    const maps = emptyMaps();
    const ready = new Set<Kind>();
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const flush = () => {
      timer = undefined;
      if (stopped) return;
      try {
        onChange(toState(maps));
      } catch (err) {
        this.#log.error({ err: describeError(err) }, 'etcd store watcher failed');
      }
    };
    const changed = () => {
      if (!stopped && timer === undefined && ready.size === KINDS.length) timer = setTimeout(flush, this.#debounceMs);
    };
    const watches: PrefixWatch[] = KINDS.map((kind) =>
      watchPrefix(this.#conn, this.#prefix[kind], {
        reset: (items) => {
          maps[kind].clear();
          for (const [name, it] of items) this.#take(maps[kind], kind, name, it.value, it.createRevision);
          ready.add(kind);
          changed();
        },
        put: (name, value, _mod, created) => {
          if (this.#take(maps[kind], kind, name, value, created)) changed();
        },
        delete: (name) => {
          this.#corrupt.delete(this.#prefix[kind] + name);
          if (maps[kind].delete(name)) changed();
        },
      }),
    );
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      this.#views.delete(stop);
      await Promise.all(watches.map((w) => w.close()));
    };
    this.#views.add(stop);
    return () => void stop();
  }

  async importState(state: StoredState): Promise<void> {
    await this.#importNetworks(state.networks);
    const items: [string, StoredItem][] = [];
    for (const kind of ['ports', 'exports', 'links'] as const)
      for (const item of state[kind] ?? []) items.push([this.#prefix[kind] + item.name, item]);
    for (const chunk of chunks(items, PUT_CHUNK))
      await this.#conn.run(`import ${chunk.length} ports, exports and links`, () =>
        // etcd3's builder wants one comparison; a key's version is never negative.
        this.#conn.kv
          .if(chunk[0]?.[0] as string, 'Version', '>', -1)
          .then(...chunk.map(([key, item]) => this.#conn.kv.put(key).value(JSON.stringify(item))))
          .commit(),
      );
  }

  /** Stores a decoded value into `map`; a corrupt one is reported once and leaves `map` as it was. */
  #take(map: Map<string, Entry>, kind: Kind, name: string, value: Buffer, created: string): boolean {
    const key = this.#prefix[kind] + name;
    const item = decode(name, value);
    if (typeof item === 'string') {
      if (!this.#corrupt.has(key)) this.#log.warn({ key, reason: item }, `skipping corrupt value at ${key}: ${item}`);
      this.#corrupt.set(key, item);
      return false;
    }
    this.#corrupt.delete(key);
    map.set(name, { item, rev: BigInt(created) });
    return true;
  }

  #put(kind: Kind, item: StoredItem): Promise<void> {
    const key = this.#prefix[kind] + item.name;
    return this.#conn.run(`store ${SINGULAR[kind]} "${item.name}"`, async () => {
      await this.#conn.kv.put(key).value(JSON.stringify(item)).exec();
    });
  }

  #delete(kind: Kind, name: string): Promise<void> {
    const key = this.#prefix[kind] + name;
    return this.#conn.run(`delete ${SINGULAR[kind]} "${name}"`, async () => {
      await this.#conn.kv.delete().key(key).exec();
    });
  }

  /** Repeats a compare-and-swap attempt while etcd says the compared keys changed meanwhile. */
  async #cas(what: string, attempt: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < CAS_ATTEMPTS; i++) if (await attempt()) return;
    throw new ClusterConflictError(`${what} kept changing in the fabric while this host wrote it`, 'retry the change');
  }

  async #get(key: string): Promise<IKeyValue | undefined> {
    return (await this.#conn.kv.get(key).exec()).kvs[0];
  }

  async #tryPutNetwork(item: StoredItem): Promise<boolean> {
    const kv = this.#conn.kv;
    const key = `networks/${item.name}`;
    const vni = vniOf(item);
    const [cur, owner] = await Promise.all([this.#get(key), vni === undefined ? undefined : this.#get(`vnis/${vni}`)]);
    const ownerName = owner?.value.toString();
    if (vni !== undefined && ownerName !== undefined && ownerName !== item.name)
      throw new VniInUseError(vni, ownerName);
    const oldVni = vniOf(cur?.value);
    const txn = kv.if(key, 'Mod', '==', cur?.mod_revision ?? 0);
    const ops = [kv.put(key).value(JSON.stringify(item))];
    if (vni !== undefined) {
      txn.and(`vnis/${vni}`, 'Mod', '==', owner?.mod_revision ?? 0);
      ops.push(kv.put(`vnis/${vni}`).value(item.name));
    }
    const res = await txn
      .then(...ops, ...(oldVni !== undefined && oldVni !== vni ? [kv.delete().key(`vnis/${oldVni}`)] : []))
      .commit();
    return res.succeeded;
  }

  async #tryDeleteNetwork(name: string): Promise<boolean> {
    const kv = this.#conn.kv;
    const key = `networks/${name}`;
    const cur = await this.#get(key);
    if (!cur) return true;
    const vni = vniOf(cur.value);
    const owner = vni === undefined ? undefined : await this.#get(`vnis/${vni}`);
    const txn = kv.if(key, 'Mod', '==', cur.mod_revision);
    const ops = [kv.delete().key(key)];
    if (owner && owner.value.toString() === name) {
      txn.and(`vnis/${vni}`, 'Mod', '==', owner.mod_revision);
      ops.push(kv.delete().key(`vnis/${vni}`));
    }
    return (await txn.then(...ops).commit()).succeeded;
  }

  async #importNetworks(networks: StoredItem[]): Promise<void> {
    for (let i = 0; i < CAS_ATTEMPTS; i++) {
      const res = await this.#conn.run('read the fabric networks', () =>
        this.#conn.kv.getAll().prefix('networks/').exec(),
      );
      const plan = this.#planImport(networks, res.kvs);
      if (plan.length === 0) return;
      let ok = true;
      for (const chunk of chunks(plan, IMPORT_CHUNK))
        ok = (await this.#conn.run(`import ${chunk.length} networks`, () => this.#importChunk(chunk))) && ok;
      if (ok) return;
    }
    throw new ClusterConflictError(
      'the fabric networks kept changing while this host imported its own',
      'retry the import',
    );
  }

  /** The networks to write: checks each against the fabric's and throws ClusterConflictError on a clash. */
  #planImport(networks: StoredItem[], kvs: IKeyValue[]): StoredItem[] {
    const fabric = new Map<string, StoredItem | undefined>();
    const byVni = new Map<number, string>();
    for (const kv of kvs) {
      const name = kv.key.toString().slice('networks/'.length);
      const item = decode(name, kv.value);
      fabric.set(name, typeof item === 'string' ? undefined : item);
      const vni = vniOf(kv.value);
      if (vni !== undefined) byVni.set(vni, name);
    }
    const plan: StoredItem[] = [];
    for (const n of networks) {
      const vni = vniOf(n);
      if (fabric.has(n.name)) {
        const theirs = vniOf(fabric.get(n.name));
        if (theirs !== vni)
          throw new ClusterConflictError(
            `network "${n.name}" has VNI ${vni} on this host but VNI ${theirs ?? '(unreadable)'} in the fabric`,
          );
        if (JSON.stringify(fabric.get(n.name)) !== JSON.stringify(n))
          this.#log.info(
            { network: n.name },
            `network "${n.name}" exists in the fabric with other settings; keeping the fabric's`,
          );
        continue;
      }
      const other = vni === undefined ? undefined : byVni.get(vni);
      if (other !== undefined)
        throw new ClusterConflictError(
          `VNI ${vni} is network "${n.name}" on this host but network "${other}" in the fabric`,
        );
      plan.push(n);
    }
    return plan;
  }

  /** One transaction: each network and its VNI key are created only if still absent. */
  async #importChunk(chunk: StoredItem[]): Promise<boolean> {
    const kv = this.#conn.kv;
    const first = chunk[0] as StoredItem;
    const txn = kv.if(`networks/${first.name}`, 'Create', '==', 0);
    const ops = [];
    for (const n of chunk) {
      const vni = vniOf(n);
      if (n !== first) txn.and(`networks/${n.name}`, 'Create', '==', 0);
      ops.push(kv.put(`networks/${n.name}`).value(JSON.stringify(n)));
      if (vni === undefined) continue;
      txn.and(`vnis/${vni}`, 'Create', '==', 0);
      ops.push(kv.put(`vnis/${vni}`).value(n.name));
    }
    return (await txn.then(...ops).commit()).succeeded;
  }
}
