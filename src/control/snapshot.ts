/**
 * The embedded store's snapshot, `state.json`: the whole state as of journal
 * record `seq`, written atomically (temporary file, fsync, rename, fsync of
 * the directory) when the journal is compacted.
 *
 * Format (version 2):
 * `{ "version": 2, "seq": N, "networks": [...], "ports": [...], "exports": [...], "links": [...] }`
 * (`links` only when there are some). Version 1 files (the single-file store
 * of earlier releases: no `seq`, `exports` possibly absent) are read as seq 0.
 */
import { constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { describeError } from '../errors.js';
import { StateCorruptError, StateIoError } from './errors.js';
import { KINDS, type Kind } from './journal.js';
import type { StoredItem } from './store.js';

/** The snapshot format this build writes. */
export const SNAPSHOT_VERSION = 2;

/** The items of each kind by name, in the order they were first stored. */
export type StateMaps = Record<Kind, Map<string, StoredItem>>;

export interface Snapshot {
  /** The last journal record the snapshot includes; 0 for none. */
  seq: number;
  state: StateMaps;
}

/** An empty state. */
export function emptyMaps(): StateMaps {
  return { networks: new Map(), ports: new Map(), exports: new Map(), links: new Map() };
}

/** Parses and checks a snapshot's text (version 1 or 2). Throws {@link StateCorruptError} naming `file`. */
export function parseSnapshot(text: string, file: string): Snapshot {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StateCorruptError(file, `it is not valid JSON (${describeError(err)})`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new StateCorruptError(file, 'it is not a JSON object');
  const d = doc as Record<string, unknown>;
  const version = d['version'];
  if (version !== 1 && version !== SNAPSHOT_VERSION)
    throw new StateCorruptError(
      file,
      `its version is ${JSON.stringify(version)}, this vmlink reads versions 1 and ${SNAPSHOT_VERSION}`,
    );
  const seq = version === 1 ? 0 : d['seq'];
  if (!Number.isSafeInteger(seq) || (seq as number) < 0)
    throw new StateCorruptError(file, `"seq" is ${JSON.stringify(seq)}, not a count of journal records`);
  const state = emptyMaps();
  for (const kind of KINDS) {
    // `networks` and `ports` are always written; `exports` is absent in files written before exports existed.
    if (d[kind] === undefined && (kind === 'exports' || kind === 'links')) continue;
    for (const item of items(d, kind, file)) state[kind].set(item.name, item);
  }
  return { seq: seq as number, state };
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

/** The snapshot text of `state` as of record `seq`. */
export function encodeSnapshot(state: StateMaps, seq: number): string {
  const doc = {
    version: SNAPSHOT_VERSION,
    seq,
    networks: [...state.networks.values()],
    ports: [...state.ports.values()],
    exports: [...state.exports.values()],
    ...(state.links.size ? { links: [...state.links.values()] } : {}),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/**
 * Replaces `file` (in directory `dir`) with `text` atomically: a crash leaves
 * the old or the new file, never a torn one. Mode 0600. Throws {@link StateIoError}.
 */
export async function writeAtomically(dir: string, file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    // The rename is durable only once the directory entry is on disk.
    await syncDir(dir);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new StateIoError('write', file, describeError(err), { cause: err });
  }
}

/** fsyncs a directory, making entries created, renamed or removed in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
