/**
 * Prometheus metrics (`GET /metrics` on the HTTP endpoint, docs/observe.md
 * "Metrics"). Every family is a collector that reads the backend's views when
 * it is scraped: the data path keeps bumping the plain counters it already
 * has and pays nothing for metrics. One scrape takes each view once (a
 * snapshot shared by the families, dropped at the next turn of the event loop).
 *
 * Naming follows Prometheus' rules: one `vmlink_` prefix, base units in the
 * name (bytes, seconds, bytes per second), `_total` on counters, `_info` for
 * metadata, and only bounded labels (names of ports, networks, links; drop
 * reasons and states from fixed lists; never a MAC).
 */

import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { type Metric, Registry } from 'prom-client';
import { parseRate } from '../config/qos-schema.js';
import type { LinkView } from '../net/overlay/link.js';
import type { QosView } from '../qos/view.js';
import type { ControlBackend, NetworkView, PortViewOut, StatusView } from './backend.js';
import type { HttpRoutes } from './http-server.js';
import { registerExportMetrics } from './metrics-exports.js';

type Labels = Record<string, string>;

/** When this process started, seconds since the epoch. */
const START_TIME_S = Math.round(Date.now() / 1000 - process.uptime());

/** The soft RLIMIT_NOFILE, read once; undefined where /proc/self/limits cannot be read. */
const MAX_FDS = ((): number | undefined => {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
})();
interface Sample {
  labels: Labels;
  value: number;
}

/** What one scrape reads from the backend: each view taken at most once. */
interface Scrape {
  status(): StatusView;
  ports(): PortViewOut[];
  networks(): NetworkView[];
  links(): LinkView[];
  qos(): QosView;
}

/** A metric family: name, help, type and the samples it reads from a scrape. */
interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: (s: Scrape) => Sample[];
}

const PORT_STATES = ['closed', 'listening', 'connecting', 'up', 'down'] as const;
const LINK_STATES = ['connecting', 'up', 'standby', 'down', 'closed'] as const;

/** The port's network, or empty for a trunk port (it carries several). */
const portLabels = (p: PortViewOut): Labels => ({ port: p.name, network: p.network ?? '', kind: p.kind });

/** One sample per port; `value` undefined leaves the port out. */
function perPort(
  f: (p: PortViewOut) => number | undefined,
  labels: (p: PortViewOut) => Labels = (p) => ({ port: p.name }),
) {
  return (s: Scrape): Sample[] => {
    const out: Sample[] = [];
    for (const p of s.ports()) {
      const value = f(p);
      if (value !== undefined) out.push({ labels: labels(p), value });
    }
    return out;
  };
}

function perLink(f: (l: LinkView) => number | undefined) {
  return (s: Scrape): Sample[] => {
    const out: Sample[] = [];
    for (const l of s.links()) {
      const value = f(l);
      if (value !== undefined) out.push({ labels: { link: l.name }, value });
    }
    return out;
  };
}

/**
 * Bytes per second from a policy rate as the QoS view writes it (`200mbit`, three significant decimals of its unit),
 * or undefined when absent or unreadable.
 */
function policyRate(v: string | number | boolean | undefined): number | undefined {
  if (v === undefined || typeof v === 'boolean') return undefined;
  const bits = parseRate(v);
  return typeof bits === 'number' ? bits / 8 : undefined;
}

/** One sample per port of the QoS view; `value` undefined leaves the port out. */
function qosPorts(s: Scrape, f: (p: QosView['ports'][number]) => number | undefined): Sample[] {
  const out: Sample[] = [];
  for (const p of s.qos().ports) {
    const value = f(p);
    if (value !== undefined) out.push({ labels: { port: p.name }, value });
  }
  return out;
}

