/**
 * Adaptive direct links (VNET's traffic inference), the hub's side: once a
 * second the hub looks at how many bytes it relayed between each pair of
 * spokes; above the threshold it asks one spoke to dial the other directly,
 * where one of them listens. The spokes report their direct links back
 * (`peer-links`), and the hub stops relaying between the two; when a direct
 * link closes, the report changes and relaying resumes (overlay.ts).
 */
import type { Logger } from '../../log.js';
import type { ControlMessage, LinkChannel } from './transport.js';

/** A pair is asked again after this long if no direct link formed, ms. */
const RETRY_MS = 30_000;

/** What the policy reads of a link (overlay.ts Link). */
export interface RelayLinkInfo {
  readonly name: string;
  peer: string | undefined;
  channel: LinkChannel | undefined;
  readonly relayBytes: Map<string, number>;
  readonly directPeers: Set<string>;
  remoteHost: string | undefined;
  listen: number | undefined;
}

export class DirectPolicy {
  readonly #log: Logger;
  readonly #threshold: number;
  /** "a|b" -> when the pair was last asked (ms). */
  readonly #asked = new Map<string, number>();
  #lastAt = performance.now();
  /** Direct links asked for so far. */
  requests = 0;

  constructor(logger: Logger, thresholdBps: number) {
    this.#log = logger;
    this.#threshold = thresholdBps;
  }

  /** Reads and resets the relay counters; asks for direct links where a pair is over the threshold. */
  sample(links: Iterable<RelayLinkInfo>, byPeer: Map<string, RelayLinkInfo>, now: number): void {
    const dt = (now - this.#lastAt) / 1000;
    this.#lastAt = now;
    const pairs = new Map<string, number>();
    for (const l of links) {
      if (l.peer === undefined) continue;
      for (const [to, bytes] of l.relayBytes) {
        const key = l.peer < to ? `${l.peer}|${to}` : `${to}|${l.peer}`;
        pairs.set(key, (pairs.get(key) ?? 0) + bytes);
      }
      l.relayBytes.clear();
    }
    if (this.#threshold <= 0 || dt <= 0) return;
    for (const [key, bytes] of pairs) {
      const bps = (bytes * 8) / dt;
      if (bps < this.#threshold) continue;
      if (now - (this.#asked.get(key) ?? -Infinity) < RETRY_MS) continue;
      const [x, y] = key.split('|') as [string, string];
      const lx = byPeer.get(x);
      const ly = byPeer.get(y);
      if (!lx?.channel || !ly?.channel) continue;
      if (lx.directPeers.has(y) || ly.directPeers.has(x)) continue;
      this.#asked.set(key, now);
      // The one that listens is dialled by the other.
      const [dialler, target] = ly.listen !== undefined ? [lx, ly] : lx.listen !== undefined ? [ly, lx] : [];
      if (!dialler || !target || target.remoteHost === undefined) {
        this.#log.info(
          { pair: key, bps: Math.round(bps) },
          `hosts ${x} and ${y} exchange ${Math.round(bps)} bit/s through this relay, but neither listens for links: they stay on the relay`,
        );
        continue;
      }
      const msg: ControlMessage = {
        type: 'direct',
        host: target.peer,
        connect: { host: target.remoteHost, port: target.listen },
      };
      if (dialler.channel?.sendControl(msg)) {
        this.requests++;
        this.#log.info(
          { pair: key, bps: Math.round(bps), dialler: dialler.peer, target: target.peer },
          `hosts ${x} and ${y} exchange ${Math.round(bps)} bit/s through this relay: asked ${dialler.peer} to link directly to ${target.peer} at ${target.remoteHost}:${target.listen}`,
        );
      }
    }
  }
}
