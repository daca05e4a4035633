/**
 * The metrics registry (src/api/metrics.ts) over a fake backend: each view
 * read once per scrape, label values escaped, QoS rates in bytes per second,
 * a link's path on its RTT.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import parse, { type PromFamily } from 'parse-prometheus-text-format';
import type { ControlBackend, PortViewOut, StatusView } from '../../src/api/backend.js';
import { createMetrics } from '../../src/api/metrics.js';
import type { LinkView } from '../../src/net/overlay/link.js';
import { countersSnapshot, PortCounters } from '../../src/net/switch/counters.js';
import type { QosView } from '../../src/qos/view.js';

function port(name: string, extra: Partial<PortViewOut> = {}): PortViewOut {
  const c = new PortCounters();
  c.rxFrames = 3;
  c.rxBytes = 180;
  c.mtu = 2;
  return {
    name,
    kind: 'stream',
    source: 'config',
    state: 'up',
    reason: '',
    network: 'lan',
    spec: {},
    transport: { queued: 4 },
    counters: countersSnapshot(c),
    macs: 1,
    ...extra,
  } as PortViewOut;
}

function link(extra: Partial<LinkView>): LinkView {
  return {
    name: 'l1',
    source: 'config',
    mode: 'dial',
    address: '127.0.0.1:1',
    state: 'up',
    reason: '',
    last_error: null,
    last_error_at: null,
    transport: 'tcp',
    peer: 'h2',
    networks: ['lan'],
    rtt_ms: 2.5,
    path: 'direct',
    tx_bps: 0,
    rx_bps: 0,
    tx_frames: 10,
    tx_bytes: 1000,
    rx_frames: 0,
    rx_bytes: 0,
    tx_writes: 2,
    drops: { queue_full: 0, too_big: 1, unknown_vni: 0, down: 0, split_horizon: 0 },
    connects: 1,
    up_s: 1,
    relayed_bytes: 0,
    relayed_to: {},
    direct_peers: [],
    ...extra,
  };
}

/** A backend with these views that counts how often each is read. */
function fake(views: { ports?: PortViewOut[]; links?: LinkView[]; qos?: QosView }) {
  const calls = { status: 0, ports: 0, networks: 0, links: 0, qos: 0, exports: 0 };
  const backend = {
    status: () => {
      calls.status++;
      return {
        host: { uptime_s: 5 },
        process: { event_loop_delay_ms: { p50: 1, p99: 2, max: 3, max_since_start: 4 } },
      } as unknown as StatusView;
    },
    ports: () => {
      calls.ports++;
      return views.ports ?? [];
    },
    networks: () => {
      calls.networks++;
      return [{ name: 'lan', vni: 10, mtu: 1500, ports: ['a'], macs: 7, source: 'config' as const }];
    },
    links: () => {
      calls.links++;
      return views.links ?? [];
    },
    qos: () => {
      calls.qos++;
      return views.qos ?? { ports: [] };
    },
    exports: () => {
      calls.exports++;
      return [];
    },
  } as unknown as ControlBackend;
  return { backend, calls };
}

function sample(fams: PromFamily[], name: string, labels: Record<string, string>): number | undefined {
  const hits = fams
    .find((f) => f.name === name)
    ?.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (hits === undefined || hits.length === 0) return undefined;
  assert.equal(hits.length, 1, `one sample of ${name}`);
  return Number(hits[0]?.value);
}

