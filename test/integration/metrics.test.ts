/**
 * `GET /metrics` (src/api/metrics.ts): after known traffic through two ports
 * and a known drop of each reason a stream port can cause, the counters parsed
 * from the text format equal them exactly; the whole output follows
 * Prometheus' naming rules; `promtool check metrics` finds nothing.
 *
 * Caused and counted exactly: runt, mtu, bad_src, mac_locked, mac_limit,
 * storm, vlan, down, police, malformed; queue_full too, with the split between
 * delivered and dropped left to the kernel's socket buffer (their sum is
 * exact). Not caused here, their series checked at 0: `offload` (needs
 * virtio-net headers, from a vhost-user or TAP port with a guest) and
 * `split_horizon` (needs a host with links to two others).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import parse, { type PromFamily, type PromSample } from 'parse-prometheus-text-format';
import { request } from 'undici';
import { DROP_REASONS } from '../../src/net/switch/counters.js';
import {
  A_TO_B,
  attach,
  B_TO_A,
  framed,
  hostConfig,
  type Running,
  startDaemon,
  stopDaemon,
  tempDirs,
} from '../helpers/api-daemon.js';

const newDir = await tempDirs('vmlink-metrics-');

/** An Ethernet frame `dst` <- `src` (MACs as 12 hex digits) of `len` bytes in all, EtherType IPv4. */
function frame(dst: string, src: string, len: number): Buffer {
  const b = Buffer.alloc(len, 0x5a);
  Buffer.from(dst + src, 'hex').copy(b, 0);
  b.writeUInt16BE(0x0800, 12);
  return b;
}

/** `f` with an 802.1Q tag of VLAN `vid` after the MACs. */
function tagged(f: Buffer, vid: number): Buffer {
  return Buffer.concat([f.subarray(0, 12), Buffer.from([0x81, 0x00, vid >> 8, vid & 0xff]), f.subarray(12)]);
}

const BCAST = 'ffffffffffff';
const N_AB = 7; // frames a -> b
const N_BA = 5; // frames b -> a
const N_Q = 3000; // a burst toward q (4.5 MB, more than a socket buffer), whose queue holds one frame

/** Drops the test causes, port -> reason -> count. Every other (port, reason) is 0. */
const EXPECTED_DROPS: Record<string, Partial<Record<string, number>>> = {
  r: { runt: 2, mtu: 3, bad_src: 1 },
  l: { mac_locked: 2 },
  m: { mac_limit: 1 },
  s: { storm: 3 },
  v: { vlan: 2 },
  // Flooded to z, which has no peer: m's first frame and s's first broadcast.
  z: { down: 2 },
  p: { police: 4 },
  x: { malformed: 1 },
};

function config(dir: string): Record<string, unknown> {
  const listen = (name: string) => `unix:${join(dir, `${name}.sock`)}`;
  const port = (name: string, network: string, extra: Record<string, unknown> = {}) => ({
    name,
    kind: 'stream',
    network,
    listen: listen(name),
    ...extra,
  });
  return hostConfig(dir, {
    http: { listen: 'tcp:127.0.0.1:0' },
    networks: [
      { name: 'lan', vni: 10 },
      { name: 'lab', vni: 11 },
      { name: 'qos', vni: 12 },
      { name: 'bad', vni: 13 },
      { name: 'qn', vni: 14 },
    ],
    ports: [
      port('a', 'lan'),
      port('b', 'lan'),
      port('r', 'lab'),
      port('l', 'lab', { allowed_macs: ['02:00:00:00:01:01'] }),
      port('m', 'lab', { max_macs: 1 }),
      // A token every ~3 hours: one broadcast passes, the rest are over the rate.
      port('s', 'lab', { storm: { pps: 0.0001, burst: 1 } }),
      { name: 'v', kind: 'stream', trunk: { vlans: { '100': 'lab' } }, listen: listen('v') },
      port('z', 'lab'),
      // 1000 bytes/s with a 1600-byte bucket: one 1514-byte frame passes, the next would wait 1.4 s.
      port('p', 'qos', { qos: { max: '8kbit', burst: 1600, min: '8kbit' } }),
      port('x', 'bad'),
      // One frame queued at most once the kernel's socket buffer is full: the rest of a burst is tail-dropped.
      port('qs', 'qn'),
      port('q', 'qn', { queue_len: 1 }),
    ],
  });
}