function families(opts: { host: string; version: string }): Family[] {
  const counter = (name: string, help: string, samples: Family['samples']): Family => ({
    name,
    help,
    type: 'counter',
    samples,
  });
  const gauge = (name: string, help: string, samples: Family['samples']): Family => ({
    name,
    help,
    type: 'gauge',
    samples,
  });
  return [
    gauge('vmlink_info', 'The daemon: host id and version (value 1).', () => [
      { labels: { host: opts.host, version: opts.version }, value: 1 },
    ]),
    gauge('vmlink_daemon_uptime_seconds', 'Seconds since the daemon started.', (s) => [
      { labels: {}, value: s.status().host.uptime_s },
    ]),
    gauge(
      'vmlink_daemon_event_loop_delay_seconds',
      'How late a 20 ms timer fires over the last complete second (p50, p99, max) and the largest one-second max since start.',
      (s) => {
        const d = s.status().process.event_loop_delay_ms;
        return (['p50', 'p99', 'max', 'max_since_start'] as const).map((stat) => ({
          labels: { stat },
          value: d[stat] / 1000,
        }));
      },
    ),
    // The process, named as Prometheus' client libraries name it; read from what the daemon keeps or from cheap
    // calls (prom-client's default collectors read several /proc files per scrape, most of a small scrape's cost).
    counter('vmlink_process_cpu_seconds_total', 'CPU time the daemon used, user and system, in seconds.', () => {
      const c = process.cpuUsage();
      return [{ labels: {}, value: (c.user + c.system) / 1e6 }];
    }),
    gauge('vmlink_process_start_time_seconds', 'When the daemon process started, seconds since the Unix epoch.', () => [
      { labels: {}, value: START_TIME_S },
    ]),
    gauge('vmlink_process_resident_memory_bytes', 'Resident memory of the daemon, bytes.', (s) => [
      { labels: {}, value: s.status().process.rss_bytes },
    ]),
    gauge('vmlink_process_heap_bytes', 'JavaScript heap in use (V8 heapUsed), bytes.', (s) => [
      { labels: {}, value: s.status().process.heap_used_bytes },
    ]),
    gauge('vmlink_process_open_fds', 'Open file descriptors of the daemon.', (s) => {
      const fds = s.status().process.fds;
      return fds < 0 ? [] : [{ labels: {}, value: fds }];
    }),
    gauge('vmlink_process_max_fds', 'The most file descriptors the daemon may open (RLIMIT_NOFILE).', () =>
      MAX_FDS === undefined ? [] : [{ labels: {}, value: MAX_FDS }],
    ),
    // Ports: traffic (frames the switch took from the port: receive; handed to it: transmit).
    counter(
      'vmlink_port_receive_bytes_total',
      'Bytes the switch received from the port.',
      perPort((p) => p.counters.rx_bytes, portLabels),
    ),
    counter(
      'vmlink_port_receive_frames_total',
      'Frames the switch received from the port.',
      perPort((p) => p.counters.rx_frames, portLabels),
    ),
    counter(
      'vmlink_port_transmit_bytes_total',
      'Bytes the switch handed to the port.',
      perPort((p) => p.counters.tx_bytes, portLabels),
    ),
    counter(
      'vmlink_port_transmit_frames_total',
      'Frames the switch handed to the port.',
      perPort((p) => p.counters.tx_frames, portLabels),
    ),
    counter('vmlink_port_drops_total', 'Frames dropped at the port, by reason (every reason, also when 0).', (s) => {
      const out: Sample[] = [];
      for (const p of s.ports()) {
        for (const [reason, value] of Object.entries(p.counters.drops))
          out.push({ labels: { port: p.name, reason }, value });
      }
      return out;
    }),
    gauge('vmlink_port_state', 'The port state: 1 for the state it is in, 0 for the others.', (s) => {
      const out: Sample[] = [];
      for (const p of s.ports()) {
        for (const state of PORT_STATES)
          out.push({ labels: { port: p.name, state }, value: p.state === state ? 1 : 0 });
      }
      return out;
    }),
    gauge(
      'vmlink_port_egress_queue_frames',
      'Frames queued toward the port and not yet handed to its peer or the kernel.',
      perPort((p) => (typeof p.transport['queued'] === 'number' ? p.transport['queued'] : undefined)),
    ),
    gauge(
      'vmlink_port_macs',
      'MACs learned on the port.',
      perPort((p) => p.macs),
    ),
    counter(
      'vmlink_port_receive_gso_segments_total',
      'Large segments (GSO) received from the port with offload metadata.',
      perPort((p) => p.counters.offload?.rx_gso),
    ),
    counter(
      'vmlink_port_transmit_gso_segments_total',
      'Large segments handed to the port whole, with their metadata (it takes offloads).',
      perPort((p) => p.counters.offload?.tx_gso),
    ),
    counter(
      'vmlink_port_transmit_software_segmented_total',
      'Large segments cut into frames in software for the port (it takes no offloads).',
      perPort((p) => p.counters.offload?.tx_segmented),
    ),
    counter(
      'vmlink_port_transmit_software_checksums_total',
      'Frames whose partial checksum was completed in software for the port.',
      perPort((p) => p.counters.offload?.tx_csum),
    ),
    // Networks.
    gauge('vmlink_network_fdb_entries', 'MACs learned on the network (its forwarding table size).', (s) =>
      s.networks().map((n) => ({ labels: { network: n.name }, value: n.macs })),
    ),
    gauge('vmlink_network_ports', 'Ports on the network on this host.', (s) =>
      s.networks().map((n) => ({ labels: { network: n.name }, value: n.ports.length })),
    ),
    // Links to other hosts.
    gauge('vmlink_link_info', 'A link: its peer host, transport, mode and path (value 1).', (s) =>
      s.links().map((l) => ({
        labels: { link: l.name, peer: l.peer ?? '', transport: l.transport, mode: l.mode, path: l.path },
        value: 1,
      })),
    ),
    gauge('vmlink_link_state', 'The link state: 1 for the state it is in, 0 for the others.', (s) => {
      const out: Sample[] = [];
      for (const l of s.links()) {
        for (const state of LINK_STATES)
          out.push({ labels: { link: l.name, state }, value: l.state === state ? 1 : 0 });
      }
      return out;
    }),
    gauge('vmlink_link_rtt_seconds', 'Round-trip time to the peer over the link (while it is up).', (s) => {
      const out: Sample[] = [];
      for (const l of s.links()) {
        if (l.rtt_ms !== undefined) out.push({ labels: { link: l.name, path: l.path }, value: l.rtt_ms / 1000 });
      }
      return out;
    }),
    counter(
      'vmlink_link_receive_bytes_total',
      'Bytes received over the link.',
      perLink((l) => l.rx_bytes),
    ),
    counter(
      'vmlink_link_receive_frames_total',
      'Frames received over the link.',
      perLink((l) => l.rx_frames),
    ),
    counter(
      'vmlink_link_transmit_bytes_total',
      'Bytes sent over the link.',
      perLink((l) => l.tx_bytes),
    ),
    counter(
      'vmlink_link_transmit_frames_total',
      'Frames sent over the link.',
      perLink((l) => l.tx_frames),
    ),
    counter(
      'vmlink_link_transmit_records_total',
      'Kernel writes the link made (frames per write: transmit frames / records).',
      perLink((l) => l.tx_writes),
    ),
    counter('vmlink_link_drops_total', 'Frames dropped on the link, by reason.', (s) => {
      const out: Sample[] = [];
      for (const l of s.links()) {
        for (const [reason, value] of Object.entries(l.drops)) out.push({ labels: { link: l.name, reason }, value });
      }
      return out;
    }),
    counter(
      'vmlink_link_connects_total',
      'Times the link came up.',
      perLink((l) => l.connects),
    ),
    counter(
      'vmlink_link_relayed_bytes_total',
      'On a relaying host: bytes that came in on the link and were relayed to other links.',
      perLink((l) => l.relayed_bytes),
    ),
    // QoS: each port's measured rates against its reservation and cap.
    gauge(
      'vmlink_qos_port_receive_rate_bytes_per_second',
      'What the port sent into the switch over the last second (policed by its cap).',
      (s) => qosPorts(s, (p) => p.rx_rate / 8),
    ),
    gauge(
      'vmlink_qos_port_transmit_rate_bytes_per_second',
      'What the switch handed to the port over the last second.',
      (s) => qosPorts(s, (p) => p.tx_rate / 8),
    ),
    gauge(
      'vmlink_qos_port_reservation_bytes_per_second',
      "The port's reservation (QoS min): guaranteed on every shaped egress its traffic crosses.",
      (s) => qosPorts(s, (p) => policyRate(p.policy['min'])),
    ),
    gauge(
      'vmlink_qos_port_cap_bytes_per_second',
      "The port's cap (QoS max): the rate its ingress is policed to.",
      (s) => qosPorts(s, (p) => policyRate(p.policy['max'])),
    ),
    gauge(
      'vmlink_qos_port_egress_capacity_bytes_per_second',
      "The capacity the port's shaped egress is scheduled to.",
      (s) => qosPorts(s, (p) => (p.egress ? p.egress.capacity / 8 : undefined)),
    ),
    gauge(
      'vmlink_qos_port_egress_reserved_bytes_per_second',
      "The reservations admitted on the port's shaped egress.",
      (s) => qosPorts(s, (p) => (p.egress ? p.egress.reserved / 8 : undefined)),
    ),
    gauge('vmlink_qos_port_egress_queue_frames', "Frames queued in the port's shaped egress, all flows.", (s) =>
      qosPorts(s, (p) => p.egress?.flows.reduce((n, f) => n + f.queued, 0)),
    ),
  ];
}

