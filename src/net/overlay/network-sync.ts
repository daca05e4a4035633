/**
 * The network list of a TCP/TLS link, sent after the hello
 * (docs/overlay.md "Network sync").
 *
 * The hello says who a host is; which networks it has follows once each end
 * has checked the other's hello: a full list in parts (`networks` messages,
 * `part` 0, 1, ... the last with `last: true`), each record well under the
 * control record limit whatever the number of networks, then only changes
 * (`networks-update` with `add` and `remove`) while the link is up. The
 * receiving end applies a full list only when its last part has arrived.
 * These functions build the messages and apply them; they never throw for
 * what a peer sends.
 */
import type { ControlMessage, OfferedNetwork } from './transport.js';

/** Bytes of network entries per control record (JSON), well under the record limit of 64 KiB. */
export const SYNC_BYTES = 48 * 1024;
/** Most networks taken from one peer (more are ignored, with a warning): above any `limits.networks`. */
export const MAX_PEER_NETWORKS = 65_536;

/** Splits `items` into runs whose JSON (plus a comma each) fits `budget` bytes; at least one run. */
function chunks<T>(items: readonly T[], budget: number): T[][] {
  const out: T[][] = [[]];
  let used = 0;
  for (const it of items) {
    const n = JSON.stringify(it).length + 1;
    const cur = out[out.length - 1] as T[];
    if (used + n > budget && cur.length > 0) {
      out.push([it]);
      used = n;
    } else {
      cur.push(it);
      used += n;
    }
  }
  return out;
}

/** The full list as `networks` messages: at least one (an empty list is one message), the last with `last: true`. */
export function snapshotMessages(networks: readonly OfferedNetwork[], budget = SYNC_BYTES): ControlMessage[] {
  const parts = chunks(networks, budget);
  return parts.map((p, i) => ({ type: 'networks', part: i, last: i === parts.length - 1, networks: p }));
}

/** Changes as `networks-update` messages (none when nothing changed). */
export function updateMessages(
  add: readonly OfferedNetwork[],
  remove: readonly number[],
  budget = SYNC_BYTES,
): ControlMessage[] {
  const out: ControlMessage[] = [];
  if (add.length) for (const p of chunks(add, budget)) out.push({ type: 'networks-update', add: p, remove: [] });
  if (remove.length) for (const p of chunks(remove, budget)) out.push({ type: 'networks-update', add: [], remove: p });
  return out;
}

/** A VNI from a peer's entry (`{vni}` or a bare number), or -1. */
function vniOf(e: unknown): number {
  const v = typeof e === 'number' ? e : (e as { vni?: unknown } | null)?.vni;
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 0xffffff ? (v as number) : -1;
}

/** What applying a message did. */
export type SyncResult =
  /** The peer's networks changed (the link re-computes what it carries). */
  | { kind: 'changed'; first: boolean }
  /** A part of a list was taken; more follow. */
  | { kind: 'pending' }
  /** The peer broke the protocol: close the link with this reason. */
  | { kind: 'error'; reason: string };

/** One link's view of its peer's networks. */
export class PeerNetworks {
  /** VNIs the peer has, once its first full list arrived; undefined before. */
  offered: Set<number> | undefined;
  /** Entries beyond {@link MAX_PEER_NETWORKS} that were ignored. */
  ignored = 0;
  #pending: Set<number> | undefined;
  #nextPart = 0;

  /** Applies a `networks` or `networks-update` message; other types are not for it. */
  apply(msg: ControlMessage): SyncResult {
    if (msg.type === 'networks') return this.#list(msg);
    return this.#update(msg);
  }

  #list(msg: ControlMessage): SyncResult {
    const nets = msg['networks'];
    if (!Array.isArray(nets)) return { kind: 'error', reason: 'a networks message without a networks array' };
    const part = msg['part'] ?? 0;
    if (part !== this.#nextPart)
      return { kind: 'error', reason: `networks part ${String(part)} out of order (expected ${this.#nextPart})` };
    if (part === 0) this.#pending = new Set();
    const into = this.#pending as Set<number>;
    this.#add(into, nets);
    if (msg['last'] === false) {
      this.#nextPart++;
      return { kind: 'pending' };
    }
    const first = this.offered === undefined;
    this.offered = into;
    this.#pending = undefined;
    this.#nextPart = 0;
    return { kind: 'changed', first };
  }

  #update(msg: ControlMessage): SyncResult {
    const add = msg['add'] ?? [];
    const remove = msg['remove'] ?? [];
    if (!Array.isArray(add) || !Array.isArray(remove))
      return { kind: 'error', reason: 'a networks-update message whose add or remove is not an array' };
    if (this.offered === undefined || this.#pending !== undefined)
      return { kind: 'error', reason: 'a networks-update message before the full network list' };
    for (const e of remove) this.offered.delete(vniOf(e));
    this.#add(this.offered, add);
    return { kind: 'changed', first: false };
  }

  #add(into: Set<number>, entries: unknown[]): void {
    for (const e of entries) {
      const vni = vniOf(e);
      if (vni < 0) continue;
      if (into.size >= MAX_PEER_NETWORKS && !into.has(vni)) this.ignored++;
      else into.add(vni);
    }
  }
}
