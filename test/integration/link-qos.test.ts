/**
 * QoS of an overlay link through two real daemons on loopback: UDP "VMs"
 * (sockets owned by the test) on two networks of daemon a send through one
 * link with a capacity to sinks on daemon b; the link is shaped as a whole,
 * shared by weight, and a reserved sender keeps its minimum, measured where
 * the frames arrive (behind b). Admission counts the link's capacity:
 * requests and links that do not fit are refused with the reason through the
 * API and the CLI, and an oversubscribed config does not start.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { type ApiError, ControlClient, type LinkView } from '../../src/api/client.js';
import type { QosView } from '../../src/qos/view.js';
import { runCli, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { freeTcpPort } from '../helpers/vm.js';

const T = { timeout: 90_000 };
const CAPACITY = 16_000_000; // bits/s of the link
const RESERVED = 6_000_000; // s1's minimum
const FRAME_LEN = 1000;
/** Senders on a: name, network, the index of its test socket. s1 reserved, s2 weight 1, s3 weight 3 on the other network. */
const SENDERS = [
  { name: 's1', network: 'lab', qos: { min: `${RESERVED / 1e6}mbit` } },
  { name: 's2', network: 'lab', qos: { weight: 1 } },
  { name: 's3', network: 'dmz', qos: { weight: 3 } },
] as const;
const SINK_LAB = 0xf1;
const SINK_DMZ = 0xf2;
const mac = (n: number) => `52540000bb${n.toString(16).padStart(2, '0')}`;

async function udp(): Promise<Socket & { port: number }> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return Object.assign(s, { port: s.address().port });
}

/** An Ethernet frame from MAC n to MAC `to`, EtherType 0x88b5, `len` bytes. */
function frame(n: number, to: number, len = FRAME_LEN): Buffer {
  const b = Buffer.alloc(len, 0x5a);
  Buffer.from(`${mac(to)}${mac(n)}88b5`, 'hex').copy(b, 0);
  return b;
}

