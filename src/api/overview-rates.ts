/**
 * Rates from successive `GET /v1/overview` answers, for the web dashboard
 * (web/, bundled by esbuild) and any other viewer: the daemon keeps counters
 * only (no sampler), so a viewer divides each counter's growth by the time
 * between the two samples of the host that took them (`hosts[].at`, else
 * `at`). A counter that went down (the port was deleted and made again under
 * the same name) starts over. Pure: no DOM, no Node.js.
 */
import type { OverviewExport, OverviewLink, OverviewPort, OverviewView } from './views.js';

/** A port with its rates (bits/s, frames/s, drops/s) and a short rate history. */
export interface PortRow extends OverviewPort {
  key: string;
  rx_bps: number;
  tx_bps: number;
  rx_fps: number;
  tx_fps: number;
  drops_total: number;
  drops_ps: number;
  /** Drops per second by reason (reasons that grew). */
  drop_rates: Record<string, number>;
  /** rx + tx bits/s of the last samples, oldest first. */
  history: number[];
}

export interface ExportRow extends OverviewExport {
  key: string;
  read_Bps: number;
  write_Bps: number;
  req_ps: number;
}

export interface Model {
  /** The answer, its links' `tx_bps`/`rx_bps` taken from their byte counters (see {@link RateTracker}). */
  view: OverviewView;
  ports: PortRow[];
  exports: ExportRow[];
}

const HISTORY = 60;

interface PortSample {
  at: number;
  p: OverviewPort;
  row: PortRow;
}

interface LinkSample {
  at: number;
  l: OverviewLink;
  /** The link as shown, its rates from the counters. */
  shown: OverviewLink;
}

interface ExportSample {
  at: number;
  e: OverviewExport;
  row: ExportRow;
}

export const keyOf = (host: string, name: string): string => `${host}/${name}`;

export const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

/** Growth per second, or undefined when the counter went back (a new object under the same name). */
function per(now: number, before: number, dt: number): number | undefined {
  if (now < before) return undefined;
  return (now - before) / dt;
}

export class RateTracker {
  #ports = new Map<string, PortSample>();
  #links = new Map<string, LinkSample>();
  #exports = new Map<string, ExportSample>();

  update(view: OverviewView): Model {
    const atOf = new Map(view.hosts.map((h) => [h.id, h.at ?? view.at]));
    const when = (host: string): number => atOf.get(host) ?? view.at;
    const ports = new Map<string, PortSample>();
    for (const p of view.ports) {
      const key = keyOf(p.host, p.name);
      const at = when(p.host);
      const row = this.#portRow(key, p, at, this.#ports.get(key));
      ports.set(key, { at, p, row });
    }
    this.#ports = ports;
    const exports = new Map<string, ExportSample>();
    for (const e of view.exports) {
      const key = keyOf(e.host, e.name);
      const at = when(e.host);
      exports.set(key, { at, e, row: exportRow(key, e, at, this.#exports.get(key)) });
    }
    this.#exports = exports;
    // A link's own tx_bps/rx_bps is a one-second window each host samples at its own phase; from the byte counters
    // and the host's sample time, two hosts' links (and ports) are rated over the same kind of interval.
    const links = new Map<string, LinkSample>();
    for (const l of view.links) {
      const key = keyOf(l.host, l.name);
      const at = when(l.host);
      links.set(key, { at, l, shown: linkShown(l, at, this.#links.get(key)) });
    }
    this.#links = links;
    return {
      view: { ...view, links: [...links.values()].map((s) => s.shown) },
      ports: [...ports.values()].map((s) => s.row),
      exports: [...exports.values()].map((s) => s.row),
    };
  }

  #portRow(key: string, p: OverviewPort, at: number, prev: PortSample | undefined): PortRow {
    const drops_total = sum(p.drops);
    const row: PortRow = {
      ...p,
      key,
      rx_bps: 0,
      tx_bps: 0,
      rx_fps: 0,
      tx_fps: 0,
      drops_total,
      drops_ps: 0,
      drop_rates: {},
      history: prev ? prev.row.history : [],
    };
    if (!prev) return row;
    const dt = (at - prev.at) / 1000;
    // The same numbers again (a cached remote sample): keep the rates shown.
    if (dt <= 0) return { ...prev.row, ...p, key, drops_total };
    const q = prev.p;
    const rates = [
      per(p.rx_bytes, q.rx_bytes, dt),
      per(p.tx_bytes, q.tx_bytes, dt),
      per(p.rx_frames, q.rx_frames, dt),
      per(p.tx_frames, q.tx_frames, dt),
      per(drops_total, prev.row.drops_total, dt),
    ];
    if (rates.some((r) => r === undefined)) return { ...row, history: [] };
    const [rxB, txB, rxF, txF, dps] = rates as number[];
    row.rx_bps = rxB! * 8;
    row.tx_bps = txB! * 8;
    row.rx_fps = rxF!;
    row.tx_fps = txF!;
    row.drops_ps = dps!;
    for (const [reason, n] of Object.entries(p.drops)) {
      const r = per(n, q.drops[reason] ?? 0, dt);
      if (r) row.drop_rates[reason] = r;
    }
    row.history = [...prev.row.history, row.rx_bps + row.tx_bps].slice(-HISTORY);
    return row;
  }
}

function linkShown(l: OverviewLink, at: number, prev: LinkSample | undefined): OverviewLink {
  if (!prev) return l;
  const dt = (at - prev.at) / 1000;
  // The same numbers again (a cached remote sample): keep the rates shown.
  if (dt <= 0) return { ...l, tx_bps: prev.shown.tx_bps, rx_bps: prev.shown.rx_bps };
  const tx = per(l.tx_bytes, prev.l.tx_bytes, dt);
  const rx = per(l.rx_bytes, prev.l.rx_bytes, dt);
  // A counter that went back (the link was made again): the daemon's own window until the next sample.
  if (tx === undefined || rx === undefined) return l;
  return { ...l, tx_bps: tx * 8, rx_bps: rx * 8 };
}

function exportRow(key: string, e: OverviewExport, at: number, prev: ExportSample | undefined): ExportRow {
  const row: ExportRow = { ...e, key, read_Bps: 0, write_Bps: 0, req_ps: 0 };
  if (!prev) return row;
  const dt = (at - prev.at) / 1000;
  if (dt <= 0) return { ...prev.row, ...e, key };
  const r = per(e.bytes_read, prev.e.bytes_read, dt);
  const w = per(e.bytes_written, prev.e.bytes_written, dt);
  const q = per(e.requests, prev.e.requests, dt);
  if (r === undefined || w === undefined || q === undefined) return row;
  return { ...row, read_Bps: r, write_Bps: w, req_ps: q };
}
