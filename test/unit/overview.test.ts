/**
 * The overview (daemon/overview.ts) over fake views: what a port, link and
 * export become, MACs capped at 8 with the count, QoS in bits/s, the path of
 * a link to a relaying hub, the default scope, and the fabric merged from
 * the other hosts' answers (down, without an endpoint, unreachable, up).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ClusterHostView, ClusterView, OverviewView } from '../../src/api/client.js';
import { OverviewService } from '../../src/daemon/overview.js';
import type { PeerAnswer } from '../../src/daemon/overview-peers.js';

const drops = { runt: 0, mtu: 2 };
const port = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  kind: 'stream',
  source: 'config',
  state: 'up',
  reason: '',
  network: 'lab',
  spec: {},
  transport: { peer: `unix:/run/${name}.sock` },
  counters: { rx_frames: 1, rx_bytes: 60, tx_frames: 2, tx_bytes: 120, drops },
  macs: 10,
  ...extra,
});
const link = (name: string, peer: string, state = 'up', path: 'direct' | 'relay' = 'direct') => ({
  name,
  peer,
  state,
  path,
  reason: state === 'up' ? 'up' : 'connection refused',
  address: '192.0.2.2:4789',
  transport: 'tcp',
  rtt_ms: 0.4,
  tx_bps: 8000,
  rx_bps: 16000,
  tx_bytes: 1000,
  rx_bytes: 2000,
  drops: { queue_full: 1 },
});
const clusterHost = (id: string, extra: Partial<ClusterHostView> = {}): ClusterHostView => ({
  id,
  state: 'up',
  reachable: true,
  relay: false,
  issuer: false,
  networks: [],
  links: [],
  ...extra,
});

function service(opts: { cluster?: ClusterView; peers?: Record<string, PeerAnswer>; links?: unknown[] } = {}) {
  const asked: string[] = [];
  const macs = Array.from({ length: 10 }, (_, i) => ({
    network: 'lab',
    mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`,
    port: 'vm1',
    age: 1,
  }));
  const s = new OverviewService({
    host: 'h1',
    views: {
      ports: () => [port('vm1'), port('vm2', { transport: { remote: 'udp:192.0.2.9:7000' }, macs: 0 })] as never,
      links: () => (opts.links ?? [link('wan', 'h2')]) as never,
      exports: () =>
        [
          {
            name: 'disk',
            state: 'up',
            size: 4096,
            clients: 1,
            counters: { requests: 3, errors: 1, bytes_read: 512, bytes_written: 1024 },
          },
        ] as never,
      qos: () => ({
        ports: [{ name: 'vm1', policy: {}, rx_rate: 5000, tx_rate: 0, drops: { police: 0, queue_full: 0 } }],
      }),
      networks: () => [
        { name: 'lab', vni: 100, mtu: 1500, ports: ['vm1', 'vm2', 'link:wan'], macs: 10, source: 'config' },
        { name: 'empty', vni: 200, mtu: 9000, ports: [], macs: 0, source: 'api' },
      ],
      linkListener: () => ({ state: 'up', address: '192.0.2.1:4789', reason: '' }),
      status: () => ({ http: { listen: ['tcp:192.0.2.1:9470'] } }) as never,
    },
    fdb: () => [...macs, { network: 'lab', mac: '02:00:00:00:01:00', port: 'link:wan', age: 1 }],
    qosPolicy: (p) => (p === 'vm1' ? { min: 1e6, max: 1e8 } : undefined),
    cluster: async () => opts.cluster ?? { mode: 'single', host: 'h1', hosts: [], corrupt: [] },
    peers: {
      get: async (id) => {
        asked.push(id);
        return opts.peers?.[id] ?? { error: 'no answer' };
      },
    },
  });
  return { s, asked };
}

describe('the overview of this host', () => {
  test('gives each port its counters, up to 8 MACs with the count, its transport peer and its QoS in bits/s', async () => {
    const o = await service().s.view();
    assert.equal(o.scope, 'host');
    const [vm1, vm2] = o.ports;
    assert.deepEqual(
      { ...vm1, macs: vm1?.macs.length },
      {
        host: 'h1',
        name: 'vm1',
        kind: 'stream',
        network: 'lab',
        state: 'up',
        macs: 8,
        mac_count: 10,
        peer: 'unix:/run/vm1.sock',
        rx_bytes: 60,
        rx_frames: 1,
        tx_bytes: 120,
        tx_frames: 2,
        drops,
        qos: { min: 1e6, max: 1e8, rate: 5000 },
      },
    );
    assert.equal(vm2?.peer, 'udp:192.0.2.9:7000');
    assert.equal(vm2?.qos, undefined);
    assert.deepEqual(vm2?.macs, []);
  });

  test('gives links, exports, networks with the hosts that have ports on them, and this host with its endpoints', async () => {
    const o = await service().s.view('host');
    assert.deepEqual(o.links, [
      {
        host: 'h1',
        name: 'wan',
        peer: 'h2',
        state: 'up',
        path: 'direct',
        transport: 'tcp',
        rtt_ms: 0.4,
        tx_bps: 8000,
        rx_bps: 16000,
        tx_bytes: 1000,
        rx_bytes: 2000,
        drops: { queue_full: 1 },
      },
    ]);
    assert.deepEqual(o.exports, [
      {
        host: 'h1',
        name: 'disk',
        state: 'up',
        size: 4096,
        clients: 1,
        requests: 3,
        errors: 1,
        bytes_read: 512,
        bytes_written: 1024,
      },
    ]);
    assert.deepEqual(o.networks, [
      { name: 'lab', vni: 100, mtu: 1500, hosts: ['h1'] },
      { name: 'empty', vni: 200, mtu: 9000, hosts: [] },
    ]);
    assert.deepEqual(o.hosts, [
      { id: 'h1', state: 'up', local: true, address: 'tcp:192.0.2.1:4789', http: 'http://192.0.2.1:9470', at: o.at },
      { id: 'h2', state: 'up', local: false, address: 'tcp:192.0.2.2:4789' },
    ]);
  });

  test('a peer whose links are all down is down with the reason', async () => {
    const o = await service({ links: [link('wan', 'h2', 'connecting'), link('wan2', 'h2', 'connecting')] }).s.view();
    assert.deepEqual(
      o.hosts.map((h) => [h.id, h.state]),
      [
        ['h1', 'up'],
        ['h2', 'down'],
      ],
    );
    assert.match(o.hosts[1]?.reason ?? '', /link "wan" is connecting: connection refused/);
  });
});

describe('the overview of a fabric', () => {
  const peerView = (id: string): OverviewView => ({
    at: 42,
    host: id,
    scope: 'host',
    hosts: [],
    networks: [
      { name: 'lab', vni: 100, mtu: 1500, hosts: [id] },
      { name: 'other', vni: 300, mtu: 1500, hosts: [id] },
    ],
    ports: [{ ...(service().s.local('host').ports[0] as OverviewView['ports'][number]), host: id }],
    links: [],
    exports: [],
  });
  const cluster: ClusterView = {
    mode: 'member',
    host: 'h1',
    hosts: [
      clusterHost('h1', { http: 'http://192.0.2.1:9470', address: 'tcp:192.0.2.1:4789' }),
      clusterHost('h2', { relay: true, http: 'http://192.0.2.2:9470' }),
      clusterHost('h3', { state: 'down', http: 'http://192.0.2.3:9470' }),
      clusterHost('h4'),
      clusterHost('h5', { http: 'http://192.0.2.5:9470' }),
    ],
    corrupt: [],
  };

  test('is the default on a member: every other up host with an endpoint is asked, and merged', async () => {
    // The link to h2 as the overlay lists it: its peer said it relays.
    const { s, asked } = service({
      cluster,
      links: [link('wan', 'h2', 'up', 'relay')],
      peers: { h2: { view: peerView('h2') }, h5: { error: 'timed out' } },
    });
    const o = await s.view();
    assert.equal(o.scope, 'fabric');
    assert.deepEqual(asked, ['h2', 'h5']);
    assert.deepEqual(
      o.hosts.map((h) => [h.id, h.state, h.local, h.reason ?? '']),
      [
        ['h1', 'up', true, ''],
        ['h2', 'up', false, ''],
        ['h3', 'down', false, 'its lease lapsed: the host is away'],
        ['h4', 'unreachable', false, 'it publishes no HTTP endpoint (no http: section in its config)'],
        ['h5', 'unreachable', false, 'timed out'],
      ],
    );
    assert.equal(o.hosts[1]?.at, 42);
    assert.deepEqual(
      o.ports.map((p) => `${p.host}/${p.name}`),
      ['h1/vm1', 'h1/vm2', 'h2/vm1'],
    );
    assert.deepEqual(
      o.networks.map((n) => [n.name, n.hosts]),
      [
        ['lab', ['h1', 'h2']],
        ['empty', []],
        ['other', ['h2']],
      ],
    );
    // The link to h2, a relaying hub.
    assert.equal(o.links[0]?.path, 'relay');
  });

  test('scope host on a member asks no other host', async () => {
    const { s, asked } = service({ cluster, peers: { h2: { view: peerView('h2') } } });
    const o = await s.view('host');
    assert.equal(o.scope, 'host');
    assert.deepEqual(asked, []);
    assert.deepEqual(
      o.ports.map((p) => p.host),
      ['h1', 'h1'],
    );
  });
});
