/**
 * Links between overlay hosts over real TCP and TLS sockets on loopback:
 * what a link carries, aggregation, jumbo frames, statistics, mutual TLS
 * authentication, and recovery after a cut.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { encodeControl, writeHeader } from '../../src/net/overlay/codec.js';
import { eth, type RigHost, rigCa, rigHost, until } from '../helpers/overlay-rig.js';
import { prng } from '../helpers/prng.js';

const A1 = '52:54:00:00:0a:01';
const B1 = '52:54:00:00:0b:01';
const BCAST = 'ff:ff:ff:ff:ff:ff';

describe('overlay links over plain TCP', { timeout: 60_000 }, () => {
  let a: RigHost;
  let b: RigHost;

  before(async () => {
    a = await rigHost({
      id: 'a',
      listen: false,
      networks: [
        { name: 'lab', vni: 100 },
        { name: 'only-a', vni: 200 },
      ],
    });
    b = await rigHost({
      id: 'b',
      networks: [
        { name: 'lab2', vni: 100 },
        { name: 'only-b', vni: 300 },
      ],
    });
    a.overlay.add({ name: 'to-b', connect: { host: '127.0.0.1', port: b.port } }, 'config');
    await until('link to-b up', () => a.overlay.view('to-b').state === 'up');
    await until('accepted link on b', () => b.overlay.list().some((l) => l.state === 'up'));
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('carries exactly the networks both hosts have, matched by VNI', () => {
    assert.deepEqual(a.overlay.view('to-b').networks, ['lab']);
    const bl = b.overlay.list();
    assert.equal(bl.length, 1);
    assert.equal(bl[0]?.name, 'a');
    assert.equal(bl[0]?.mode, 'accept');
    assert.deepEqual(bl[0]?.networks, ['lab2']);
  });

  test('a broadcast crosses the link to the same VNI only, and unicast comes back to the sender', async () => {
    const f = eth(BCAST, A1);
    a.ports.lab?.rx(f);
    a.ports['only-a']?.rx(eth(BCAST, '52:54:00:00:0a:02'));
    await until('frame at b', () => (b.ports.lab2?.got.length ?? 0) >= 1);
    assert.deepEqual(b.ports.lab2?.got.shift(), f);
    assert.equal(b.ports['only-b']?.got.length, 0);
    const back = eth(A1, B1);
    b.ports.lab2?.rx(back);
    await until('reply at a', () => (a.ports.lab?.got.length ?? 0) >= 1);
    assert.deepEqual(a.ports.lab?.got.shift(), back);
    // a learned B1 behind the link port.
    assert.equal(a.sw.fdb('lab').find((e) => e.mac === B1)?.port, 'link/to-b/lab');
  });

  test('carries jumbo frames and 64 KiB segments whole', async () => {
    const jumbo = eth(B1, A1, 8986, 0x5a);
    a.ports.lab?.rx(jumbo);
    await until('jumbo at b', () => (b.ports.lab2?.got.length ?? 0) >= 1);
    assert.deepEqual(b.ports.lab2?.got.shift(), jumbo);
  });

  test('aggregates a burst: many frames per kernel write, all delivered in order', async () => {
    const before = a.overlay.view('to-b');
    const n = 2000;
    for (let i = 0; i < n; i++) {
      const f = eth(B1, A1, 1486);
      f.writeUInt32BE(i, 14);
      a.ports.lab?.rx(f);
    }
    await until('burst at b', () => (b.ports.lab2?.got.length ?? 0) >= n);
    const got = b.ports.lab2?.got.splice(0) ?? [];
    assert.deepEqual(
      got.map((f) => f.readUInt32BE(14)),
      Array.from({ length: n }, (_, i) => i),
    );
    const v = a.overlay.view('to-b');
    const frames = v.tx_frames - before.tx_frames;
    const writes = v.tx_writes - before.tx_writes;
    assert.equal(frames, n);
    assert.ok(writes * 10 <= frames, `${frames} frames took ${writes} writes: not aggregated`);
  });

  test('lists RTT from keepalives, and counters on both ends', async () => {
    await until('rtt measured', () => a.overlay.view('to-b').rtt_ms !== undefined);
    const v = a.overlay.view('to-b');
    assert.ok((v.rtt_ms as number) >= 0);
    assert.equal(v.peer, 'b');
    assert.ok(v.tx_bytes > 2000 * 1500);
    const bv = b.overlay.list()[0];
    assert.ok((bv?.rx_frames ?? 0) >= 2000);
    assert.equal(v.drops.queue_full, 0);
  });

  test('fuzzed peers (a valid hello, then random records) are cut off one by one; the host and its link carry on', async () => {
    const rnd = prng(31);
    const hello = encodeControl({
      type: 'hello',
      proto: 'vmlink-link',
      version: 2,
      host: 'fuzz',
    });
    for (let i = 0; i < 40; i++) {
      const s = connect(b.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.resume();
      await new Promise((r) => s.once('connect', r));
      const junk = Buffer.alloc(64 + Math.floor(rnd() * 4000));
      for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rnd() * 256);
      // Often a plausible header first, so the parser goes deeper than the first bytes.
      if (rnd() < 0.7)
        writeHeader(junk, 0, Math.floor(rnd() * 100), 1 + Math.floor(rnd() * 3), Math.floor(rnd() * 300));
      s.write(rnd() < 0.8 ? Buffer.concat([hello, junk]) : junk);
      // Either the host closes it (protocol error, unknown VNI frames are dropped) or we do.
      await Promise.race([new Promise((r) => s.once('close', r)), new Promise((r) => setTimeout(r, 200))]);
      s.destroy();
    }
    await until('fuzz links gone', () => !b.overlay.list().some((l) => l.peer === 'fuzz'));
    assert.equal(a.overlay.view('to-b').state, 'up');
    const f = eth(BCAST, A1, 46, 0x3c);
    a.ports.lab?.rx(f);
    await until('frame after fuzz', () => b.ports.lab2?.got.some((g) => g.equals(f)) ?? false);
    b.ports.lab2?.got.splice(0);
  });

  test('a link to its own listener (or a peer with the same host id) is refused, not looped', async () => {
    b.overlay.add({ name: 'self', connect: { host: '127.0.0.1', port: b.port } }, 'api');
    await until('self link refused', () => /own id/.test(b.overlay.view('self').reason));
    assert.notEqual(b.overlay.view('self').state, 'up');
    assert.ok(!b.sw.ports().some((p) => p.name.startsWith('link/self/')));
    await b.overlay.delete('self');
  });

  test('when both hosts dial each other, one connection is kept on both ends', async () => {
    b.overlay.add({ name: 'to-a', connect: { host: '127.0.0.1', port: 1 } }, 'api');
    // b cannot reach a (a does not listen): b's link keeps trying, a-b stays one link.
    await until('b link connecting', () => b.overlay.view('to-a').state === 'connecting');
    assert.equal(a.overlay.view('to-b').state, 'up');
    await b.overlay.delete('to-a');
    assert.equal(b.overlay.has('to-a'), false);
  });
});

describe('overlay links over TLS 1.3 with mutual authentication', { timeout: 60_000 }, () => {
  let ca: Awaited<ReturnType<typeof rigCa>>;
  let other: Awaited<ReturnType<typeof rigCa>>;
  let a: RigHost;
  let b: RigHost;
  let m: RigHost | undefined;

  before(async () => {
    ca = await rigCa(['a', 'b']);
    other = await rigCa(['mallory', 'b']);
    b = await rigHost({ id: 'b', tls: ca.tls.b, networks: [{ name: 'lab', vni: 100 }] });
    a = await rigHost({ id: 'a', listen: false, tls: ca.tls.a, networks: [{ name: 'lab', vni: 100 }] });
    a.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port: b.port } }, 'config');
    await until('tls link up', () => a.overlay.view('b').state === 'up');
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop(), m?.stop()]);
    await ca?.cleanup();
    await other?.cleanup();
  });

  test('two hosts with certificates from the fabric CA link and exchange frames', async () => {
    assert.equal(a.overlay.view('b').transport, 'tls');
    const f = eth(BCAST, A1);
    a.ports.lab?.rx(f);
    await until('frame over tls', () => (b.ports.lab?.got.length ?? 0) >= 1);
    assert.deepEqual(b.ports.lab?.got.shift(), f);
  });

  test('a host with a certificate from another CA is refused, and counted on the listener', async () => {
    const refusedBefore = b.transport.refused;
    m = await rigHost({ id: 'mallory', listen: false, tls: other.tls.mallory, networks: [{ name: 'lab', vni: 100 }] });
    m.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port: b.port } }, 'api');
    await until('refusal counted', () => b.transport.refused > refusedBefore);
    const v = m.overlay.view('b');
    assert.notEqual(v.state, 'up');
    assert.equal(b.overlay.list().filter((l) => l.peer === 'mallory').length, 0);
    // Nothing of mallory's reaches b's VMs.
    m.ports.lab?.rx(eth(BCAST, '52:54:00:00:0e:01'));
    await new Promise((r) => setImmediate(r));
    assert.equal(b.ports.lab?.got.length, 0);
    await m.overlay.delete('b');
  });

  test('a host whose certificate names another host id than its hello is refused', async () => {
    // "b2" presents b's certificate (signed by the fabric CA) but says it is host "b2".
    const imp = await rigHost({ id: 'b2', listen: false, tls: ca.tls.b, networks: [{ name: 'lab', vni: 100 }] });
    try {
      const refusedBefore = b.transport.refused;
      imp.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port: b.port } }, 'api');
      await until('impostor refused', () => b.transport.refused > refusedBefore);
      await until('dialer reports the refusal', () => /refused/.test(imp.overlay.view('b').reason));
      assert.notEqual(imp.overlay.view('b').state, 'up');
    } finally {
      await imp.stop();
    }
  });
});

describe('link recovery after a cut', { timeout: 60_000 }, () => {
  let a: RigHost;
  let b: RigHost;
  let proxy: Server;
  const conns = new Set<Socket>();
  let blackhole = false;

  before(async () => {
    b = await rigHost({ id: 'b', networks: [{ name: 'lab', vni: 100 }] });
    // A TCP relay between a and b that the test can cut (drop every byte, like a dead path).
    proxy = createServer((c) => {
      if (blackhole) {
        conns.add(c);
        return;
      }
      const up = connect(b.port, '127.0.0.1');
      conns.add(c).add(up);
      c.on('data', (d) => {
        if (!blackhole) up.write(d);
      });
      up.on('data', (d) => {
        if (!blackhole) c.write(d);
      });
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
      c.on('close', () => up.destroy());
      up.on('close', () => c.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as { port: number }).port;
    a = await rigHost({ id: 'a', listen: false, networks: [{ name: 'lab', vni: 100 }], keepaliveMs: 100 });
    a.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port } }, 'config');
    await until('link up', () => a.overlay.view('b').state === 'up');
  });

  after(async () => {
    for (const c of conns) c.destroy();
    proxy?.close();
    await a?.stop();
    await b?.stop();
  });

  test('a silent path is detected by keepalives, the link goes down and comes back when the path returns', async () => {
    assert.equal(a.overlay.view('b').connects, 1);
    blackhole = true;
    await until('link down after keepalive timeout', () => a.overlay.view('b').state !== 'up');
    assert.match(a.overlay.view('b').reason, /keepalive timeout|re-dialling/);
    // Its link ports are gone: no MACs stay pointed at a dead link.
    assert.equal(a.sw.ports().filter((p) => p.name.startsWith('link/')).length, 0);
    for (const c of conns) c.destroy();
    blackhole = false;
    await until('link up again', () => a.overlay.view('b').state === 'up', 20_000);
    assert.ok(a.overlay.view('b').connects >= 2);
    const f = eth(BCAST, A1);
    a.ports.lab?.rx(f);
    await until('frame after recovery', () => b.ports.lab?.got.some((g) => g.equals(f)) ?? false);
  });
});
