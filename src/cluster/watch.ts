/**
 * watchPrefix: a view of every key under a prefix that survives etcd
 * outages and compaction.
 *
 * It reads the prefix at revision R (handlers.reset), then watches from
 * R+1. It remembers the last revision it delivered; when the watch stream is
 * lost it resumes from there, so changes made meanwhile arrive as put/delete.
 * When etcd has compacted that revision away (or cancels the watch for any
 * other reason), it reads the prefix afresh and calls reset() again.
 *
 * Reconnects are driven here, not by the etcd3 WatchManager: a lost watcher is
 * detached at once and a new one attached after a bounded backoff (250 ms ..
 * 5 s with jitter); while the connection's health loop says etcd is down no
 * attempt is made at all, and the first "up" starts one immediately. So an
 * outage costs a probe every few seconds, never a spin. State changes of the
 * watch itself are logged at debug level: the connection logs the outage once.
 *
 * Keys given to the handlers are relative to `prefix` ("lan" for
 * `networks/lan` when watching `networks/`).
 */
import type { IWatchResponse, Watcher } from 'etcd3';
import { describeError } from '../errors.js';
import { Backoff, type EtcdConnection } from './etcd.js';

export interface WatchItem {
  value: Buffer;
  modRevision: string;
  /** Revision that created the key: sorting by it gives the order keys were first stored. */
  createRevision: string;
}

export interface WatchHandlers {
  /** The whole content under the prefix (first read, and after compaction): replace what you have. */
  reset(items: Map<string, WatchItem>): void;
  put(key: string, value: Buffer, modRevision: string, createRevision: string): void;
  delete(key: string): void;
}

export interface PrefixWatch {
  /** Stops watching; no handler is called afterwards. */
  close(): Promise<void>;
}

class PrefixWatcher implements PrefixWatch {
  readonly #backoff = new Backoff();
  readonly #offState: () => void;
  #lastRev = 0n;
  #needRead = true;
  #watcher: Watcher | undefined;
  #gen = 0;
  #timer: NodeJS.Timeout | undefined;
  #starting = false;
  #lost = false;
  #closed = false;

  constructor(
    readonly conn: EtcdConnection,
    readonly prefix: string,
    readonly handlers: WatchHandlers,
  ) {
    this.#offState = conn.onState((up) => {
      if (up && !this.#watcher && !this.#starting) {
        this.#backoff.reset();
        this.#schedule(0);
      }
    });
    this.#schedule(0);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#gen++;
    clearTimeout(this.#timer);
    this.#offState();
    const w = this.#watcher;
    this.#watcher = undefined;
    // A cancel waits for etcd's answer; do not hang on a connection that just died.
    if (w) await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#start(), ms);
  }

  async #start(): Promise<void> {
    if (this.#closed || this.#starting || this.#watcher) return;
    this.#starting = true;
    try {
      if (this.#needRead) await this.#read();
      if (!this.#closed) this.#attach();
    } catch (err) {
      this.conn.logger.debug({ prefix: this.prefix, reason: describeError(err) }, 'etcd watch cannot start yet');
      this.#retry();
    } finally {
      this.#starting = false;
    }
  }

  async #read(): Promise<void> {
    const res = await this.conn.run(`read ${this.prefix}`, () => this.conn.kv.getAll().prefix(this.prefix).exec());
    if (this.#closed) return;
    const items = new Map<string, WatchItem>();
    for (const kv of res.kvs)
      items.set(kv.key.toString().slice(this.prefix.length), {
        value: kv.value,
        modRevision: kv.mod_revision,
        createRevision: kv.create_revision,
      });
    this.#lastRev = BigInt(res.header.revision);
    this.#needRead = false;
    this.#call('reset', () => this.handlers.reset(items));
  }

  #attach(): void {
    const gen = ++this.#gen;
    const from = this.#lastRev + 1n;
    const w = this.conn.kv.watch().prefix(this.prefix).startRevision(from.toString()).watcher();
    this.#watcher = w;
    w.on('connected', () => {
      if (gen !== this.#gen) return;
      this.#backoff.reset();
      if (this.#lost) this.conn.logger.debug({ prefix: this.prefix, from: from.toString() }, 'etcd watch resumed');
      this.#lost = false;
    });
    w.on('data', (res) => {
      if (gen === this.#gen) this.#deliver(res);
    });
    w.on('disconnected', (err) => {
      if (gen !== this.#gen) return;
      this.#detach(w);
      if (!this.#lost)
        this.conn.logger.debug(
          { prefix: this.prefix, from: this.#lastRev.toString(), reason: describeError(err) },
          'etcd watch lost; it resumes from the last revision seen',
        );
      this.#lost = true;
      this.#retry();
    });
    w.on('error', (err) => {
      if (gen !== this.#gen) return;
      // etcd cancelled the watch: its start revision was compacted away (or another server-side reason).
      // The manager has dropped the watcher already; a cancel request would name an id etcd no longer knows.
      this.#gen++;
      this.#watcher = undefined;
      this.#needRead = true;
      this.conn.logger.info(
        { prefix: this.prefix, from: from.toString(), reason: describeError(err) },
        'etcd cancelled the watch (its revision was compacted away); reading the prefix afresh',
      );
      this.#retry();
    });
  }

  #detach(w: Watcher): void {
    this.#gen++;
    if (this.#watcher === w) this.#watcher = undefined;
    void w.cancel().catch(() => undefined);
  }

  /** Delivers one watch response; events at or below the last delivered revision (a replay) are skipped. */
  #deliver(res: IWatchResponse): void {
    const seen = this.#lastRev;
    let last = seen;
    for (const ev of res.events) {
      if (this.#closed) return;
      const rev = BigInt(ev.kv.mod_revision);
      if (rev <= seen) continue;
      if (rev > last) last = rev;
      const key = ev.kv.key.toString().slice(this.prefix.length);
      if (ev.type === 'Put')
        this.#call('put', () => this.handlers.put(key, ev.kv.value, ev.kv.mod_revision, ev.kv.create_revision));
      else this.#call('delete', () => this.handlers.delete(key));
    }
    // A response without events is a progress notice: etcd sends it only once the watcher has caught up.
    if (res.events.length === 0) {
      const rev = BigInt(res.header.revision);
      if (rev > last) last = rev;
    }
    this.#lastRev = last;
  }

  #retry(): void {
    if (this.#closed) return;
    this.conn.suspect();
    // While etcd is known to be down, wait for the connection's "up" instead of probing here too.
    if (!this.conn.available) return;
    this.#schedule(this.#backoff.next());
  }

  #call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      // A consumer's bug must not break the watch or reach the event loop.
      this.conn.logger.error({ prefix: this.prefix, err: describeError(err) }, `etcd watch ${what} handler failed`);
    }
  }
}

/** Watches every key under `prefix` (relative to the connection's prefix). See the module comment. */
export function watchPrefix(conn: EtcdConnection, prefix: string, handlers: WatchHandlers): PrefixWatch {
  return new PrefixWatcher(conn, prefix, handlers);
}
