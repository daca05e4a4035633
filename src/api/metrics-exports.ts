/**
 * The NBD export families of `/metrics`: bytes, requests, errors and the
 * latency histogram per operation, requests in flight and clients, read
 * from the export views at scrape time (one snapshot per scrape shared by
 * every family). The storage layer only bumps its own counters
 * (storage/io-stats.ts); nothing here runs per request.
 */
import { Counter, Gauge, Histogram, type MetricType, type Registry } from 'prom-client';
import { IO_OPS, LATENCY_BOUNDS_SECONDS } from '../storage/io-stats.js';
import type { ExportView } from './views.js';

type Labels = Record<string, string | number>;
type Sample = { labels: Labels; value: number; metricName?: string };

/**
 * A histogram whose buckets are copied from counts kept elsewhere (the
 * export's IoStats) instead of observed one by one: prom-client formats it
 * as any other histogram.
 */
class SnapshotHistogram extends Histogram<'export' | 'op'> {
  readonly #name: string;
  readonly #help: string;
  readonly #samples: () => Sample[];

  constructor(registry: Registry, name: string, help: string, samples: () => Sample[]) {
    super({
      name,
      help,
      labelNames: ['export', 'op'],
      buckets: [...LATENCY_BOUNDS_SECONDS],
      registers: [registry],
    });
    this.#name = name;
    this.#help = help;
    this.#samples = samples;
  }

  override async get(): ReturnType<Histogram<'export' | 'op'>['get']> {
    return {
      name: this.#name,
      help: this.#help,
      // prom-client's typings say MetricType (an enum); at run time the type is this string.
      type: 'histogram' as unknown as MetricType,
      aggregator: 'sum',
      collect: () => {},
      values: this.#samples(),
    };
  }

  /** What Registry.metrics() asks for when present (prom-client ≥ 15); the same as get(). */
  getForPromString(): ReturnType<SnapshotHistogram['get']> {
    return this.get();
  }
}

/**
 * Registers the `vmlink_export_*` families on `registry`; `exports` is read
 * once per scrape. An export that is down has only `vmlink_export_state`.
 */
export function registerExportMetrics(registry: Registry, exports: () => ExportView[]): void {
  // One snapshot per scrape: every family's collect() runs in the same tick, the cache is dropped after it.
  let cached: ExportView[] | undefined;
  const views = (): ExportView[] => {
    if (cached === undefined) {
      cached = exports();
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };
  const up = () => views().filter((e) => e.state === 'up');
  const counter = (name: string, help: string, labelNames: string[], fill: (c: Counter) => void): void => {
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  };
  const gauge = (name: string, help: string, fill: (g: Gauge) => void, labelNames = ['export']): void => {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  };

  gauge(
    'vmlink_export_state',
    'The export state: 1 for the state it is in (up: served; down: its backend could not be opened), 0 for the other.',
    (g) => {
      for (const e of views())
        for (const state of ['up', 'down']) g.set({ export: e.name, state }, e.state === state ? 1 : 0);
    },
    ['export', 'state'],
  );
  gauge('vmlink_export_size_bytes', 'Size of the export in bytes.', (g) => {
    for (const e of up()) g.set({ export: e.name }, e.size ?? 0);
  });
  gauge('vmlink_export_clients', 'NBD clients connected to the export now.', (g) => {
    for (const e of up()) g.set({ export: e.name }, e.clients);
  });
  gauge(
    'vmlink_export_in_flight_requests',
    'Requests received and not yet answered (queued or in the backend), all clients of the export.',
    (g) => {
      for (const e of up()) g.set({ export: e.name }, e.io.in_flight);
    },
  );
  gauge('vmlink_export_max_in_flight_requests', 'Most requests in flight at once since the export was added.', (g) => {
    for (const e of up()) g.set({ export: e.name }, e.io.max_in_flight);
  });
  counter('vmlink_export_read_bytes_total', 'Bytes read by clients (successful reads).', ['export'], (c) => {
    for (const e of up()) c.inc({ export: e.name }, e.counters.bytes_read);
  });
  counter('vmlink_export_write_bytes_total', 'Bytes written by clients (successful writes).', ['export'], (c) => {
    for (const e of up()) c.inc({ export: e.name }, e.counters.bytes_written);
  });
  counter(
    'vmlink_export_requests_total',
    'Requests answered, by NBD operation (errors included).',
    ['export', 'op'],
    (c) => {
      for (const e of up()) for (const op of IO_OPS) c.inc({ export: e.name, op }, e.io.ops[op].requests);
    },
  );
  counter(
    'vmlink_export_errors_total',
    'Requests answered with an error (refused or failed in the backend), by NBD operation.',
    ['export', 'op'],
    (c) => {
      for (const e of up()) for (const op of IO_OPS) c.inc({ export: e.name, op }, e.io.ops[op].errors);
    },
  );
  new SnapshotHistogram(
    registry,
    'vmlink_export_request_duration_seconds',
    'Time from a request arriving to its reply being sent, by NBD operation.',
    () => histogramSamples(up()),
  );
}

/** `_bucket` (cumulative, `le`), `_sum` and `_count` samples of every export and operation. */
function histogramSamples(exports: ExportView[]): Sample[] {
  const name = 'vmlink_export_request_duration_seconds';
  const out: Sample[] = [];
  for (const e of exports) {
    for (const op of IO_OPS) {
      const v = e.io.ops[op];
      let acc = 0;
      v.buckets.forEach((n, i) => {
        acc += n;
        const le = i < LATENCY_BOUNDS_SECONDS.length ? (LATENCY_BOUNDS_SECONDS[i] as number) : '+Inf';
        out.push({ labels: { export: e.name, op, le }, value: acc, metricName: `${name}_bucket` });
      });
      out.push({ labels: { export: e.name, op }, value: v.seconds, metricName: `${name}_sum` });
      out.push({ labels: { export: e.name, op }, value: v.requests, metricName: `${name}_count` });
    }
  }
  return out;
}