describe('the metrics registry', () => {
  it('reads each view of the backend once per scrape, and again at the next one', async () => {
    const { backend, calls } = fake({ ports: [port('a'), port('b')], links: [link({})] });
    const reg = createMetrics(backend, { host: 'h1', version: '1.2.3' });
    await reg.metrics();
    assert.deepEqual(calls, { status: 1, ports: 1, networks: 1, links: 1, qos: 1, exports: 1 });
    await new Promise((r) => setImmediate(r));
    await reg.metrics();
    assert.deepEqual(calls, { status: 2, ports: 2, networks: 2, links: 2, qos: 2, exports: 2 });
  });

  it('writes the counters, states and queues of each port, with an empty network on a trunk port', async () => {
    const { backend } = fake({ ports: [port('a'), port('t', { network: undefined, state: 'down' })] });
    const fams = parse(await createMetrics(backend, { host: 'h1', version: '1' }).metrics());
    assert.equal(sample(fams, 'vmlink_port_receive_bytes_total', { port: 'a', network: 'lan', kind: 'stream' }), 180);
    assert.equal(sample(fams, 'vmlink_port_receive_frames_total', { port: 't', network: '' }), 3);
    assert.equal(sample(fams, 'vmlink_port_drops_total', { port: 'a', reason: 'mtu' }), 2);
    assert.equal(sample(fams, 'vmlink_port_state', { port: 't', state: 'down' }), 1);
    assert.equal(sample(fams, 'vmlink_port_egress_queue_frames', { port: 'a' }), 4);
    assert.equal(sample(fams, 'vmlink_network_fdb_entries', { network: 'lan' }), 7);
    assert.equal(sample(fams, 'vmlink_daemon_event_loop_delay_seconds', { stat: 'p99' }), 0.002);
  });

  it('escapes label values: backslash, double quote and newline come back as they were', async () => {
    const odd = 'a"b\\c\nd';
    const { backend } = fake({ ports: [port(odd)] });
    const fams = parse(await createMetrics(backend, { host: 'h"1', version: '1' }).metrics());
    assert.equal(sample(fams, 'vmlink_port_macs', { port: odd }), 1);
    assert.equal(sample(fams, 'vmlink_info', { host: 'h"1' }), 1);
  });

  it("turns a port's QoS rates, reservation and cap from bits into bytes per second", async () => {
    const qos: QosView = {
      ports: [
        {
          name: 'a',
          policy: { min: '200mbit', max: '1gbit', weight: 2 },
          rx_rate: 8_000_000,
          tx_rate: 800,
          drops: { police: 0, queue_full: 0 },
          egress: { capacity: 80_000, latency_cap: 8_000, reserved: 16_000, flows: [] },
        },
        { name: 'b', policy: {}, rx_rate: 0, tx_rate: 0, drops: { police: 0, queue_full: 0 } },
      ],
    };
    const { backend } = fake({ ports: [port('a'), port('b')], qos });
    const fams = parse(await createMetrics(backend, { host: 'h1', version: '1' }).metrics());
    assert.equal(sample(fams, 'vmlink_qos_port_receive_rate_bytes_per_second', { port: 'a' }), 1_000_000);
    assert.equal(sample(fams, 'vmlink_qos_port_transmit_rate_bytes_per_second', { port: 'a' }), 100);
    assert.equal(sample(fams, 'vmlink_qos_port_reservation_bytes_per_second', { port: 'a' }), 25_000_000);
    assert.equal(sample(fams, 'vmlink_qos_port_cap_bytes_per_second', { port: 'a' }), 125_000_000);
    assert.equal(sample(fams, 'vmlink_qos_port_egress_capacity_bytes_per_second', { port: 'a' }), 10_000);
    assert.equal(sample(fams, 'vmlink_qos_port_egress_reserved_bytes_per_second', { port: 'a' }), 2_000);
    assert.equal(
      sample(fams, 'vmlink_qos_port_reservation_bytes_per_second', { port: 'b' }),
      undefined,
      'no min, no sample',
    );
    assert.equal(sample(fams, 'vmlink_qos_port_cap_bytes_per_second', { port: 'b' }), undefined, 'no max, no sample');
  });

  it("labels a link's RTT with its path, and leaves out the RTT of a link that is down", async () => {
    const links = [
      link({ name: 'hub', path: 'relay', rtt_ms: 1.5 }),
      link({ name: 'gone', state: 'down', rtt_ms: undefined }),
    ];
    const { backend } = fake({ links });
    const fams = parse(await createMetrics(backend, { host: 'h1', version: '1' }).metrics());
    assert.equal(sample(fams, 'vmlink_link_rtt_seconds', { link: 'hub', path: 'relay' }), 0.0015);
    assert.equal(sample(fams, 'vmlink_link_rtt_seconds', { link: 'gone' }), undefined);
    assert.equal(sample(fams, 'vmlink_link_state', { link: 'gone', state: 'down' }), 1);
    assert.equal(sample(fams, 'vmlink_link_info', { link: 'hub', peer: 'h2', path: 'relay', transport: 'tcp' }), 1);
    assert.equal(sample(fams, 'vmlink_link_drops_total', { link: 'hub', reason: 'too_big' }), 1);
    assert.equal(sample(fams, 'vmlink_link_transmit_records_total', { link: 'hub' }), 2);
  });
});
