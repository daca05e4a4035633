/**
 * What `vmlink top` shows (src/cli/top.ts runs it): per port and link, the
 * rates over the last interval from the deltas of two reads of the daemon's
 * counters, sorted, and laid out as lines that fit the terminal.
 */
import type { LinkView, PortView } from '../api/client.js';

/** The two reads rates come from. */
export interface TopSample {
  /** When it was read, ms (monotonic). */
  at: number;
  ports: readonly PortView[];
  links: readonly LinkView[];
}

/** One row: a port or a link with its rates over the last interval. */
export interface TopRow {
  name: string;
  /** Port kind, or `link` + transport. */
  kind: string;
  /** The port's network (or trunk), the link's peer host. */
  where: string;
  state: string;
  rxBps: number;
  txBps: number;
  rxFps: number;
  txFps: number;
  /** Drops per second over the interval, all reasons. */
  dropsPs: number;
  /** Reasons that dropped in the interval, most first: `[reason, per second]`. */
  reasons: [string, number][];
  /** Links: round-trip time in ms, when known. */
  rttMs?: number | undefined;
}

export const SORT_KEYS = ['rate', 'rx', 'tx', 'frames', 'drops', 'name'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

interface Counts {
  rxBytes: number;
  txBytes: number;
  rxFrames: number;
  txFrames: number;
  drops: Record<string, number>;
}

function rowOf(
  base: Omit<TopRow, 'rxBps' | 'txBps' | 'rxFps' | 'txFps' | 'dropsPs' | 'reasons'>,
  cur: Counts,
  prev: Counts | undefined,
  seconds: number,
): TopRow {
  // A counter that went down (the port was re-created) starts over from zero.
  const d = (now: number, before: number | undefined) =>
    before === undefined || now < before || seconds <= 0 ? 0 : (now - before) / seconds;
  const reasons: [string, number][] = [];
  for (const [reason, n] of Object.entries(cur.drops)) {
    const r = d(n, prev?.drops[reason]);
    if (r > 0) reasons.push([reason, r]);
  }
  reasons.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return {
    ...base,
    rxBps: d(cur.rxBytes, prev?.rxBytes) * 8,
    txBps: d(cur.txBytes, prev?.txBytes) * 8,
    rxFps: d(cur.rxFrames, prev?.rxFrames),
    txFps: d(cur.txFrames, prev?.txFrames),
    dropsPs: reasons.reduce((s, [, r]) => s + r, 0),
    reasons,
  };
}

const portCounts = (p: PortView): Counts => ({
  rxBytes: p.counters.rx_bytes,
  txBytes: p.counters.tx_bytes,
  rxFrames: p.counters.rx_frames,
  txFrames: p.counters.tx_frames,
  drops: p.counters.drops,
});
const linkCounts = (l: LinkView): Counts => ({
  rxBytes: l.rx_bytes,
  txBytes: l.tx_bytes,
  rxFrames: l.rx_frames,
  txFrames: l.tx_frames,
  drops: l.drops,
});

/** The rows of `cur`, with rates from `prev` (no rates for what `prev` lacks: a new port shows 0 once). */
export function topRows(prev: TopSample | undefined, cur: TopSample): { ports: TopRow[]; links: TopRow[] } {
  const seconds = prev ? (cur.at - prev.at) / 1000 : 0;
  const prevPorts = new Map(prev?.ports.map((p) => [p.name, portCounts(p)]));
  const prevLinks = new Map(prev?.links.map((l) => [l.name, linkCounts(l)]));
  const ports = cur.ports.map((p) => {
    const where = p.network ?? (p.trunk ? `trunk(${Object.keys(p.trunk.vlans).join(',')})` : '-');
    return rowOf({ name: p.name, kind: p.kind, where, state: p.state }, portCounts(p), prevPorts.get(p.name), seconds);
  });
  const links = cur.links.map((l) =>
    rowOf(
      { name: l.name, kind: l.transport, where: l.peer ?? '-', state: l.state, rttMs: l.rtt_ms },
      linkCounts(l),
      prevLinks.get(l.name),
      seconds,
    ),
  );
  return { ports, links };
}

/** Rows ordered by `key`, the busiest first (names break ties, so the order is stable). */
export function sortRows(rows: readonly TopRow[], key: SortKey): TopRow[] {
  const v = (r: TopRow): number => {
    switch (key) {
      case 'rx':
        return r.rxBps;
      case 'tx':
        return r.txBps;
      case 'frames':
        return r.rxFps + r.txFps;
      case 'drops':
        return r.dropsPs;
      case 'name':
        return 0;
      case 'rate':
        return r.rxBps + r.txBps;
    }
  };
  return [...rows].sort((a, b) => v(b) - v(a) || a.name.localeCompare(b.name));
}

/** 1234567 -> `1.23M` (SI, three significant digits). */
export function si(n: number): string {
  if (n < 1) return n === 0 ? '0' : n.toFixed(1);
  const units = ['', 'k', 'M', 'G', 'T', 'P'];
  let i = 0;
  while (n >= 999.5 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n >= 99.5 || i === 0 ? Math.round(n) : n.toFixed(n >= 9.95 ? 1 : 2)}${units[i]}`;
}

const PORT_HEAD = [
  'PORT',
  'KIND',
  'NETWORK',
  'STATE',
  'RX bit/s',
  'TX bit/s',
  'RX fr/s',
  'TX fr/s',
  'DROP/s',
  'REASONS',
];
const LINK_HEAD = ['LINK', 'TRANSPORT', 'PEER', 'STATE', 'RX bit/s', 'TX bit/s', 'RX fr/s', 'TX fr/s', 'DROP/s', 'RTT'];
const RIGHT = new Set([4, 5, 6, 7, 8]);

function cells(r: TopRow, link: boolean): string[] {
  const last = link
    ? r.rttMs === undefined
      ? '-'
      : `${r.rttMs.toFixed(r.rttMs < 10 ? 2 : 1)}ms`
    : r.reasons.map(([k, n]) => `${k}:${si(n)}`).join(' ');
  return [r.name, r.kind, r.where, r.state, si(r.rxBps), si(r.txBps), si(r.rxFps), si(r.txFps), si(r.dropsPs), last];
}

/** Aligned lines of a table (header first); the last column is left as long as it is. */
function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : RIGHT.has(i) ? c.padStart(w[i] ?? 0) : c.padEnd(w[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)];
}

const count = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

export interface FrameOptions {
  /** Terminal rows and columns the frame must fit. */
  rows: number;
  cols: number;
  sort: SortKey;
  /** Seconds between reads (shown in the header). */
  interval: number;
  host: string;
  /** The clock line: e.g. `12:03:04`. */
  time: string;
  /** Live on a terminal: the header says how to quit. */
  live: boolean;
  /** A problem to show (the daemon stopped answering), else undefined. */
  error?: string | undefined;
}

/**
 * The lines of one frame, at most `rows` of them, each at most `cols`
 * characters: a header, the ports (busiest first) and the links. When rows
 * are short, ports and links share them (links get up to a third, at least
 * their header and one row when there are links); what does not fit is
 * counted in a `... N more` line.
 */
export function renderFrame(data: { ports: TopRow[]; links: TopRow[] }, o: FrameOptions): string[] {
  const cut = (s: string) => (s.length > o.cols ? s.slice(0, Math.max(0, o.cols)) : s);
  const head = [
    `vmlink top - host ${o.host} - ${count(data.ports.length, 'port')}, ${count(data.links.length, 'link')} - every ${o.interval}s, by ${o.sort}${o.live ? ' - q quits' : ''}   ${o.time}`,
    o.error === undefined ? '' : `! ${o.error}`,
  ];
  const ports = sortRows(data.ports, o.sort);
  const links = sortRows(data.links, o.sort);
  let budget = Math.max(0, o.rows - head.length);
  // Links: header + rows, up to a third of what is left (blank line before them).
  const linkRoom = links.length === 0 ? 0 : Math.min(links.length + 2, Math.max(3, Math.floor(budget / 3)));
  budget -= linkRoom;
  const section = (h: string[], rows: TopRow[], room: number, link: boolean): string[] => {
    if (room <= 0) return [];
    const shown = rows.length + 1 <= room ? rows.length : Math.max(0, room - 2);
    const lines = table(
      h,
      rows.slice(0, shown).map((r) => cells(r, link)),
    );
    if (shown < rows.length) lines.push(`... ${rows.length - shown} more`);
    return lines;
  };
  const out = [
    ...head,
    ...section(PORT_HEAD, ports, budget, false),
    ...(linkRoom > 0 ? ['', ...section(LINK_HEAD, links, linkRoom - 1, true)] : []),
  ];
  return out.slice(0, o.rows).map(cut);
}
