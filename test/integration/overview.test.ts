/**
 * `GET /v1/overview` of a single host (no fabric): its ports, links and
 * exports with the counters of their own views, its link's peer as a host,
 * on the control socket and on the HTTP endpoint alike; a bad scope is a 400.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import type { OverviewView } from '../../src/api/client.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import {
  A_TO_B,
  attach,
  B_TO_A,
  BCAST_FROM_A,
  framed,
  hostConfig,
  MAC_A,
  MAC_B,
  type Running,
  raw,
  startDaemon,
  stopDaemon,
  tempDirs,
  twoPortConfig,
} from '../helpers/api-daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';

const newDir = await tempDirs('vmlink-overview-');

describe('the overview of a single host', { timeout: 120_000 }, () => {
  let h1: Running;
  let h2: Running;
  let base: string;
  /** h2's link listener, `IP:PORT`. */
  let listen: string;
  const peers: Socket[] = [];

  before(async () => {
    const d2 = newDir();
    const c2 = hostConfig(d2, {
      networks: [{ name: 'lan', vni: 10 }],
      overlay: { listen: 'tcp:127.0.0.1:0', plain: true },
    });
    (c2['host'] as { id: string }).id = 'h2';
    h2 = await startDaemon(c2, d2);
    listen = (await h2.client.status()).overlay?.listener.address as string;
    const d1 = newDir();
    h1 = await startDaemon(
      {
        ...twoPortConfig(d1),
        http: { listen: 'tcp:127.0.0.1:0' },
        overlay: { plain: true },
        links: [{ name: 'wan', connect: `tcp:${listen}` }],
        storage: { listen: [`unix:${join(d1, 'nbd.sock')}`] },
        exports: [{ name: 'disk', backend: { type: 'memory', size: '1M' } }],
      },
      d1,
    );
    const bound = (await h1.client.status()).http?.listen[0] ?? '';
    base = `http://${bound.slice(4)}`;
    await untilAsync('link up', async () => (await h1.client.listLinks())[0]?.state === 'up');
    // Known traffic: a broadcast from a, unicasts both ways; known I/O on the export.
    const a = await attach(h1, 'a');
    const b = await attach(h1, 'b');
    peers.push(a.sock, b.sock);
    a.sock.write(framed(BCAST_FROM_A));
    await b.reader.next();
    b.sock.write(framed(B_TO_A));
    await a.reader.next();
    a.sock.write(framed(A_TO_B));
    await b.reader.next();
    const nbd = await NbdClient.connect({ address: { type: 'unix', path: join(d1, 'nbd.sock') }, export: 'disk' });
    await nbd.write(0, Buffer.alloc(4096, 7));
    await nbd.read(0, 4096);
    await nbd.disconnect();
  });

  after(async () => {
    for (const s of peers) s.destroy();
    if (h1) await stopDaemon(h1);
    if (h2) await stopDaemon(h2);
  });

  test('lists every port with the counters, MACs and peer of its port view', async () => {
    const [o, ports] = [await h1.client.overview(), await h1.client.listPorts()];
    assert.equal(o.scope, 'host', 'a single host defaults to the host scope');
    assert.equal(o.host, 'h1');
    assert.ok(o.at > 0 && o.at <= Date.now());
    assert.deepEqual(
      o.ports.map((p) => p.name),
      ports.map((p) => p.name),
    );
    for (const v of ports) {
      const p = o.ports.find((x) => x.name === v.name);
      assert.ok(p);
      assert.equal(p.host, 'h1');
      assert.equal(p.kind, 'stream');
      assert.equal(p.network, 'lan');
      assert.equal(p.state, 'up');
      // No traffic ran between the two reads: the counters are equal.
      assert.equal(p.rx_frames, v.counters.rx_frames);
      assert.equal(p.rx_bytes, v.counters.rx_bytes);
      assert.equal(p.tx_frames, v.counters.tx_frames);
      assert.equal(p.tx_bytes, v.counters.tx_bytes);
      assert.deepEqual(p.drops, v.counters.drops);
      assert.equal(p.mac_count, v.macs);
      assert.equal(p.qos, undefined, 'no QoS policy');
    }
    const a = o.ports.find((p) => p.name === 'a');
    assert.equal(a?.rx_frames, 2);
    assert.equal(a?.rx_bytes, BCAST_FROM_A.length + A_TO_B.length);
    assert.deepEqual(a?.macs, [MAC_A]);
    assert.deepEqual(o.ports.find((p) => p.name === 'b')?.macs, [MAC_B]);
    assert.equal(a?.mac_count, 1);
    assert.equal(a?.peer, `unix:${join(h1.dir, 'a.sock')}`, 'the transport peer');
  });

  test('lists the link with its peer, and the peer as a host that is up', async () => {
    const o = await h1.client.overview('host');
    const links = await h1.client.listLinks();
    assert.equal(o.links.length, 1);
    const l = o.links[0];
    assert.equal(l?.host, 'h1');
    assert.equal(l?.name, 'wan');
    assert.equal(l?.peer, 'h2');
    assert.equal(l?.state, 'up');
    assert.equal(l?.path, 'direct');
    assert.equal(l?.transport, links[0]?.transport);
    assert.deepEqual(l?.drops, links[0]?.drops);
    assert.ok((l?.tx_bytes ?? 0) >= 0);
    assert.deepEqual(
      o.hosts.map((h) => [h.id, h.state, h.local]),
      [
        ['h1', 'up', true],
        ['h2', 'up', false],
      ],
    );
    assert.equal(o.hosts[0]?.http, base);
    // The peer's address as dialled (scheme once).
    assert.equal(o.hosts[1]?.address, `tcp:${listen}`);
    assert.deepEqual(o.networks, [{ name: 'lan', vni: 10, mtu: 1500, hosts: ['h1'] }]);
  });

  test('lists the export with the counters of its export view', async () => {
    const o = await h1.client.overview();
    const v = await h1.client.getExport('disk');
    assert.deepEqual(o.exports, [
      {
        host: 'h1',
        name: 'disk',
        state: 'up',
        size: 1024 * 1024,
        clients: 0,
        requests: v.counters.requests,
        errors: 0,
        bytes_read: 4096,
        bytes_written: 4096,
      },
    ]);
  });

  test('the fabric scope of a single host is the same hosts, marked fabric', async () => {
    const o = await h1.client.overview('fabric');
    assert.equal(o.scope, 'fabric');
    assert.deepEqual(
      o.hosts.map((h) => h.id),
      ['h1', 'h2'],
    );
    assert.equal(o.ports.length, 2);
  });

  test('is served on the HTTP endpoint too, and a bad scope is refused with 400', async () => {
    const res = await request(`${base}/v1/overview?scope=host`);
    assert.equal(res.statusCode, 200);
    const o = (await res.body.json()) as OverviewView;
    assert.equal(o.host, 'h1');
    assert.equal(o.ports.length, 2);
    const bad = await raw(h1.control, 'GET', '/v1/overview?scope=everything');
    assert.equal(bad.status, 400);
    assert.match(bad.text, /ERR_BAD_REQUEST.*scope must be \\"host\\" or \\"fabric\\"/);
  });

  test('a port deleted is gone from the next answer', async () => {
    await h1.client.addPort({ name: 'c', kind: 'stream', network: 'lan', listen: `unix:${join(h1.dir, 'c.sock')}` });
    assert.ok((await h1.client.overview()).ports.some((p) => p.name === 'c'));
    await h1.client.deletePort('c');
    assert.ok(!(await h1.client.overview()).ports.some((p) => p.name === 'c'));
  });
});
