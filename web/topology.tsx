/**
 * The topology as SVG: hosts as boxes, the links between them (state, path,
 * RTT, rate), and in each host its networks with their ports. A network with
 * more ports than fit is drawn as a count, not as a thousand nodes.
 */

import { keyOf, type PortRow } from '../src/api/overview-rates.js';
import type { OverviewHost, OverviewLink, OverviewView } from '../src/api/views.js';
import { bits } from './model.js';

const W = 300;
const ROW = 18;
const PORTS_SHOWN = 6;
const GAP_X = 220;
/** Where a host's first network line sits below its top. */
const HEAD = 58;
const GAP_Y = 60;

interface Box {
  host: OverviewHost;
  x: number;
  y: number;
  h: number;
  nets: { name: string; vni?: number; ports: PortRow[] }[];
}

function layout(view: OverviewView, ports: PortRow[]): { boxes: Box[]; width: number; height: number } {
  const hosts: OverviewHost[] = [...view.hosts];
  // A link's peer the overview does not list (an older peer): drawn too, state from the link.
  for (const l of view.links) {
    if (l.peer && !hosts.some((h) => h.id === l.peer))
      hosts.push({ id: l.peer, state: l.state === 'up' ? 'up' : 'down', local: false });
  }
  const byHost = new Map<string, PortRow[]>();
  for (const p of ports) {
    const list = byHost.get(p.host) ?? [];
    list.push(p);
    byHost.set(p.host, list);
  }
  const cols = Math.max(1, Math.min(3, Math.ceil(Math.sqrt(hosts.length))));
  const boxes: Box[] = [];
  const rowHeights: number[] = [];
  hosts.forEach((host, i) => {
    const nets = new Map<string, PortRow[]>();
    for (const p of byHost.get(host.id) ?? []) {
      const n = p.network ?? '(trunk)';
      nets.set(n, [...(nets.get(n) ?? []), p]);
    }
    for (const n of view.networks) if (n.hosts.includes(host.id) && !nets.has(n.name)) nets.set(n.name, []);
    const list = [...nets.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, ps]) => ({ name, vni: view.networks.find((n) => n.name === name)?.vni, ports: ps }));
    const lines = list.reduce((n, net) => n + 1 + Math.min(net.ports.length, PORTS_SHOWN + 1), 0);
    const h = HEAD + Math.max(1, lines) * ROW - 6;
    const r = Math.floor(i / cols);
    rowHeights[r] = Math.max(rowHeights[r] ?? 0, h);
    boxes.push({ host, x: (i % cols) * (W + GAP_X), y: r, h, nets: list });
  });
  const tops: number[] = [];
  let y = 0;
  for (const h of rowHeights) {
    tops.push(y);
    y += h + GAP_Y;
  }
  for (const b of boxes) b.y = tops[b.y] ?? 0;
  return { boxes, width: cols * W + (cols - 1) * GAP_X, height: Math.max(y - GAP_Y, 60) };
}

/** One line per host pair: both ends' views of a link merged. */
function pairs(links: OverviewLink[]): { a: string; b: string; links: OverviewLink[] }[] {
  const m = new Map<string, { a: string; b: string; links: OverviewLink[] }>();
  for (const l of links) {
    if (!l.peer) continue;
    const [a, b] = [l.host, l.peer].sort() as [string, string];
    const k = `${a}|${b}`;
    const e = m.get(k) ?? { a, b, links: [] };
    e.links.push(l);
    m.set(k, e);
  }
  return [...m.values()];
}

function stateClass(s: string): string {
  return s === 'up' ? 'ok' : s === 'unreachable' || s === 'down' ? 'bad' : 'warn';
}

