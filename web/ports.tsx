/**
 * The ports: a paged table (50 rows a page, so a thousand ports render as
 * fast as fifty) with search over host, name, network, kind, state, MACs and
 * peer, sorted by any column (by rate, busiest first, unless told), and the
 * selected port's detail: drops by reason and its QoS against reservation/cap.
 */
import { useMemo, useState } from 'preact/hooks';
import type { PortRow } from '../src/api/overview-rates.js';
import { bits, perSec, si } from './model.js';

const PAGE = 50;

type SortKey = 'rate' | 'rx' | 'tx' | 'name' | 'host' | 'network' | 'state' | 'drops' | 'qos';

const SORTS: Record<SortKey, (a: PortRow, b: PortRow) => number> = {
  rate: (a, b) => b.rx_bps + b.tx_bps - (a.rx_bps + a.tx_bps) || a.key.localeCompare(b.key),
  rx: (a, b) => b.rx_bps - a.rx_bps || a.key.localeCompare(b.key),
  tx: (a, b) => b.tx_bps - a.tx_bps || a.key.localeCompare(b.key),
  name: (a, b) => a.name.localeCompare(b.name) || a.host.localeCompare(b.host),
  host: (a, b) => a.host.localeCompare(b.host) || a.name.localeCompare(b.name),
  network: (a, b) => (a.network ?? '').localeCompare(b.network ?? '') || a.key.localeCompare(b.key),
  state: (a, b) => a.state.localeCompare(b.state) || a.key.localeCompare(b.key),
  drops: (a, b) => b.drops_ps - a.drops_ps || b.drops_total - a.drops_total || a.key.localeCompare(b.key),
  qos: (a, b) => use(b) - use(a) || a.key.localeCompare(b.key),
};

const SORT_NAMES: Record<SortKey, string> = {
  rate: 'rate (rx + tx)',
  rx: 'rx rate',
  tx: 'tx rate',
  drops: 'drops',
  qos: 'QoS use',
  name: 'name',
  host: 'host',
  network: 'network',
  state: 'state',
};

/** The share of its cap (else of its reservation) a port uses, 0 without QoS. */
function use(p: PortRow): number {
  if (!p.qos) return 0;
  const of = p.qos.max || p.qos.min;
  return of ? p.qos.rate / of : 0;
}

function matches(p: PortRow, q: string): boolean {
  if (!q) return true;
  const hay = [p.host, p.name, p.network ?? '', p.kind, p.state, p.peer ?? '', ...p.macs].join(' ').toLowerCase();
  return q
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((w) => hay.includes(w));
}

export function QosBar(props: { qos: NonNullable<PortRow['qos']> }) {
  const { min, max, rate } = props.qos;
  const scale = Math.max(max, min, rate, 1);
  const over = max > 0 && rate > max * 0.95;
  return (
    <span
      class="qos"
      title={`${bits(rate)} used; reserved ${min ? bits(min) : 'nothing'}; cap ${max ? bits(max) : 'none'}`}
    >
      <span class="bar">
        <span
          class={`fill ${over ? 'bad' : rate >= min ? 'ok' : 'warn'}`}
          style={{ width: `${(100 * rate) / scale}%` }}
        />
        {min > 0 && <span class="min" style={{ left: `${(100 * min) / scale}%` }} />}
      </span>
      <span class="num">
        {bits(rate)}
        {max ? ` / ${bits(max)}` : ''}
      </span>
    </span>
  );
}

function Spark(props: { values: number[] }) {
  const v = props.values;
  if (v.length < 2) return <span class="dim">collecting…</span>;
  const top = Math.max(...v, 1);
  const pts = v.map((x, i) => `${(i * 300) / (v.length - 1)},${40 - (38 * x) / top}`).join(' ');
  return (
    <svg class="spark" viewBox="0 0 300 42" width="300" height="42" aria-label="rate history">
      <polyline points={pts} />
    </svg>
  );
}

export function PortDetail(props: { port: PortRow; reasons: string[]; onClose: () => void }) {
  const p = props.port;
  const reasons = [...new Set([...props.reasons, ...Object.keys(p.drops)])];
  return (
    <section class="detail" data-testid="port-detail" data-port={p.key}>
      <header>
        <h3>
          {p.host} / {p.name}
        </h3>
        <button type="button" onClick={props.onClose}>
          close
        </button>
      </header>
      <p>
        {p.kind} on {p.network ?? 'a trunk'}, {p.state}
        {p.peer ? `, peer ${p.peer}` : ''}; {p.mac_count} MAC{p.mac_count === 1 ? '' : 's'}
        {p.macs.length ? `: ${p.macs.join(', ')}${p.mac_count > p.macs.length ? ', …' : ''}` : ''}
      </p>
      <p>
        receive {bits(p.rx_bps)} ({perSec(p.rx_fps, 'frames')}), transmit {bits(p.tx_bps)} ({perSec(p.tx_fps, 'frames')}
        ); totals {si(p.rx_frames)}frames in, {si(p.tx_frames)}frames out
      </p>
      <Spark values={p.history} />
      {p.qos && (
        <p>
          QoS: <QosBar qos={p.qos} /> reserved {bits(p.qos.min)}
        </p>
      )}
      <div class="drops" data-testid="drops">
        <b>drops by reason</b>
        {reasons.map((r) => (
          <span key={r} class={p.drop_rates[r] ? 'bad' : (p.drops[r] ?? 0) > 0 ? '' : 'dim'} data-reason={r}>
            {r} {p.drops[r] ?? 0}
            {p.drop_rates[r] ? ` (+${perSec(p.drop_rates[r], '')})` : ''}
          </span>
        ))}
      </div>
    </section>
  );
}