async function scrape(base: string): Promise<{ text: string; type: string | undefined }> {
  const res = await request(`${base}/metrics`);
  assert.equal(res.statusCode, 200);
  return { text: await res.body.text(), type: res.headers['content-type'] as string | undefined };
}

/** The value of the sample of `name` whose labels include `labels`; fails when there is not exactly one. */
function value(fams: PromFamily[], name: string, labels: Record<string, string> = {}): number {
  const fam = fams.find((f) => f.name === name);
  assert.ok(fam, `family ${name} is in the output`);
  const hits = fam.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  assert.equal(hits.length, 1, `one sample of ${name}${JSON.stringify(labels)}`);
  return Number((hits[0] as PromSample).value);
}

/** `promtool check metrics` over `text` reports no problem. */
function promtoolFindsNothing(text: string): void {
  const res = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(res.error, undefined, 'promtool runs');
  assert.equal(`${res.stdout}${res.stderr}`.trim(), '', 'promtool finds nothing');
  assert.equal(res.status, 0);
}

/** Polls `f` until it returns true (generous deadline, no fixed sleep). */
async function until(what: string, f: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await f())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('GET /metrics', () => {
  let r: Running;
  let base: string;
  let text: string;
  let fams: PromFamily[];
  let qFull = 0;
  let portCount = 0;
  const socks: Socket[] = [];
  let lan: { a: Awaited<ReturnType<typeof attach>>; b: Awaited<ReturnType<typeof attach>> };

  before(async () => {
    const dir = newDir();
    r = await startDaemon(config(dir), dir);
    const at = (await r.client.status()).http?.listen[0];
    assert.ok(at, 'the HTTP endpoint listens');
    base = `http://${at.slice(4)}`;

    // Traffic on lan: a -> b flooded (b unknown), then b -> a to the learned a.
    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    lan = { a, b };
    socks.push(a.sock, b.sock);
    a.sock.write(Buffer.concat(Array.from({ length: N_AB }, () => framed(A_TO_B))));
    for (let i = 0; i < N_AB; i++) await b.reader.next();
    b.sock.write(Buffer.concat(Array.from({ length: N_BA }, () => framed(B_TO_A))));
    for (let i = 0; i < N_BA; i++) await a.reader.next();

    // One drop of each reason a stream port can cause, each on its own port.
    const peers = Object.fromEntries(
      await Promise.all(
        ['r', 'l', 'm', 's', 'v', 'p', 'x', 'qs', 'q'].map(async (n) => [n, await attach(r, n)] as const),
      ),
    );
    for (const p of Object.values(peers)) socks.push(p.sock);
    const send = (n: string, frames: Buffer[]) => peers[n]?.sock.write(Buffer.concat(frames.map(framed)));
    send('r', [
      Buffer.alloc(10), // runt, twice
      Buffer.alloc(13),
      frame(BCAST, '020000000201', 1600), // over the MTU of 1500, three times
      frame(BCAST, '020000000201', 1515),
      frame(BCAST, '020000000201', 9000),
      frame(BCAST, '010000000201', 60), // group source MAC
    ]);
    send('l', [frame(BCAST, '020000000102', 60), frame(BCAST, '020000000103', 60)]);
    send('m', [frame('020000000999', '020000000301', 60)]);
    // The first MAC must be learned before the second one is refused.
    await until('m learned its MAC', async () => (await r.client.getPort('m')).macs === 1);
    send('m', [frame('020000000999', '020000000302', 60)]);
    send(
      's',
      Array.from({ length: 4 }, () => frame(BCAST, '020000000401', 60)),
    );
    send('v', [frame(BCAST, '020000000501', 60), tagged(frame(BCAST, '020000000501', 60), 200)]);
    send(
      'p',
      Array.from({ length: 5 }, () => frame(BCAST, '020000000601', 1514)),
    );
    // A length prefix over the largest frame: the connection is closed as malformed.
    peers['x']?.sock.write(Buffer.from('ffffffff', 'hex'));
    // q's peer reads nothing until the kernel's socket buffer is full and q tail-drops; then it drains.
    peers['q']?.sock.pause();
    send(
      'qs',
      Array.from({ length: N_Q }, () => frame(BCAST, '020000000701', 1514)),
    );
    await until('q to drop for a full queue', async () => {
      qFull = (await r.client.getPort('q')).counters.drops['queue_full'] ?? 0;
      return qFull > 0;
    });
    peers['q']?.sock.resume();

    await until('every drop is counted', async () => {
      const ports = await r.client.listPorts();
      return Object.entries(EXPECTED_DROPS).every(([name, want]) => {
        const got = ports.find((p) => p.name === name)?.counters.drops ?? {};
        return Object.entries(want).every(([reason, n]) => got[reason] === n);
      });
    });
    // How many of the burst q took and how many it dropped depends on the kernel's buffer; together they are the burst.
    await until('the burst to q to be delivered or dropped', async () => {
      const q = await r.client.getPort('q');
      qFull = q.counters.drops['queue_full'] ?? 0;
      return q.counters.tx_frames + qFull === N_Q;
    });
    assert.ok(qFull > 0, 'q dropped part of the burst (queue_full)');
    portCount = (await r.client.listPorts()).length;
    const s = await scrape(base);
    assert.match(s.type ?? '', /^text\/plain; version=0\.0\.4/);
    text = s.text;
    fams = parse(text);
  });
  after(async () => {
    for (const s of socks) s.destroy();
    await stopDaemon(r);
  });

  it('counts the frames and bytes through two ports exactly', () => {
    const len = A_TO_B.length;
    const want = {
      a: { receive: [N_AB, N_AB * len], transmit: [N_BA, N_BA * len] },
      b: { receive: [N_BA, N_BA * len], transmit: [N_AB, N_AB * len] },
    };
    for (const [port, dirs] of Object.entries(want)) {
      for (const [dir, [frames, bytes]] of Object.entries(dirs)) {
        const labels = { port, network: 'lan', kind: 'stream' };
        assert.equal(value(fams, `vmlink_port_${dir}_frames_total`, labels), frames, `${port} ${dir} frames`);
        assert.equal(value(fams, `vmlink_port_${dir}_bytes_total`, labels), bytes, `${port} ${dir} bytes`);
      }
    }
    assert.equal(value(fams, 'vmlink_network_fdb_entries', { network: 'lan' }), 2);
    assert.equal(value(fams, 'vmlink_port_macs', { port: 'a' }), 1);
    assert.equal(value(fams, 'vmlink_port_state', { port: 'a', state: 'up' }), 1);
    assert.equal(value(fams, 'vmlink_port_state', { port: 'z', state: 'up' }), 0);
    assert.equal(value(fams, 'vmlink_port_egress_queue_frames', { port: 'b' }), 0);
  });

  it('has a drop counter for every port and every drop reason, equal to the drops caused', async () => {
    const ports = await r.client.listPorts();
    for (const p of ports) {
      for (const reason of DROP_REASONS) {
        const want = p.name === 'q' && reason === 'queue_full' ? qFull : (EXPECTED_DROPS[p.name]?.[reason] ?? 0);
        assert.equal(value(fams, 'vmlink_port_drops_total', { port: p.name, reason }), want, `${p.name} ${reason}`);
      }
    }
  });

  it("shows a port's reservation and cap in bytes per second", () => {
    assert.equal(value(fams, 'vmlink_qos_port_reservation_bytes_per_second', { port: 'p' }), 1000);
    assert.equal(value(fams, 'vmlink_qos_port_cap_bytes_per_second', { port: 'p' }), 1000);
    assert.ok(fams.find((f) => f.name === 'vmlink_qos_port_receive_rate_bytes_per_second'));
  });

  it('says which host and version it is, and has the process metrics', () => {
    assert.equal(value(fams, 'vmlink_info', { host: 'h1' }), 1);
    assert.ok(value(fams, 'vmlink_process_resident_memory_bytes') > 0);
    assert.ok(value(fams, 'vmlink_process_open_fds') > 0);
    assert.ok(fams.some((f) => f.name === 'vmlink_daemon_event_loop_delay_seconds'));
  });

  it('follows the naming rules: one prefix, base units, _total on counters only, bounded labels', () => {
    const units =
      /_(bytes|seconds|frames|bytes_per_second|entries|segments|checksums|records|info|total|macs|ports|state|clients|requests)$/;
    // `_state`: a state set (1 for the current state), dimensionless.
    const seen = new Set<string>();
    for (const f of fams) {
      assert.ok(!seen.has(f.name), `${f.name} appears once`);
      seen.add(f.name);
      assert.match(f.name, /^vmlink_[a-z][a-z0-9_]*$/, `${f.name}: one vmlink_ prefix, snake case`);
      assert.ok(!f.name.startsWith('vmlink_vmlink'), f.name);
      assert.ok(f.help.length > 0, `${f.name} has help`);
      if (f.type === 'COUNTER') assert.match(f.name, /_total$/, `counter ${f.name} ends in _total`);
      else assert.doesNotMatch(f.name, /_total$/, `${f.type} ${f.name} does not end in _total`);
      if (f.name.endsWith('_info')) {
        assert.equal(f.type, 'GAUGE');
        for (const m of f.metrics) assert.equal(m.value, '1', `${f.name} is 1`);
      }
      // No derived or non-base units in names.
      assert.doesNotMatch(f.name, /_(ms|milliseconds|kb|mb|bits|bps|percent)(_|$)/, `${f.name} uses base units`);
      if (f.name.startsWith('vmlink_process_')) continue; // the client libraries' standard names (open_fds, max_fds)
      const base = f.name.replace(/_total$/, '');
      assert.match(f.type === 'COUNTER' ? `${base}_total` : f.name, units, `${f.name} says its unit`);
      for (const m of f.metrics) {
        for (const [k, v] of Object.entries(m.labels ?? {})) {
          assert.match(k, /^[a-z][a-z0-9_]*$/, `${f.name} label ${k}`);
          assert.ok(!k.startsWith('__'), `${f.name} label ${k} is not reserved`);
          assert.doesNotMatch(v, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, `${f.name} has no MAC label value`);
        }
      }
    }
    // Labels come from fixed lists or names of configured objects: `port` takes no more values than there are ports,
    // `reason` no more than there are drop reasons, any other no more than a handful.
    for (const f of fams) {
      const labelNames = new Set(f.metrics.flatMap((m) => Object.keys(m.labels ?? {})));
      for (const l of labelNames) {
        const values = new Set(f.metrics.map((m) => m.labels?.[l]));
        const bound = l === 'reason' ? DROP_REASONS.length : l === 'port' ? portCount : 16;
        assert.ok(values.size <= bound, `${f.name} label ${l} has ${values.size} values`);
      }
    }
  });

  it('passes promtool check metrics', () => {
    promtoolFindsNothing(text);
  });

  it('reads the counters at scrape time: the next scrape shows new traffic', async () => {
    const labels = { port: 'a', network: 'lan', kind: 'stream' };
    const before = value(fams, 'vmlink_port_receive_frames_total', labels);
    lan.a.sock.write(framed(A_TO_B));
    await lan.b.reader.next();
    const now = parse((await scrape(base)).text);
    assert.equal(value(now, 'vmlink_port_receive_frames_total', labels), before + 1);
  });
});

