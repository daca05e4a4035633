/**
 * The embedded state store: a snapshot, `state.json`, plus an append-only
 * journal, `state.journal`, in the host's state directory.
 *
 * A change is one journal line (snapshot.ts and journal.ts give the formats),
 * appended and fdatasynced before the put/delete resolves, so the cost of a
 * write does not grow with the number of stored items. Changes queued while
 * a write is in flight go out together in the next append (one fsync). When
 * the journal outgrows both `compactMinBytes` and `compactRatio` times the
 * snapshot, the whole state is written as a new snapshot (atomically: temp
 * file, fsync, rename, fsync of the directory) and the journal is truncated.
 * A graceful close compacts too and removes the journal, leaving `state.json`
 * alone.
 *
 * Crash safety: an acknowledged change is in the journal or in the snapshot.
 * At load, a torn last record (a crash in the middle of an append: no
 * newline or a checksum that does not match) is dropped with a warning; any
 * other damage stops the load with ERR_STATE_CORRUPT. Records already in the
 * snapshot (a crash between writing it and truncating the journal) are
 * recognised by their sequence number and skipped. A single-file state of
 * earlier releases (snapshot version 1) loads as it is and is rewritten in
 * the current format at the first compaction.
 */
import { constants } from 'node:fs';
import { type FileHandle, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError } from '../errors.js';
import { type Logger, silentLogger } from '../log.js';
import { mkdirp } from '../util/fs.js';
import { StateIoError, StateJournalCorruptError } from './errors.js';
import { decodeJournal, encodeRecord, type JournalRecord, type Kind } from './journal.js';
import { emptyMaps, encodeSnapshot, parseSnapshot, type StateMaps, syncDir, writeAtomically } from './snapshot.js';
import type { StateStore, StoredItem, StoredState } from './store.js';

/** Name of the snapshot file inside the state directory. */
export const STATE_FILE = 'state.json';
/** Name of the journal file inside the state directory. */
export const JOURNAL_FILE = 'state.journal';

/** Most changes written in one append. */
const MAX_BATCH = 256;

export interface EmbeddedStoreOptions {
  /** Directory of the state files; created with mode 0700 when missing. */
  dir: string;
  /** Where a dropped torn record or a failed compaction is reported; default silent. */
  logger?: Logger;
  /** Compaction waits until the journal holds at least this many bytes; default 65536. */
  compactMinBytes?: number;
  /** ...and at least this many times the snapshot's size in bytes; default 1. */
  compactRatio?: number;
}

type Change = { op: 'put'; kind: Kind; item: StoredItem } | { op: 'del'; kind: Kind; name: string };

interface Pending {
  change: Change;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Builds an embedded store over `opts.dir`. Nothing touches the disk until the first call. */
export function createEmbeddedStore(opts: EmbeddedStoreOptions): StateStore {
  return new EmbeddedStore(opts);
}

class EmbeddedStore implements StateStore {
  readonly #dir: string;
  readonly #file: string;
  readonly #journal: string;
  readonly #logger: Logger;
  readonly #compactMin: number;
  readonly #compactRatio: number;
  #state: StateMaps | undefined;
  #loading: Promise<void> | undefined;
  /** The last change applied (in memory and durable). */
  #seq = 0;
  #snapshotBytes = 0;
  /** Bytes of the journal up to its last good record; appends go after them. */
  #journalBytes = 0;
  /** No compaction attempt before the journal reaches this size (after a failed one). */
  #compactRetryAt = 0;
  #fh: FileHandle | undefined;
  #queue: Pending[] = [];
  #draining: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(opts: EmbeddedStoreOptions) {
    this.#dir = opts.dir;
    this.#file = join(opts.dir, STATE_FILE);
    this.#journal = join(opts.dir, JOURNAL_FILE);
    this.#logger = opts.logger ?? silentLogger();
    this.#compactMin = opts.compactMinBytes ?? 65536;
    this.#compactRatio = opts.compactRatio ?? 1;
  }

