/**
 * Overlay topologies with in-process hosts on loopback: a full-mesh triangle
 * under a broadcast storm stays loop-free, MACs move between hosts and are
 * re-learned at once, and a relaying hub turns busy spoke-to-spoke traffic
 * into a direct link (and falls back to relaying when it goes).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

const BCAST = 'ff:ff:ff:ff:ff:ff';
const MA = '52:54:00:00:0a:01';
const MB = '52:54:00:00:0b:01';
const MC = '52:54:00:00:0c:01';
const lab = [{ name: 'lab', vni: 100 }];
const to = (h: RigHost) => ({ host: '127.0.0.1', port: h.port });

describe('a triangle of hosts in full mesh', { timeout: 60_000 }, () => {
  let a: RigHost;
  let b: RigHost;
  let c: RigHost;

  before(async () => {
    [a, b, c] = await Promise.all([
      rigHost({ id: 'a', networks: lab }),
      rigHost({ id: 'b', networks: lab }),
      rigHost({ id: 'c', networks: lab }),
    ]);
    a.overlay.add({ name: 'b', connect: to(b) }, 'config');
    a.overlay.add({ name: 'c', connect: to(c) }, 'config');
    b.overlay.add({ name: 'c', connect: to(c) }, 'config');
    const ups = (h: RigHost) => h.overlay.list().filter((l) => l.state === 'up').length;
    await until('every host has two links up', () => ups(a) === 2 && ups(b) === 2 && ups(c) === 2);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  });

  test('a broadcast storm reaches every other host exactly once per frame: no loop', async () => {
    const n = 500;
    for (let i = 0; i < n; i++) {
      const f = eth(BCAST, MA, 100);
      f.writeUInt32BE(i, 14);
      a.ports.lab?.rx(f);
    }
    // Markers: a's marker follows its storm on each link; b and c then send
    // their own marker, which follows on their link anything they might have
    // looped back. When every marker arrived, nothing else is in flight.
    const marker = (src: string) => eth(BCAST, src, 100, 0xee);
    a.ports.lab?.rx(marker(MA));
    await until('a marker at b and c', () => [b, c].every((h) => h.ports.lab?.got.some((f) => f.equals(marker(MA)))));
    b.ports.lab?.rx(marker(MB));
    c.ports.lab?.rx(marker(MC));
    await until(
      'b and c markers everywhere',
      () =>
        (a.ports.lab?.got.length ?? 0) >= 2 &&
        (b.ports.lab?.got.some((f) => f.equals(marker(MC))) ?? false) &&
        (c.ports.lab?.got.some((f) => f.equals(marker(MB))) ?? false),
    );
    for (const h of [b, c]) {
      const got = h.ports.lab?.got ?? [];
      const storm = got.filter((f) => f.subarray(6, 12).toString('hex') === '525400000a01' && f[20] !== 0xee);
      assert.equal(storm.length, n, `host ${h.id} got ${storm.length} storm frames`);
      assert.deepEqual(
        storm.map((f) => f.readUInt32BE(14)),
        Array.from({ length: n }, (_, i) => i),
      );
      assert.equal(got.length, n + 2, `host ${h.id}: ${got.length} frames`);
    }
    // a got only the two other markers: none of its own frames came back.
    assert.equal(a.ports.lab?.got.length, 2);
    for (const h of [a, b, c]) h.ports.lab?.got.splice(0);
  });

  test('a MAC that moves to another host is re-learned at once everywhere', async () => {
    const vm = '52:54:00:00:99:01';
    b.ports.lab?.rx(eth(BCAST, vm));
    await until(
      'learned on a and c',
      () => a.sw.fdb('lab').some((e) => e.mac === vm) && c.sw.fdb('lab').some((e) => e.mac === vm),
    );
    assert.equal(a.sw.fdb('lab').find((e) => e.mac === vm)?.port, 'link/b/lab');
    // The VM migrates to c and announces itself (gratuitous ARP / RARP: a broadcast).
    c.ports.lab?.rx(eth(BCAST, vm));
    await until(
      're-learned behind c on a and b',
      () =>
        a.sw.fdb('lab').find((e) => e.mac === vm)?.port === 'link/c/lab' &&
        b.sw.fdb('lab').find((e) => e.mac === vm)?.port === 'link/c/lab',
    );
    for (const h of [a, b, c]) h.ports.lab?.got.splice(0);
    const uni = eth(vm, MA, 60, 0x42);
    a.ports.lab?.rx(uni);
    await until('unicast at c', () => (c.ports.lab?.got.length ?? 0) >= 1);
    assert.deepEqual(c.ports.lab?.got, [uni]);
    assert.equal(b.ports.lab?.got.length, 0);
  });
});

describe('hub and spokes with adaptive direct links', { timeout: 90_000 }, () => {
  let hub: RigHost;
  let x: RigHost;
  let y: RigHost;

  before(async () => {
    hub = await rigHost({ id: 'hub', networks: lab, relay: true, directThresholdBps: 200_000 });
    // x listens (it can be reached); y only dials out.
    x = await rigHost({ id: 'x', networks: lab });
    y = await rigHost({ id: 'y', networks: lab, listen: false });
    x.overlay.add({ name: 'hub', connect: to(hub) }, 'config');
    y.overlay.add({ name: 'hub', connect: to(hub) }, 'config');
    await until('spokes up', () => x.overlay.view('hub').state === 'up' && y.overlay.view('hub').state === 'up');
  });

  after(async () => {
    await Promise.all([hub?.stop(), x?.stop(), y?.stop()]);
  });

  test('spokes reach each other through the hub, which relays (and only the hub)', async () => {
    const f = eth(BCAST, MB);
    y.ports.lab?.rx(f);
    await until(
      'y broadcast at x and hub',
      () => (x.ports.lab?.got.length ?? 0) >= 1 && (hub.ports.lab?.got.length ?? 0) >= 1,
    );
    x.ports.lab?.rx(eth(MB, MA));
    await until('x reply at y', () => (y.ports.lab?.got.length ?? 0) >= 1);
    assert.ok((hub.overlay.view('y').relayed_bytes ?? 0) > 0);
    for (const h of [hub, x, y]) h.ports.lab?.got.splice(0);
  });

  test('busy spoke-to-spoke traffic makes the hub ask for a direct link; traffic moves to it', async () => {
    // y sends to x's VM (learned through the hub) at several Mbit/s until the direct link is up.
    let stop = false;
    const pump = (async () => {
      while (!stop) {
        for (let i = 0; i < 20; i++) y.ports.lab?.rx(eth(MA, MB, 1000));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await until(
        'direct link from y to x up',
        () => y.overlay.has('direct-x') && y.overlay.view('direct-x').state === 'up',
        20_000,
      );
    } finally {
      stop = true;
      await pump;
    }
    const d = y.overlay.view('direct-x');
    assert.equal(d.source, 'direct');
    assert.equal(d.peer, 'x');
    // The spoke's link to the hub is its relay path; the new one is direct.
    assert.equal(y.overlay.view('hub').path, 'relay');
    assert.equal(d.path, 'direct');
    // x accepted it; the hub hears of it from both spokes and stops relaying between them.
    await until('x accepted y', () => x.overlay.list().some((l) => l.peer === 'y' && l.state === 'up'));
    await until(
      'hub knows of the direct link',
      () => hub.overlay.view('y').direct_peers.includes('x') && hub.overlay.view('x').direct_peers.includes('y'),
    );
    // Now frames y -> x travel the direct link only: each arrives once, the hub relays none of them.
    const relayed = hub.overlay.view('y').relayed_bytes;
    const directTx = y.overlay.view('direct-x').tx_frames;
    y.ports.lab?.rx(eth(BCAST, MB)); // y's MAC re-learned on x behind the direct link
    await until('x relearned y', () => x.sw.fdb('lab').find((e) => e.mac === MB)?.port === 'link/y/lab');
    x.ports.lab?.got.splice(0);
    const mark = (i: number) => {
      const f = eth(MA, MB, 200, 0x77);
      f.writeUInt32BE(i, 14);
      return f;
    };
    for (let i = 0; i < 100; i++) y.ports.lab?.rx(mark(i));
    await until('100 frames at x', () => (x.ports.lab?.got.filter((f) => f[20] === 0x77).length ?? 0) >= 100);
    // A broadcast after them proves nothing more is coming (same path, in order) - both ways.
    const after1 = eth(BCAST, MB, 46, 0x31);
    y.ports.lab?.rx(after1);
    await until('y broadcast at x', () => x.ports.lab?.got.some((f) => f.equals(after1)) ?? false);
    assert.equal(x.ports.lab?.got.filter((f) => f[20] === 0x77).length, 100, 'each frame exactly once');
    assert.equal(hub.overlay.view('y').relayed_bytes, relayed, 'the hub relayed nothing more between y and x');
    assert.ok(y.overlay.view('direct-x').tx_frames >= directTx + 100);
    // Broadcasts from y reach x once: via the direct link, not again via the hub.
    assert.equal(x.ports.lab?.got.filter((f) => f.equals(after1)).length, 1);
  });

  test('when the direct link goes, traffic falls back to the relay', async () => {
    await y.overlay.delete('direct-x');
    await until(
      'hub forgot the direct link',
      () => hub.overlay.view('y').direct_peers.length === 0 && hub.overlay.view('x').direct_peers.length === 0,
    );
    assert.ok(!x.overlay.list().some((l) => l.peer === 'y'));
    for (const h of [hub, x, y]) h.ports.lab?.got.splice(0);
    const relayed = hub.overlay.view('y').relayed_bytes;
    const f = eth(BCAST, MB, 46, 0x55);
    y.ports.lab?.rx(f);
    await until('y broadcast at x through the hub', () => x.ports.lab?.got.some((g) => g.equals(f)) ?? false);
    const u = eth(MA, MB, 80, 0x56);
    y.ports.lab?.rx(u);
    await until('y unicast at x through the hub', () => x.ports.lab?.got.some((g) => g.equals(u)) ?? false);
    assert.ok(hub.overlay.view('y').relayed_bytes > relayed);
  });
});