function Header(props: { k: SortKey; label: string; sort: SortKey; setSort: (k: SortKey) => void }) {
  return (
    <th class={props.sort === props.k ? 'sorted' : ''}>
      <button type="button" onClick={() => props.setSort(props.k)}>
        {props.label}
      </button>
    </th>
  );
}

export function PortTable(props: { ports: PortRow[]; selected?: string | undefined; onSelect: (key: string) => void }) {
  const [query, setQuery] = useState('');
  const [sort, setSort] = useState<SortKey>('rate');
  const [page, setPage] = useState(0);
  const found = useMemo(
    () => props.ports.filter((p) => matches(p, query)).sort(SORTS[sort]),
    [props.ports, query, sort],
  );
  const pages = Math.max(1, Math.ceil(found.length / PAGE));
  const at = Math.min(page, pages - 1);
  const rows = found.slice(at * PAGE, (at + 1) * PAGE);
  const h = (k: SortKey, label: string) => <Header k={k} label={label} sort={sort} setSort={setSort} />;
  return (
    <section class="ports">
      <div class="tools">
        <input
          type="search"
          placeholder="search ports: name, host, network, MAC, state…"
          aria-label="search ports"
          data-testid="port-search"
          value={query}
          onInput={(e) => {
            setQuery((e.target as HTMLInputElement).value);
            setPage(0);
          }}
        />
        <label>
          sort by{' '}
          <select
            value={sort}
            data-testid="port-sort"
            onChange={(e) => setSort((e.target as HTMLSelectElement).value as SortKey)}
          >
            {Object.entries(SORT_NAMES).map(([k, label]) => (
              <option key={k} value={k}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <span class="count" data-testid="port-count">
          {found.length === props.ports.length
            ? `${props.ports.length} ports`
            : `${found.length} of ${props.ports.length} ports`}
        </span>
        <span class="pager">
          <button type="button" disabled={at === 0} onClick={() => setPage(at - 1)}>
            ‹ prev
          </button>
          <span data-testid="port-page">
            page {at + 1} of {pages}
          </span>
          <button type="button" disabled={at >= pages - 1} onClick={() => setPage(at + 1)}>
            next ›
          </button>
        </span>
      </div>
      <table class="grid" data-testid="port-table">
        <thead>
          <tr>
            {h('host', 'host')}
            {h('name', 'port')}
            {h('network', 'network')}
            {h('state', 'state')}
            <th>MACs</th>
            {h('rx', 'rx')}
            {h('tx', 'tx')}
            {h('rate', 'frames/s')}
            {h('drops', 'drops')}
            {h('qos', 'QoS use')}
          </tr>
        </thead>
        <tbody>
          {rows.map((p) => (
            <tr
              key={p.key}
              data-port={p.key}
              class={`${p.key === props.selected ? 'selected' : ''} ${p.state === 'up' ? '' : 'down'}`}
              onClick={() => props.onSelect(p.key)}
            >
              <td>{p.host}</td>
              <td class="name">
                {p.name} <span class="dim">{p.kind}</span>
              </td>
              <td>{p.network ?? 'trunk'}</td>
              <td class={p.state === 'up' ? 'ok' : 'warn'}>{p.state}</td>
              <td class="mono">
                {p.macs[0] ?? ''}
                {p.mac_count > 1 ? ` +${p.mac_count - 1}` : ''}
              </td>
              <td class="num" data-testid="rx" data-bps={Math.round(p.rx_bps)}>
                {bits(p.rx_bps)}
              </td>
              <td class="num" data-testid="tx" data-bps={Math.round(p.tx_bps)}>
                {bits(p.tx_bps)}
              </td>
              <td class="num">{si(p.rx_fps + p.tx_fps)}</td>
              <td
                class={`num ${p.drops_ps > 0 ? 'bad' : ''}`}
                title={Object.entries(p.drops)
                  .filter(([, n]) => n > 0)
                  .map(([r, n]) => `${r}: ${n}`)
                  .join('\n')}
              >
                {p.drops_total}
                {p.drops_ps > 0 ? ` (+${si(p.drops_ps)}/s)` : ''}
              </td>
              <td>{p.qos ? <QosBar qos={p.qos} /> : <span class="dim">none</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {found.length === 0 && <p class="dim">No port matches “{query}”.</p>}
    </section>
  );
}