describe('QoS of an overlay link between two daemons', () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let client: ControlClient;
  let bPort: number;
  /** Test sockets: the sinks' peers behind b, and the senders' peers on a. */
  const sinks: Record<string, Socket & { port: number }> = {};
  const vms: Record<string, Socket & { port: number }> = {};
  /** UDP port of each daemon port. */
  const daemonPort = new Map<string, number>();
  const links = async (d: TestDaemon) => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  before(async () => {
    for (const n of ['lab', 'dmz']) sinks[n] = await udp();
    for (const s of SENDERS) vms[s.name] = await udp();
    bPort = await freeTcpPort();
    const net = [
      { name: 'lab', vni: 100 },
      { name: 'dmz', vni: 200 },
    ];
    b = await startDaemon({
      hostId: 'b',
      networks: net,
      ports: ['lab', 'dmz'].map((n) => ({
        name: `sink-${n}`,
        network: n,
        kind: 'dgram',
        local: 'udp:127.0.0.1:0',
        remote: `udp:127.0.0.1:${sinks[n]?.port}`,
      })),
      extra: () => ({
        overlay: { listen: `tcp:127.0.0.1:${bPort}`, plain: true, peer_qos: { a: { capacity: '12mbit' } } },
      }),
    });
    a = await startDaemon({
      hostId: 'a',
      networks: net,
      ports: SENDERS.map((s) => ({
        name: s.name,
        network: s.network,
        kind: 'dgram',
        local: 'udp:127.0.0.1:0',
        remote: `udp:127.0.0.1:${vms[s.name]?.port}`,
        qos: s.qos,
      })),
      extra: () => ({
        overlay: { plain: true },
        links: [{ name: 'wan', connect: `tcp:127.0.0.1:${bPort}`, qos: { capacity: `${CAPACITY / 1e6}mbit` } }],
      }),
    });
    client = new ControlClient({ socketPath: a.control });
    for (const d of [a, b]) {
      const c = new ControlClient({ socketPath: d.control });
      for (const p of await c.listPorts()) {
        const local = String(p.transport['local']);
        daemonPort.set(p.name, Number(local.slice(local.lastIndexOf(':') + 1)));
      }
      await c.close();
    }
    await untilAsync('link wan up', async () => (await links(a)).find((l) => l.name === 'wan')?.state === 'up');
  });

  after(async () => {
    for (const s of [...Object.values(sinks), ...Object.values(vms)]) s.close();
    await client?.close();
    await a?.cleanup();
    await b?.cleanup();
  });

  const send = (sock: Socket, port: string, buf: Buffer) =>
    new Promise<void>((resolve) => sock.send(buf, daemonPort.get(port) as number, '127.0.0.1', () => resolve()));

  test(
    'senders on two networks share the shaped link by weight, a reserved sender keeps its minimum, the total stays within capacity',
    T,
    async () => {
      // The sinks announce their MACs, so a learns them behind the link and frames to them are unicast.
      await send(sinks.lab as Socket, 'sink-lab', frame(SINK_LAB, 0xff, 60));
      await send(sinks.dmz as Socket, 'sink-dmz', frame(SINK_DMZ, 0xff, 60));
      const got = new Map<number, number>();
      let first = 0;
      let last = 0;
      for (const s of Object.values(sinks)) {
        s.on('message', (m) => {
          if (m.length !== FRAME_LEN) return;
          const now = performance.now();
          if (first === 0) first = now;
          last = now;
          got.set(m[11] as number, (got.get(m[11] as number) ?? 0) + m.length);
        });
      }
      // Each sender offers ~16 Mbit/s (1000-byte frames, 40 per 20 ms): 48 Mbit/s into a 16 Mbit/s link.
      const end = performance.now() + 3000;
      while (performance.now() < end) {
        const sends: Promise<void>[] = [];
        SENDERS.forEach((s, k) => {
          const to = s.network === 'lab' ? SINK_LAB : SINK_DMZ;
          for (let i = 0; i < 40; i++) sends.push(send(vms[s.name] as Socket, s.name, frame(k + 1, to)));
        });
        await Promise.all(sends);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 300));
      const total = [...got.values()].reduce((x, y) => x + y, 0);
      assert.ok(total > 0, 'frames reached the sinks behind b');
      const seconds = (last - first) / 1000;
      // The link's shaper never sends faster than its capacity, over both networks together. Receive times
      // are taken in this busy process: allow 10% plus the shaper's burst (64 KiB at this rate).
      assert.ok(
        total * 8 <= CAPACITY * seconds * 1.1 + 64 * 1024 * 8,
        `the sinks got ${(total * 8) / seconds} bit/s over ${seconds} s through a ${CAPACITY} bit/s link`,
      );
      const share = (k: number) => (got.get(k) ?? 0) / total;
      // s1's DWRR share (weight 1 of 5) is below its reservation, so it gets the reservation, 6 of 16 Mbit/s.
      assert.ok(share(1) >= (RESERVED / CAPACITY) * 0.9, `reserved sender got ${share(1)} of the link`);
      // s2 and s3 share the rest 1:3 (s3 sits on the other network: the link is shaped as a whole).
      // Wide bounds: a sender this busy process could not keep saturated gets less.
      const ratio = share(3) / share(2);
      assert.ok(ratio > 1.8 && ratio < 5, `weights 1:3 gave s2 ${share(2)}, s3 ${share(3)} (ratio ${ratio})`);
      // qos show lists the link's flows by source and class, its capacity and the reservation on it.
      const v = await a.json<QosView>(['qos', 'show', '--json']);
      const wan = v.links?.find((l) => l.name === 'wan');
      assert.equal(wan?.egress.capacity, CAPACITY);
      assert.equal(wan?.egress.reserved, RESERVED);
      assert.deepEqual(wan?.networks.sort(), ['dmz', 'lab']);
      assert.deepEqual(wan?.egress.flows.map((f) => [f.source, f.class, f.weight, f.min]).sort(), [
        ['s1', 'best-effort', 2, RESERVED],
        ['s2', 'best-effort', 2, 0],
        ['s3', 'best-effort', 6, 0],
      ]);
      assert.ok(
        (wan?.egress.flows ?? []).reduce((x, f) => x + f.drops, 0) > 0,
        'oversubscribed flows dropped frames at their queue bound',
      );
      const text = await a.cli(['qos', 'show']);
      assert.match(
        text.stdout,
        /shaped link wan \((lab, dmz|dmz, lab)\): capacity 16mbit, latency cap 1\.6mbit, reserved 6mbit/,
      );
      // link list: the configured capacity beside what it measured; the link ports' tx counters were kept.
      const l = (await links(a)).find((x) => x.name === 'wan') as LinkView;
      assert.equal(l.qos?.capacity, CAPACITY);
      assert.ok((l.qos?.drops_queue_full ?? 0) > 0);
      assert.ok(l.tx_bytes >= total, `link sent ${l.tx_bytes} bytes, sinks got ${total}`);
      const table = await a.cli(['link', 'list']);
      assert.match(table.stdout, /CAPACITY/);
      assert.match(table.stdout, /\bwan\s+up\s+b\b.*\b16mbit\b/);
    },
  );

  test(
    'a request whose reservation does not fit in the link is refused with the reason, nothing changed',
    T,
    async () => {
      const before = JSON.stringify((await client.qos()).ports.map((p) => [p.name, p.policy]));
      const no = await a.cli(['qos', 'request', 's3', '--min', '12mbit']);
      assert.equal(no.code, 1);
      assert.match(
        no.stderr,
        /refused: link "wan" has capacity 16mbit but the reservations of the ports sharing its networks would total 18mbit \(s1 6mbit, s3 12mbit\); port "s3" can reserve at most 10mbit there, nothing was changed/,
      );
      await assert.rejects(client.qosRequest('s2', { min: '11mbit' }), (e: ApiError) => {
        assert.equal(e.code, 'ERR_QOS_ADMISSION');
        assert.equal(e.status, 409);
        return true;
      });
      assert.equal(JSON.stringify((await client.qos()).ports.map((p) => [p.name, p.policy])), before);
      const ok = await a.cli(['qos', 'request', 's3', '--min', '10mbit']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal((await client.qos()).links?.find((l) => l.name === 'wan')?.egress.reserved, 16_000_000);
    },
  );

  test('a link added with a capacity below the reservations it would carry is refused and not created', T, async () => {
    const no = await a.cli(['link', 'add', 'thin', '--connect', 'tcp:127.0.0.1:1', '--capacity', '8mbit']);
    assert.equal(no.code, 1);
    assert.match(
      no.stderr,
      /refused: link "thin" has capacity 8mbit but the reservations of the ports sharing its networks would total 16mbit \(s1 6mbit, s3 10mbit\); give link "thin" a capacity of at least 16mbit/,
    );
    await assert.rejects(
      client.addLink({ name: 'thin', connect: 'tcp:127.0.0.1:1', qos: { capacity: '8mbit' } }),
      (e: ApiError) => e.code === 'ERR_QOS_ADMISSION' && e.status === 409,
    );
    assert.equal(
      (await links(a)).find((l) => l.name === 'thin'),
      undefined,
    );
    // Bad values name the field, from the CLI (a usage error) and from the API.
    const usage = await a.cli(['link', 'add', 'thin', '--connect', 'tcp:127.0.0.1:1', '--capacity', 'fast']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--capacity "fast" is not a rate/);
    const noCap = await a.cli(['link', 'add', 'thin', '--connect', 'tcp:127.0.0.1:1', '--latency-cap', '1mbit']);
    assert.equal(noCap.code, 2);
    assert.match(noCap.stderr, /give --capacity too/);
    const bad: [Record<string, unknown>, string, RegExp][] = [
      [{ capacity: 'fast' }, 'qos.capacity', /"fast" is not a rate/],
      [{}, 'qos.capacity', /capacity is required/],
      [{ capacity: '10mbit', latency_cap: '20mbit' }, 'qos.latency_cap', /latency_cap 20mbit is above capacity 10mbit/],
      [{ capacity: '10mbit', weight: 2 }, 'qos', /unknown field "weight"/],
    ];
    for (const [qos, path, msg] of bad) {
      await assert.rejects(client.addLink({ name: 'thin', connect: 'tcp:127.0.0.1:1', qos }), (e: ApiError) => {
        assert.equal(e.code, 'ERR_CONFIG_INVALID', JSON.stringify(qos));
        assert.equal(e.problems[0]?.path, path);
        assert.match(e.problems[0]?.message ?? '', msg);
        return true;
      });
    }
  });

  test(
    "a link's QoS changes at once when it fits, is refused with the reason when not, and can be removed",
    T,
    async () => {
      const wan = async () => (await links(a)).find((l) => l.name === 'wan') as LinkView;
      const no = await a.cli(['link', 'qos', 'wan', '--capacity', '4mbit']);
      assert.equal(no.code, 1);
      assert.match(
        no.stderr,
        /refused: link "wan" has capacity 4mbit but the reservations of the ports sharing its networks would total 16mbit \(s1 6mbit, s3 10mbit\)/,
      );
      assert.equal((await wan()).qos?.capacity, CAPACITY, 'nothing changed');
      const ok = await a.cli(['link', 'qos', 'wan', '--capacity', '24mbit', '--latency-cap', '3mbit']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /link "wan" shaped to 24mbit \(latency cap 3mbit\)/);
      assert.deepEqual([(await wan()).qos?.capacity, (await wan()).qos?.latency_cap], [24e6, 3e6]);
      await assert.rejects(client.setLinkQos('wan', { capacity: 'x' }), (e: ApiError) => {
        assert.equal(e.code, 'ERR_CONFIG_INVALID');
        assert.equal(e.problems[0]?.path, 'capacity');
        return true;
      });
      await assert.rejects(client.setLinkQos('nope', { capacity: '1mbit' }), { code: 'ERR_LINK_NOT_FOUND' });
      assert.equal((await a.cli(['link', 'qos', 'wan'])).code, 2);
      const none = await a.cli(['link', 'qos', 'wan', '--none']);
      assert.equal(none.code, 0, none.stderr);
      assert.equal((await wan()).qos, undefined);
      assert.equal((await client.qos()).links?.length, 0);
      assert.equal((await a.cli(['link', 'qos', 'wan', '--capacity', '16mbit'])).code, 0);
      assert.equal((await wan()).qos?.capacity, CAPACITY);
    },
  );

  test("a hub's peer_qos shapes the link a peer dialled in on, and admission counts it", T, async () => {
    const onB = (await links(b)).find((l) => l.peer === 'a') as LinkView;
    assert.equal(onB.mode, 'accept');
    assert.equal(onB.qos?.capacity, 12_000_000);
    const v = await b.json<QosView>(['qos', 'show', '--json']);
    assert.deepEqual(
      v.links?.map((l) => [l.name, l.egress.capacity]),
      [['a', 12_000_000]],
    );
    const no = await b.cli(['qos', 'request', 'sink-lab', '--min', '13mbit']);
    assert.equal(no.code, 1);
    assert.match(no.stderr, /refused: link "a" has capacity 12mbit but .* would total 13mbit \(sink-lab 13mbit\)/);
  });

  test('a link added with a capacity keeps it, and a change of it, across a daemon restart', T, async () => {
    const r = await a.cli(['link', 'add', 'spare', '--connect', 'tcp:127.0.0.1:1', '--capacity', '50mbit']);
    assert.equal(r.code, 0, r.stderr);
    await a.stop();
    await a.start();
    const spare = (await links(a)).find((l) => l.name === 'spare');
    assert.equal(spare?.source, 'api');
    assert.equal(spare?.qos?.capacity, 50_000_000);
    assert.equal((await a.cli(['link', 'qos', 'spare', '--capacity', '60mbit'])).code, 0);
    await a.stop();
    await a.start();
    assert.equal((await links(a)).find((l) => l.name === 'spare')?.qos?.capacity, 60_000_000);
    assert.equal((await a.cli(['link', 'delete', 'spare'])).code, 0);
  });

  test('a daemon whose config oversubscribes a link does not start, naming the field', T, async () => {
    const cfg = join(a.dir, 'over.yaml');
    const doc = (qos: unknown) =>
      stringify({
        host: { id: 'over', control: join(a.dir, 'over.sock'), state_dir: join(a.dir, 'over-state') },
        networks: [{ name: 'lab', vni: 100 }],
        ports: [{ name: 'p', network: 'lab', kind: 'vde', dir: join(a.dir, 'p.vde'), qos: { min: '6mbit' } }],
        overlay: { plain: true },
        links: [{ name: 'up', connect: 'tcp:127.0.0.1:1', qos }],
      });
    await writeFile(cfg, doc({ capacity: '10mbit', burst: 'huge' }));
    const bad = await runCli(['daemon', '--config', cfg]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /links\[0\]\.qos\.burst/);
    await writeFile(cfg, doc({ capacity: '4mbit' }));
    const over = await runCli(['daemon', '--config', cfg]);
    assert.notEqual(over.code, 0);
    assert.match(
      over.stderr + over.stdout,
      /links\[0\]\.qos\.capacity: link \\?"up\\?" has capacity 4mbit but the reservations .* would total 6mbit \(p 6mbit\)/,
    );
  });
});
