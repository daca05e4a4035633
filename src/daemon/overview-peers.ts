/**
 * The other hosts' overviews for the fabric scope of `GET /v1/overview`:
 * `GET <http>/v1/overview?scope=host` on the HTTP endpoint each host
 * publishes in its member record, all hosts at once, each within a timeout
 * (default 1.5 s), its body read up to a limit (default 16 MiB) and checked
 * field by field before it is used. Answers are kept for a short while
 * (default 1 s) and a fetch in flight is shared, so many viewers polling
 * every second cost each peer one request a second. While a new fetch is
 * slow (over 300 ms), viewers get the host's previous answer.
 *
 * A peer that does not answer, answers with an error status, too much or
 * something that is not an overview gives an `error` (the host is shown
 * `unreachable` with it), logged once per host until its reason changes.
 */
import { request } from 'undici';
import type { OverviewExport, OverviewLink, OverviewPort, OverviewView } from '../api/views.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

/** A peer's overview, or why there is none. */
export type PeerAnswer = { view: OverviewView } | { error: string };

export interface PeerOverviewOptions {
  logger: Logger;
  /** Whole request (connect, headers, body), ms; default 1500. */
  timeoutMs?: number;
  /** How long an answer is reused, ms; default 1000. */
  cacheMs?: number;
  /** Largest body accepted, bytes; default 16 MiB. */
  maxBytes?: number;
  /** How long a viewer waits for a new answer before it gets the host's previous one, ms; default 300. */
  staleMs?: number;
}

interface CacheEntry {
  url: string;
  /** When the fetch started (performance.now()). */
  at: number;
  answer: Promise<PeerAnswer>;
  /** The answer, once it came. */
  settled: PeerAnswer | undefined;
  /** The answer before (same endpoint), given while this one is slow. */
  last: PeerAnswer | undefined;
}

/** Thrown inside a fetch when an answer is refused; becomes the peer's `error`. */
class PeerAnswerError extends Error {}

export class PeerOverviews {
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #cacheMs: number;
  readonly #maxBytes: number;
  readonly #staleMs: number;
  readonly #cache = new Map<string, CacheEntry>();
  /** The last reason logged per host (a reason is logged once, until it changes or the host answers). */
  readonly #logged = new Map<string, string>();
  /** Answers refused (no answer, error status, too big, not an overview) since start. */
  refused = 0;

  constructor(opts: PeerOverviewOptions) {
    this.#log = opts.logger;
    this.#timeoutMs = opts.timeoutMs ?? 1500;
    this.#cacheMs = opts.cacheMs ?? 1000;
    this.#maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
    this.#staleMs = opts.staleMs ?? 300;
  }