  async load(): Promise<StoredState> {
    await this.#ensureLoaded();
    await this.#idle();
    const s = this.#state ?? emptyMaps();
    const list = (k: Kind) => [...s[k].values()].map((i) => structuredClone(i));
    return {
      networks: list('networks'),
      ports: list('ports'),
      exports: list('exports'),
      ...(s.links.size ? { links: list('links') } : {}),
    };
  }

  putNetwork(item: StoredItem): Promise<void> {
    return this.#change({ op: 'put', kind: 'networks', item: structuredClone(item) });
  }

  deleteNetwork(name: string): Promise<void> {
    return this.#change({ op: 'del', kind: 'networks', name });
  }

  putPort(item: StoredItem): Promise<void> {
    return this.#change({ op: 'put', kind: 'ports', item: structuredClone(item) });
  }

  deletePort(name: string): Promise<void> {
    return this.#change({ op: 'del', kind: 'ports', name });
  }

  putExport(item: StoredItem): Promise<void> {
    return this.#change({ op: 'put', kind: 'exports', item: structuredClone(item) });
  }

  deleteExport(name: string): Promise<void> {
    return this.#change({ op: 'del', kind: 'exports', name });
  }

  putLink(item: StoredItem): Promise<void> {
    return this.#change({ op: 'put', kind: 'links', item: structuredClone(item) });
  }

  deleteLink(name: string): Promise<void> {
    return this.#change({ op: 'del', kind: 'links', name });
  }

  close(): Promise<void> {
    this.#closing ??= this.#finish();
    return this.#closing;
  }