/** A label value escaped for the text format (backslash, double quote, newline). */
const escapeLabel = (v: string): string =>
  /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;

/** A sample value as the text format writes it. */
function formatValue(v: number): string {
  if (Number.isFinite(v)) return `${v}`;
  return Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf';
}

/** A family in the Prometheus text format (0.0.4), without the trailing newline. */
function render(f: Family, samples: Sample[]): string {
  const lines = [
    `# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`,
    `# TYPE ${f.name} ${f.type}`,
  ];
  for (const { labels, value } of samples) {
    let l = '';
    for (const k in labels) l += `${l ? ',' : ''}${k}="${escapeLabel(labels[k] as string)}"`;
    lines.push(`${f.name}${l ? `{${l}}` : ''} ${formatValue(value)}`);
  }
  return lines.join('\n');
}

/**
 * A family as prom-client's registry reads it: `get()` returns the samples of
 * this scrape (for `getMetricsAsJSON`), `promText()` the same already written
 * out (see {@link MetricsRegistry}).
 */
function asMetric(f: Family, scrape: () => Scrape): Metric {
  return {
    name: f.name,
    help: f.help,
    type: f.type,
    get: () => ({ name: f.name, help: f.help, type: f.type, aggregator: 'sum', values: f.samples(scrape()) }),
    promText: () => render(f, f.samples(scrape())),
  } as unknown as Metric;
}