  /**
   * Host `id`'s overview from its endpoint `base` (`http://IP:PORT`), fresh
   * within the cache time. While a new fetch is slower than the stale time,
   * the host's previous answer is given instead (its `at` says how old its
   * numbers are): a host that hangs does not hold every viewer up for the
   * whole timeout at each poll.
   */
  get(id: string, base: string): Promise<PeerAnswer> {
    const now = performance.now();
    let e = this.#cache.get(id);
    // A fetch in flight is shared however long it takes (at most the timeout): one request per host at a time.
    if (!e || e.url !== base || (e.settled && now - e.at >= this.#cacheMs)) {
      const last = e?.url === base ? e.settled : undefined;
      const entry: CacheEntry = { url: base, at: now, answer: this.#fetch(id, base), settled: undefined, last };
      void entry.answer.then((a) => {
        entry.settled = a;
      });
      this.#cache.set(id, entry);
      e = entry;
      // Hosts that left the fabric: dropped once they are many (the map is keyed by host id).
      if (this.#cache.size > 4096)
        for (const [k, v] of this.#cache) if (now - v.at > this.#cacheMs) this.#cache.delete(k);
    }
    if (e.settled || !e.last) return e.answer;
    const last = e.last;
    let timer: NodeJS.Timeout | undefined;
    const stale = new Promise<PeerAnswer>((resolve) => {
      timer = setTimeout(() => resolve(last), this.#staleMs);
    });
    return Promise.race([e.answer, stale]).finally(() => clearTimeout(timer));
  }

  async #fetch(id: string, base: string): Promise<PeerAnswer> {
    try {
      const view = await this.#request(id, base);
      this.#logged.delete(id);
      return { view };
    } catch (err) {
      this.refused++;
      const why = err instanceof PeerAnswerError ? err.message : `no answer from ${base}: ${describeError(err)}`;
      if (this.#logged.get(id) !== why) {
        this.#logged.set(id, why);
        this.#log.warn({ peer: id, http: base }, `overview of host "${id}" unavailable: ${why}`);
      }
      return { error: why };
    }
  }

  async #request(id: string, base: string): Promise<OverviewView> {
    let url: URL;
    try {
      url = new URL('/v1/overview?scope=host', base);
    } catch {
      throw new PeerAnswerError(`its published HTTP endpoint ${JSON.stringify(base)} is not a URL`);
    }
    if (url.protocol !== 'http:') throw new PeerAnswerError(`its published HTTP endpoint ${base} is not http://`);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    // reset: one connection per request; nothing stays open between polls (and nothing to close at stop).
    const res = await request(url, { signal, reset: true, headers: { accept: 'application/json' } });
    if (res.statusCode !== 200) {
      res.body.resume();
      throw new PeerAnswerError(`${url.href} answered HTTP ${res.statusCode}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.#maxBytes) {
        res.body.destroy();
        throw new PeerAnswerError(`${url.href} sent more than ${this.#maxBytes} bytes (refused)`);
      }
      chunks.push(chunk);
    }
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      throw new PeerAnswerError(`${url.href} sent a body that is not JSON: ${describeError(err)}`);
    }
    const v = checkOverview(body, id);
    if (typeof v === 'string') throw new PeerAnswerError(`${url.href} sent something that is not an overview: ${v}`);
    return v;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const optStr = (v: unknown): string | undefined => (isStr(v) ? v : undefined);

/** Counters by reason: every value a finite number. */
function drops(v: unknown): Record<string, number> | undefined {
  if (!isObj(v)) return undefined;
  return Object.values(v).every(isNum) ? (v as Record<string, number>) : undefined;
}

/**
 * The host-scope overview in `body` of host `id`, rebuilt from the expected
 * fields only (every item's `host` is `id`, whatever the peer wrote), or the
 * reason it is not one.
 */
function checkOverview(body: unknown, id: string): OverviewView | string {
  if (!isObj(body)) return 'not a JSON object';
  if (body['host'] !== id) return `host is ${JSON.stringify(body['host'])}, not "${id}"`;
  if (!isNum(body['at'])) return 'at is not a number';
  for (const k of ['networks', 'ports', 'links', 'exports']) if (!Array.isArray(body[k])) return `${k} is not a list`;
  const networks: OverviewView['networks'] = [];
  for (const n of body['networks'] as unknown[]) {
    if (!isObj(n) || !isStr(n['name']) || !isNum(n['vni']) || !isNum(n['mtu']))
      return 'a network lacks name, vni or mtu';
    const hosts = Array.isArray(n['hosts']) ? n['hosts'].filter(isStr) : [];
    networks.push({ name: n['name'], vni: n['vni'], mtu: n['mtu'], hosts });
  }
  const ports: OverviewPort[] = [];
  for (const p of body['ports'] as unknown[]) {
    const port = checkPort(p, id);
    if (typeof port === 'string') return port;
    ports.push(port);
  }
  const links: OverviewLink[] = [];
  for (const l of body['links'] as unknown[]) {
    const d = isObj(l) ? drops(l['drops']) : undefined;
    if (!isObj(l) || !isStr(l['name']) || !isStr(l['state']) || !d) return 'a link lacks name, state or drops';
    const nums = ['tx_bps', 'rx_bps', 'tx_bytes', 'rx_bytes'] as const;
    if (!nums.every((k) => isNum(l[k]))) return `link "${l['name']}" lacks ${nums.join(', ')}`;
    const peer = optStr(l['peer']);
    links.push({
      host: id,
      name: l['name'],
      ...(peer ? { peer } : {}),
      state: l['state'],
      path: l['path'] === 'relay' ? 'relay' : 'direct',
      transport: optStr(l['transport']) ?? '',
      ...(isNum(l['rtt_ms']) ? { rtt_ms: l['rtt_ms'] } : {}),
      tx_bps: l['tx_bps'] as number,
      rx_bps: l['rx_bps'] as number,
      tx_bytes: l['tx_bytes'] as number,
      rx_bytes: l['rx_bytes'] as number,
      drops: d,
    });
  }
  const exports: OverviewExport[] = [];
  for (const e of body['exports'] as unknown[]) {
    const nums = ['clients', 'requests', 'errors', 'bytes_read', 'bytes_written'] as const;
    if (!isObj(e) || !isStr(e['name']) || !isStr(e['state']) || !nums.every((k) => isNum(e[k])))
      return `an export lacks name, state or ${nums.join(', ')}`;
    exports.push({
      host: id,
      name: e['name'],
      state: e['state'],
      size: isNum(e['size']) ? e['size'] : null,
      clients: e['clients'] as number,
      requests: e['requests'] as number,
      errors: e['errors'] as number,
      bytes_read: e['bytes_read'] as number,
      bytes_written: e['bytes_written'] as number,
    });
  }
  return { at: body['at'], host: id, scope: 'host', hosts: [], networks, ports, links, exports };
}

function checkPort(p: unknown, id: string): OverviewPort | string {
  const nums = ['rx_bytes', 'rx_frames', 'tx_bytes', 'tx_frames', 'mac_count'] as const;
  if (!isObj(p) || !isStr(p['name']) || !isStr(p['kind']) || !isStr(p['state']))
    return 'a port lacks name, kind or state';
  if (!nums.every((k) => isNum(p[k]))) return `port "${p['name']}" lacks ${nums.join(', ')}`;
  const d = drops(p['drops']);
  if (!d) return `port "${p['name']}" has no drops by reason`;
  const q = p['qos'];
  const qos = isObj(q) && isNum(q['min']) && isNum(q['max']) && isNum(q['rate']) ? q : undefined;
  const network = optStr(p['network']);
  const peer = optStr(p['peer']);
  return {
    host: id,
    name: p['name'],
    kind: p['kind'],
    ...(network ? { network } : {}),
    state: p['state'],
    macs: Array.isArray(p['macs']) ? p['macs'].filter(isStr).slice(0, 8) : [],
    mac_count: p['mac_count'] as number,
    ...(peer ? { peer } : {}),
    rx_bytes: p['rx_bytes'] as number,
    rx_frames: p['rx_frames'] as number,
    tx_bytes: p['tx_bytes'] as number,
    tx_frames: p['tx_frames'] as number,
    drops: d,
    ...(qos ? { qos: { min: qos['min'] as number, max: qos['max'] as number, rate: qos['rate'] as number } } : {}),
  };
}