  async #finish(): Promise<void> {
    await this.#idle();
    if (this.#state && this.#journalBytes > 0) {
      try {
        await this.#compact();
        await this.#fh?.close();
        this.#fh = undefined;
        await unlink(this.#journal);
      } catch (err) {
        // Nothing is lost: the journal still holds every change.
        this.#logger.warn(
          { err },
          `state store: compaction at close failed, the journal is kept: ${describeError(err)}`,
        );
      }
    }
    await this.#fh?.close().catch(() => undefined);
    this.#fh = undefined;
  }

  #change(change: Change): Promise<void> {
    if (this.#closing) return Promise.reject(new StateIoError('write', this.#file, 'the store is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ change, resolve, reject });
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#draining) return;
    this.#draining = this.#drain().finally(() => {
      this.#draining = undefined;
      if (this.#queue.length) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length) {
      await this.#commit(this.#queue.splice(0, MAX_BATCH));
      await this.#maybeCompact();
    }
  }

  async #idle(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  /** Writes one batch as one append; settles every pending change of it. Never rejects. */
  async #commit(batch: Pending[]): Promise<void> {
    try {
      await this.#ensureLoaded();
      const state = this.#state as StateMaps;
      // What the batch has done so far, by kind and name (null: deleted), to judge later changes of it.
      const staged = new Map<string, StoredItem | null>();
      const records: JournalRecord[] = [];
      let seq = this.#seq;
      for (const { change } of batch) {
        const name = change.op === 'put' ? change.item.name : change.name;
        const key = `${change.kind}\0${name}`;
        const staging = staged.get(key);
        const exists = staging === undefined ? state[change.kind].has(name) : staging !== null;
        if (change.op === 'del' && !exists) continue;
        records.push({ seq: ++seq, ...change });
        staged.set(key, change.op === 'put' ? change.item : null);
      }
      if (records.length) await this.#append(records.map(encodeRecord).join(''));
      for (const r of records) {
        if (r.op === 'put') state[r.kind].set(r.item.name, r.item);
        else state[r.kind].delete(r.name);
      }
      this.#seq = seq;
      for (const p of batch) p.resolve();
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }

  /** Appends `text` to the journal and makes it durable. */
  async #append(text: string): Promise<void> {
    const buf = Buffer.from(text, 'utf8');
    try {
      const fh = await this.#openJournal();
      for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
      await fh.datasync();
      this.#journalBytes += buf.length;
    } catch (err) {
      // Part of the append may be on disk: reopening truncates the journal back to its last good record.
      await this.#fh?.close().catch(() => undefined);
      this.#fh = undefined;
      throw new StateIoError('write', this.#journal, describeError(err), { cause: err });
    }
  }

  async #openJournal(): Promise<FileHandle> {
    if (this.#fh) return this.#fh;
    await mkdirp(this.#dir, 0o700);
    const fh = await open(this.#journal, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    try {
      // Drops a torn tail found at load, or a partial append that failed.
      await fh.truncate(this.#journalBytes);
      await syncDir(this.#dir);
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.#fh = fh;
    return fh;
  }

  async #maybeCompact(): Promise<void> {
    const n = this.#journalBytes;
    if (n < this.#compactMin || n < this.#snapshotBytes * this.#compactRatio || n < this.#compactRetryAt) return;
    try {
      await this.#compact();
    } catch (err) {
      this.#compactRetryAt = n + this.#compactMin;
      this.#logger.warn(
        { err },
        `state store: compaction failed, the journal keeps growing until it succeeds: ${describeError(err)}`,
      );
    }
  }

  /** Writes the whole state as the snapshot, then empties the journal. */
  async #compact(): Promise<void> {
    const text = encodeSnapshot(this.#state as StateMaps, this.#seq);
    await mkdirp(this.#dir, 0o700);
    await writeAtomically(this.#dir, this.#file, text);
    this.#snapshotBytes = Buffer.byteLength(text);
    // A crash before the truncation is durable leaves records the snapshot already holds: load skips them.
    try {
      const fh = await this.#openJournal();
      await fh.truncate(0);
      await fh.datasync();
    } catch (err) {
      throw new StateIoError('truncate', this.#journal, describeError(err), { cause: err });
    }
    this.#journalBytes = 0;
    this.#compactRetryAt = 0;
  }

  #ensureLoaded(): Promise<void> {
    if (this.#state) return Promise.resolve();
    this.#loading ??= this.#read().finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #read(): Promise<void> {
    const text = await readOrNone(this.#file, 'utf8');
    const snap = text === undefined ? { seq: 0, state: emptyMaps() } : parseSnapshot(text, this.#file);
    const buf = await readOrNone(this.#journal);
    const journal =
      buf === undefined ? { records: [], validBytes: 0, tornBytes: 0 } : decodeJournal(buf, this.#journal);
    if (journal.tornBytes) {
      this.#logger.warn(
        { file: this.#journal, at: journal.validBytes, bytes: journal.tornBytes },
        `state journal ${this.#journal}: dropped a torn last record (${journal.tornBytes} bytes at byte ` +
          `${journal.validBytes}); a crash interrupted its write, so it was never acknowledged`,
      );
    }
    let seq = snap.seq;
    for (const r of journal.records) {
      if (r.seq <= snap.seq) continue; // already in the snapshot
      if (r.seq !== seq + 1)
        throw new StateJournalCorruptError(
          this.#journal,
          `its record ${r.seq} does not follow the snapshot's last record ${snap.seq}; records are missing`,
        );
      if (r.op === 'put') snap.state[r.kind].set(r.item.name, r.item);
      else snap.state[r.kind].delete(r.name);
      seq = r.seq;
    }
    const last = journal.records.at(-1)?.seq ?? 0;
    this.#state = snap.state;
    this.#seq = seq;
    this.#snapshotBytes = text === undefined ? 0 : Buffer.byteLength(text);
    // A journal wholly older than the snapshot is dropped at the first append, so numbering stays consecutive.
    this.#journalBytes = last > snap.seq ? journal.validBytes : 0;
  }
}

/** The file's contents, or undefined when it does not exist. */
async function readOrNone(file: string): Promise<Buffer | undefined>;
async function readOrNone(file: string, enc: 'utf8'): Promise<string | undefined>;
async function readOrNone(file: string, enc?: 'utf8'): Promise<Buffer | string | undefined> {
  try {
    return enc ? await readFile(file, enc) : await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateIoError('read', file, describeError(err), { cause: err });
  }
}