/**
 * prom-client's registry, writing the daemon's own families itself: they are
 * tens of thousands of samples with 1,000 ports, and prom-client's generic
 * formatting (label objects copied and escaped with three regular expressions
 * per label, a cache entry per sample) costs several times more event-loop time per
 * scrape. Everything else (process metrics, families other modules register)
 * goes through prom-client as usual.
 */
class MetricsRegistry extends Registry {
  async getMetricsAsString(m: Metric): Promise<string> {
    const own = (m as unknown as { promText?: () => string }).promText;
    if (own) return own();
    return (
      Registry.prototype as unknown as { getMetricsAsString(m: Metric): Promise<string> }
    ).getMetricsAsString.call(this, m);
  }
}

/**
 * The daemon's metrics registry: the families above, read from `backend` at
 * each scrape, and the process metrics of prom-client (prefixed `vmlink_`).
 */
export function createMetrics(backend: ControlBackend, opts: { host: string; version: string }): Registry {
  const registry = new MetricsRegistry();
  let current: Scrape | undefined;
  const scrape = (): Scrape => {
    if (current) return current;
    const memo = <T>(read: () => T): (() => T) => {
      let v: T | undefined;
      return () => {
        v ??= read();
        return v;
      };
    };
    current = {
      status: memo(() => backend.status()),
      ports: memo(() => backend.ports()),
      networks: memo(() => backend.networks()),
      links: memo(() => backend.links()),
      qos: memo(() => backend.qos()),
    };
    // The registry calls every family's get() in one turn: they share this snapshot.
    setImmediate(() => {
      current = undefined;
    });
    return current;
  };
  for (const f of families(opts)) registry.registerMetric(asMetric(f, scrape));
  registerExportMetrics(registry, () => backend.exports());
  return registry;
}

/** `GET /metrics`: the registry in the Prometheus text format. */
export function metricsRoutes(registry: Registry): HttpRoutes {
  return (app: FastifyInstance) => {
    app.get('/metrics', async (_req, reply) => {
      const body = await registry.metrics();
      return reply.type(registry.contentType).send(body);
    });
  };
}
