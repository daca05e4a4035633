/**
 * The embedded state store: one JSON file, `state.json`, in the host's
 * state directory. Every change rewrites the whole file atomically (write a
 * temporary file, fsync it, rename it over the old one, fsync the directory),
 * so a crash leaves either the old or the new state, never a torn file.
 * Writes are serialized; each put/delete resolves once its change is durable.
 *
 * File format (version 1):
 * `{ "version": 1, "networks": [ {raw network} ], "ports": [ {raw port} ], "exports": [ {raw export} ] }`
 * (`exports` may be absent: files written before exports existed load with none; `links`, overlay
 * links added through the API, is written only when there are some).
 */
import { constants } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError } from '../errors.js';
import { mkdirp } from '../util/fs.js';
import { StateCorruptError, StateIoError } from './errors.js';
import type { StateStore, StoredItem, StoredState } from './store.js';

/** The state file format this build reads and writes. */
export const STATE_VERSION = 1;
/** Name of the state file inside the state directory. */
export const STATE_FILE = 'state.json';

export interface EmbeddedStoreOptions {
  /** Directory of the state file; created with mode 0700 when missing. */
  dir: string;
}

interface StateFile {
  version: number;
  networks: StoredItem[];
  ports: StoredItem[];
  exports: StoredItem[];
  links: StoredItem[];
}

/** Builds an embedded store over `opts.dir`. Nothing touches the disk until the first call. */
export function createEmbeddedStore(opts: EmbeddedStoreOptions): StateStore {
  return new EmbeddedStore(opts.dir);
}

class EmbeddedStore implements StateStore {
  readonly #dir: string;
  readonly #file: string;
  #state: StateFile | undefined;
  /** Tail of the write chain: each change runs after the previous one settled. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(dir: string) {
    this.#dir = dir;
    this.#file = join(dir, STATE_FILE);
  }

  async load(): Promise<StoredState> {
    const s = await this.#read();
    this.#state = s;
    return {
      networks: s.networks.map((i) => structuredClone(i)),
      ports: s.ports.map((i) => structuredClone(i)),
      exports: s.exports.map((i) => structuredClone(i)),
      ...(s.links.length ? { links: s.links.map((i) => structuredClone(i)) } : {}),
    };
  }

  putNetwork(item: StoredItem): Promise<void> {
    return this.#change((s) => put(s.networks, item));
  }

  deleteNetwork(name: string): Promise<void> {
    return this.#change((s) => remove(s.networks, name));
  }

  putPort(item: StoredItem): Promise<void> {
    return this.#change((s) => put(s.ports, item));
  }

  deletePort(name: string): Promise<void> {
    return this.#change((s) => remove(s.ports, name));
  }

  putExport(item: StoredItem): Promise<void> {
    return this.#change((s) => put(s.exports, item));
  }

  deleteExport(name: string): Promise<void> {
    return this.#change((s) => remove(s.exports, name));
  }

  putLink(item: StoredItem): Promise<void> {
    return this.#change((s) => put(s.links, item));
  }

  deleteLink(name: string): Promise<void> {
    return this.#change((s) => remove(s.links, name));
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#chain;
  }

  /** Applies `edit` to the in-memory state and persists it, after every earlier change. */
  #change(edit: (s: StateFile) => boolean): Promise<void> {
    if (this.#closed) return Promise.reject(new StateIoError('write', this.#file, 'the store is closed'));
    const run = async (): Promise<void> => {
      this.#state ??= await this.#read();
      // Edit a copy: if the write fails, memory still matches the disk.
      const next: StateFile = {
        ...this.#state,
        networks: [...this.#state.networks],
        ports: [...this.#state.ports],
        exports: [...this.#state.exports],
        links: [...this.#state.links],
      };
      if (!edit(next)) return;
      await this.#write(next);
      this.#state = next;
    };
    const p = this.#chain.then(run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  async #read(): Promise<StateFile> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return { version: STATE_VERSION, networks: [], ports: [], exports: [], links: [] };
      throw new StateIoError('read', this.#file, describeError(err), { cause: err });
    }
    return parseState(text, this.#file);
  }

  async #write(s: StateFile): Promise<void> {
    const tmp = `${this.#file}.tmp-${process.pid}`;
    const doc = {
      version: STATE_VERSION,
      networks: s.networks,
      ports: s.ports,
      exports: s.exports,
      ...(s.links.length ? { links: s.links } : {}),
    };
    const text = `${JSON.stringify(doc, null, 2)}\n`;
    try {
      await mkdirp(this.#dir, 0o700);
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.#file);
      // The rename is durable only once the directory entry is on disk.
      const dh = await open(this.#dir, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw new StateIoError('write', this.#file, describeError(err), { cause: err });
    }
  }
}

/** Parses and checks the state file's text. Exported for tests. */
export function parseState(text: string, file: string): StateFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StateCorruptError(file, `it is not valid JSON (${describeError(err)})`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new StateCorruptError(file, 'it is not a JSON object');
  const d = doc as Record<string, unknown>;
  if (d['version'] !== STATE_VERSION)
    throw new StateCorruptError(
      file,
      `its version is ${JSON.stringify(d['version'])}, this vmlink reads version ${STATE_VERSION}`,
    );
  return {
    version: STATE_VERSION,
    networks: items(d, 'networks', file),
    ports: items(d, 'ports', file),
    // Absent in files written before exports existed: none.
    exports: d['exports'] === undefined ? [] : items(d, 'exports', file),
    links: d['links'] === undefined ? [] : items(d, 'links', file),
  };
}

function items(d: Record<string, unknown>, key: string, file: string): StoredItem[] {
  const list = d[key];
  if (!Array.isArray(list)) throw new StateCorruptError(file, `"${key}" is not a list`);
  list.forEach((item, i) => {
    if (typeof item !== 'object' || item === null || typeof (item as { name?: unknown }).name !== 'string')
      throw new StateCorruptError(file, `${key}[${i}] is not an object with a "name"`);
  });
  return list as StoredItem[];
}

/** Replaces the item with the same name in place, or appends it. False when nothing changed. */
function put(list: StoredItem[], item: StoredItem): boolean {
  const copy = structuredClone(item);
  const i = list.findIndex((x) => x.name === item.name);
  if (i < 0) list.push(copy);
  else list[i] = copy;
  return true;
}

function remove(list: StoredItem[], name: string): boolean {
  const i = list.findIndex((x) => x.name === name);
  if (i < 0) return false;
  list.splice(i, 1);
  return true;
}