describe('GET /metrics on two daemons joined by a link', () => {
  it('shows the link up with its peer, path and RTT, and its counters equal to the link listing', async () => {
    const d1 = newDir();
    const h1 = await startDaemon(
      {
        ...hostConfig(d1, { networks: [{ name: 'lan', vni: 10 }] }),
        overlay: { listen: 'tcp:127.0.0.1:0', plain: true },
      },
      d1,
    );
    after(() => stopDaemon(h1));
    const listen = (await h1.client.status()).overlay?.listener.address;
    assert.ok(listen, 'h1 listens for links');
    const d2 = newDir();
    const doc = hostConfig(d2, {
      http: { listen: 'tcp:127.0.0.1:0' },
      networks: [{ name: 'lan', vni: 10 }],
      ports: [{ name: 'a', kind: 'stream', network: 'lan', listen: `unix:${join(d2, 'a.sock')}` }],
      overlay: { plain: true, reconnect: { min_ms: 50, max_ms: 200 } },
      links: [{ name: 'to-h1', connect: `tcp:${listen}` }],
    });
    (doc['host'] as { id: string }).id = 'h2';
    const h2 = await startDaemon(doc, d2);
    after(() => stopDaemon(h2));
    const at = (await h2.client.status()).http?.listen[0];
    assert.ok(at, 'the HTTP endpoint listens');
    const base = `http://${at.slice(4)}`;
    await until('the link to be up with an RTT', async () => {
      const l = (await h2.client.listLinks()).find((x) => x.name === 'to-h1');
      return l?.state === 'up' && l.rtt_ms !== undefined && l.networks.includes('lan');
    });

    const a = await attach(h2, 'a');
    after(() => a.sock.destroy());
    const N = 6;
    a.sock.write(Buffer.concat(Array.from({ length: N }, () => framed(frame(BCAST, '02000000000a', 100)))));
    // The broadcasts cross the link; read the metrics once the link's counters hold still at their listing's value.
    let text = '';
    let fams: PromFamily[] = [];
    let link: Awaited<ReturnType<typeof h2.client.listLinks>>[number] | undefined;
    await until('the link counters in /metrics to equal the listing', async () => {
      link = (await h2.client.listLinks()).find((x) => x.name === 'to-h1');
      if (link === undefined || link.tx_frames < N) return false;
      text = (await scrape(base)).text;
      fams = parse(text);
      return value(fams, 'vmlink_link_transmit_frames_total', { link: 'to-h1' }) === link.tx_frames;
    });
    assert.ok(link);
    assert.equal(value(fams, 'vmlink_link_transmit_bytes_total', { link: 'to-h1' }), link.tx_bytes);
    assert.equal(value(fams, 'vmlink_link_transmit_records_total', { link: 'to-h1' }), link.tx_writes);
    assert.equal(value(fams, 'vmlink_link_connects_total', { link: 'to-h1' }), 1);
    assert.equal(value(fams, 'vmlink_link_state', { link: 'to-h1', state: 'up' }), 1);
    assert.equal(value(fams, 'vmlink_link_state', { link: 'to-h1', state: 'down' }), 0);
    assert.equal(value(fams, 'vmlink_link_info', { link: 'to-h1', peer: 'h1', path: 'direct', mode: 'dial' }), 1);
    assert.ok(value(fams, 'vmlink_link_rtt_seconds', { link: 'to-h1', path: 'direct' }) >= 0);
    for (const reason of ['queue_full', 'too_big', 'unknown_vni', 'down', 'split_horizon']) {
      assert.equal(
        value(fams, 'vmlink_link_drops_total', { link: 'to-h1', reason }),
        (link.drops as Record<string, number>)[reason],
      );
    }
    assert.equal(value(fams, 'vmlink_port_receive_frames_total', { port: 'a', network: 'lan', kind: 'stream' }), N);
    promtoolFindsNothing(text);
  });
});