export function Topology(props: { view: OverviewView; ports: PortRow[]; onSelect: (key: string) => void }) {
  const { boxes, width, height } = layout(props.view, props.ports);
  const at = new Map(boxes.map((b) => [b.host.id, b]));
  const center = (b: Box) => ({ x: b.x + W / 2, y: b.y + b.h / 2 });
  return (
    <svg
      class="topology"
      data-testid="topology"
      viewBox={`-10 -10 ${width + 20} ${height + 20}`}
      width={width + 20}
      role="img"
      aria-label="topology"
    >
      {pairs(props.view.links).map((p) => {
        const a = at.get(p.a);
        const b = at.get(p.b);
        if (!a || !b) return null;
        const ca = center(a);
        const cb = center(b);
        const l = p.links[0]!;
        const up = p.links.every((x) => x.state === 'up');
        const rtt = p.links.find((x) => x.rtt_ms !== undefined)?.rtt_ms;
        const bps = Math.max(...p.links.map((x) => x.tx_bps + x.rx_bps));
        const how = `${l.path}${rtt !== undefined ? ` · RTT ${rtt.toFixed(rtt < 10 ? 2 : 0)} ms` : ''}`;
        const mx = (ca.x + cb.x) / 2;
        const my = (ca.y + cb.y) / 2;
        return (
          <g class={`link ${up ? 'ok' : 'bad'} ${l.path}`} data-link={`${p.a}|${p.b}`} key={`${p.a}|${p.b}`}>
            <line x1={ca.x} y1={ca.y} x2={cb.x} y2={cb.y} />
            <text x={mx} y={my - 24} text-anchor="middle">
              {p.links.map((x) => x.name).join(' / ')}
            </text>
            <text x={mx} y={my - 10} text-anchor="middle">
              {up ? how : p.links.map((x) => x.state).join(' / ')}
            </text>
            <text x={mx} y={my + 16} text-anchor="middle" class="rate">
              {up ? bits(bps) : ''}
            </text>
          </g>
        );
      })}
      {boxes.map((b) => (
        <HostBox
          box={b}
          key={b.host.id}
          local={b.host.id === props.view.host}
          now={props.view.at}
          onSelect={props.onSelect}
        />
      ))}
    </svg>
  );
}

function HostBox(props: { box: Box; local: boolean; now: number; onSelect: (key: string) => void }) {
  const { box } = props;
  const { host } = box;
  let y = box.y + HEAD;
  const rows = [];
  for (const net of box.nets) {
    rows.push(
      <text class="net" x={box.x + 10} y={y} key={`n:${net.name}`} data-network={`${host.id}/${net.name}`}>
        {net.name}
        {net.vni !== undefined ? ` (vni ${net.vni})` : ''}: {net.ports.length} port{net.ports.length === 1 ? '' : 's'}
      </text>,
    );
    y += ROW;
    const shown = net.ports.length > PORTS_SHOWN + 1 ? net.ports.slice(0, PORTS_SHOWN) : net.ports;
    for (const p of [...shown].sort((a, b) => a.name.localeCompare(b.name))) {
      const mac = p.macs[0] ? ` ${p.macs[0]}${p.mac_count > 1 ? ` +${p.mac_count - 1}` : ''}` : '';
      rows.push(
        <a
          class={`port ${stateClass(p.state)}`}
          key={`p:${p.key}`}
          data-port={keyOf(p.host, p.name)}
          href={`#port:${p.key}`}
          onClick={(e) => {
            e.preventDefault();
            props.onSelect(p.key);
          }}
        >
          <circle cx={box.x + 26} cy={y - 4} r={4} />
          <text x={box.x + 36} y={y}>
            {p.name}
            <tspan class="dim">{mac}</tspan>
            <tspan class="rate"> {bits(p.rx_bps + p.tx_bps)}</tspan>
          </text>
        </a>,
      );
      y += ROW;
    }
    if (shown.length < net.ports.length) {
      rows.push(
        <text class="dim" x={box.x + 26} y={y} key={`m:${net.name}`}>
          … and {net.ports.length - shown.length} more (see Ports)
        </text>,
      );
      y += ROW;
    }
  }
  // A fabric's other hosts answer from a cache of about a second; older numbers are said to be.
  const age = host.at !== undefined ? Math.round((props.now - host.at) / 1000) : 0;
  const line = [host.state, host.address, host.reason, age >= 3 ? `numbers ${age} s old` : undefined]
    .filter(Boolean)
    .join(' · ');
  return (
    <g class={`host ${stateClass(host.state)}`} data-host={host.id}>
      <rect x={box.x} y={box.y} width={W} height={box.h} rx={8} />
      <text class="host-name" x={box.x + 10} y={box.y + 22}>
        {host.id}
        {props.local ? ' (this host)' : ''}
      </text>
      <text class={host.state === 'up' ? 'dim' : 'bad'} x={box.x + 10} y={box.y + 38}>
        <title>{line}</title>
        {line.length > 46 ? `${line.slice(0, 45)}…` : line}
      </text>
      {rows}
    </g>
  );
}
