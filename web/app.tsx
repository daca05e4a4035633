/**
 * The dashboard: polls `GET /v1/overview` once a second (the next poll starts
 * when the last one ended, so a slow daemon is never asked twice at once) and
 * draws the topology, the links, the ports and the NBD exports with the rates
 * the RateTracker derives from successive counters.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import { type ExportRow, type Model, RateTracker, sum } from '../src/api/overview-rates.js';
import type { OverviewLink, OverviewView } from '../src/api/views.js';
import { bits, bytes, perSec } from './model.js';
import { PortDetail, PortTable } from './ports.js';
import { Topology } from './topology.js';

interface State {
  model?: Model;
  error?: string;
  /** ms epoch of the last answer. */
  ok?: number;
}

function params(): { url: string; interval: number } {
  const q = new URLSearchParams(location.search);
  const scope = q.get('scope');
  const interval = Number(q.get('interval') ?? 1000);
  return {
    url: `v1/overview${scope ? `?scope=${encodeURIComponent(scope)}` : ''}`,
    interval: Number.isFinite(interval) && interval >= 200 ? interval : 1000,
  };
}

async function fetchOverview(url: string): Promise<OverviewView> {
  const res = await fetch(url, { cache: 'no-store', headers: { accept: 'application/json' } });
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
    } catch {}
    throw new Error(`${url}: ${res.status} ${msg}`);
  }
  return JSON.parse(text) as OverviewView;
}

function useOverview(): State {
  const [state, setState] = useState<State>({});
  useEffect(() => {
    const { url, interval } = params();
    const tracker = new RateTracker();
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const model = tracker.update(await fetchOverview(url));
        if (!stopped) setState({ model, ok: Date.now() });
      } catch (err) {
        if (!stopped) setState((s) => ({ ...s, error: err instanceof Error ? err.message : String(err) }));
      }
      if (!stopped) timer = setTimeout(tick, interval);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  return state;
}

function Links(props: { links: OverviewLink[] }) {
  if (props.links.length === 0) return <p class="dim">No links.</p>;
  return (
    <table class="grid" data-testid="link-table">
      <thead>
        <tr>
          <th>host</th>
          <th>link</th>
          <th>peer</th>
          <th>state</th>
          <th>path</th>
          <th>transport</th>
          <th>RTT</th>
          <th>tx</th>
          <th>rx</th>
          <th>drops</th>
        </tr>
      </thead>
      <tbody>
        {props.links.map((l) => (
          <tr key={`${l.host}/${l.name}`} data-link={`${l.host}/${l.name}`}>
            <td>{l.host}</td>
            <td>{l.name}</td>
            <td>{l.peer ?? ''}</td>
            <td class={l.state === 'up' ? 'ok' : 'warn'}>{l.state}</td>
            <td>{l.path}</td>
            <td>{l.transport}</td>
            <td class="num">{l.rtt_ms !== undefined ? `${l.rtt_ms.toFixed(2)} ms` : ''}</td>
            <td class="num">{bits(l.tx_bps)}</td>
            <td class="num">{bits(l.rx_bps)}</td>
            <td
              class="num"
              title={Object.entries(l.drops)
                .filter(([, n]) => n > 0)
                .map(([r, n]) => `${r}: ${n}`)
                .join('\n')}
            >
              {sum(l.drops)}
              {Object.entries(l.drops)
                .filter(([, n]) => n > 0)
                .map(([r, n]) => ` ${r} ${n}`)
                .join(',')}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Exports(props: { exports: ExportRow[] }) {
  if (props.exports.length === 0) return <p class="dim">No NBD exports.</p>;
  return (
    <table class="grid" data-testid="export-table">
      <thead>
        <tr>
          <th>host</th>
          <th>export</th>
          <th>state</th>
          <th>size</th>
          <th>clients</th>
          <th>read</th>
          <th>write</th>
          <th>requests</th>
          <th>errors</th>
        </tr>
      </thead>
      <tbody>
        {props.exports.map((e) => (
          <tr key={e.key} data-export={e.key}>
            <td>{e.host}</td>
            <td>{e.name}</td>
            <td class={e.state === 'up' ? 'ok' : 'warn'}>{e.state}</td>
            <td class="num">{e.size === null ? '' : bytes(e.size)}</td>
            <td class="num">{e.clients}</td>
            <td class="num">
              {bytes(e.read_Bps)}/s <span class="dim">({bytes(e.bytes_read)})</span>
            </td>
            <td class="num">
              {bytes(e.write_Bps)}/s <span class="dim">({bytes(e.bytes_written)})</span>
            </td>
            <td class="num">{perSec(e.req_ps, '')}</td>
            <td class={`num ${e.errors > 0 ? 'bad' : ''}`}>{e.errors}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Summary(props: { model: Model }) {
  const { view, ports } = props.model;
  const rx = ports.reduce((n, p) => n + p.rx_bps, 0);
  const tx = ports.reduce((n, p) => n + p.tx_bps, 0);
  const drops = ports.reduce((n, p) => n + p.drops_ps, 0);
  const down = view.hosts.filter((h) => h.state !== 'up');
  return (
    <div class="summary" data-testid="summary">
      <span>
        <b>{view.hosts.length}</b> host{view.hosts.length === 1 ? '' : 's'}
      </span>
      <span>
        <b>{view.networks.length}</b> networks
      </span>
      <span>
        <b>{ports.length}</b> ports
      </span>
      <span>
        <b>{view.links.length}</b> links
      </span>
      <span>
        <b>{view.exports.length}</b> exports
      </span>
      <span>
        in <b>{bits(rx)}</b> out <b>{bits(tx)}</b>
      </span>
      <span class={drops > 0 ? 'bad' : ''}>
        drops <b>{perSec(drops, '')}</b>
      </span>
      {down.map((h) => (
        <span class="bad" key={h.id}>
          {h.id} {h.state}
          {h.reason ? `: ${h.reason}` : ''}
        </span>
      ))}
    </div>
  );
}

export function App() {
  const { model, error, ok } = useOverview();
  const [selected, setSelected] = useState<string | undefined>();
  const reasons = useMemo(() => {
    const s = new Set<string>();
    for (const p of model?.ports ?? []) for (const r of Object.keys(p.drops)) s.add(r);
    return [...s];
  }, [model]);
  const port = selected ? model?.ports.find((p) => p.key === selected) : undefined;
  return (
    <main>
      <header class="top">
        <h1>vmlink</h1>
        {model && (
          <span class="where">
            {model.view.host} · {model.view.scope === 'fabric' ? 'the whole fabric' : 'this host'} ·{' '}
            {new Date(model.view.at).toLocaleTimeString()}
          </span>
        )}
        <span class={`live ${error ? 'bad' : 'ok'}`} data-testid="live">
          {error ? `not updating: ${error}` : ok ? 'live' : 'connecting…'}
        </span>
      </header>
      {!model ? (
        <p class="loading">{error ? `Cannot read the overview: ${error}` : 'Loading…'}</p>
      ) : (
        <>
          <Summary model={model} />
          <h2>Topology</h2>
          <div class="scroll">
            <Topology view={model.view} ports={model.ports} onSelect={setSelected} />
          </div>
          <h2>Links</h2>
          <Links links={model.view.links} />
          <h2>Ports</h2>
          {port && <PortDetail port={port} reasons={reasons} onClose={() => setSelected(undefined)} />}
          <PortTable ports={model.ports} selected={selected} onSelect={setSelected} />
          <h2>NBD exports</h2>
          <Exports exports={model.exports} />
        </>
      )}
    </main>
  );
}
