/**
 * Shaped overlay links with in-process hosts on loopback: a hub's link down
 * to a spoke that dialled in (overlay.peer_qos) shapes what it relays and
 * still accounts for it; the latency class overtakes bulk frames queued on a
 * shaped link; a link whose capacity is removed sends unshaped again.
 *
 * Rates are checked only as lower bounds on time (a shaper never sends
 * faster than its capacity; a slow machine only makes it slower), over the
 * time actually taken: from before the first frame entered the sending host
 * to the last arrival, so a stalled event loop can only lengthen it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CLASS_LATENCY } from '../../src/qos/classes.js';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

const BCAST = 'ff:ff:ff:ff:ff:ff';
const MA = '52:54:00:00:0a:01';
const MC = '52:54:00:00:0c:01';
const lab = [{ name: 'lab', vni: 100 }];
const to = (h: RigHost) => ({ host: '127.0.0.1', port: h.port });
/** 1 MB/s = 8 Mbit/s. */
const RATE = 1_000_000;
const FRAME = 1000;

/** An IPv4 frame with DSCP `dscp`, a sequence number at byte 40. */
function ipv4(dst: string, src: string, dscp: number, seq: number): Buffer {
  const f = eth(dst, src, FRAME - 14, 0x33);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f[15] = dscp << 2;
  f.writeUInt32BE(seq, 40);
  return f;
}

/**
 * The least time (s) a shaper of `RATE` bytes/s needs to pass `bytes`: its bucket (64 KiB deep, starting
 * full) and the one frame it may send into debt leave at once, the rest at the rate.
 */
const leastSeconds = (bytes: number): number => (bytes - 64 * 1024 - FRAME) / RATE;

/** Arrival times (ms) of frames at a port, recorded by wrapping its write. */
function timeArrivals(h: RigHost): number[] {
  const times: number[] = [];
  const p = h.ports.lab as NonNullable<RigHost['ports'][string]>;
  const write = p.write.bind(p);
  p.write = (buf, off, len) => {
    times.push(performance.now());
    return write(buf, off, len);
  };
  return times;
}

describe('a hub shaping its link down to a spoke (peer_qos)', { timeout: 60_000 }, () => {
  let h: RigHost;
  let a: RigHost;
  let c: RigHost;

  before(async () => {
    h = await rigHost({
      id: 'h',
      networks: lab,
      relay: true,
      directThresholdBps: 0,
      peerQos: { c: { capacity: RATE } },
    });
    [a, c] = await Promise.all([
      rigHost({ id: 'a', networks: lab, listen: false }),
      rigHost({ id: 'c', networks: lab, listen: false }),
    ]);
    a.overlay.add({ name: 'hub', connect: to(h) }, 'config');
    c.overlay.add({ name: 'hub', connect: to(h) }, 'config');
    await until('both spokes up', () => h.overlay.list().filter((l) => l.state === 'up').length === 2);
    // Each end is up once it has the other's network list: wait for the spokes' ends too.
    await until('spokes see the hub', () => [a, c].every((s) => s.overlay.view('hub').state === 'up'));
    // c announces its MAC: the hub and a learn it, so a's frames to it are unicast.
    c.ports.lab?.rx(eth(BCAST, MC));
    await until('MC learned at a', () => a.sw.fdb('lab').some((e) => e.mac === MC));
  });

  after(async () => {
    await Promise.all([h?.stop(), a?.stop(), c?.stop()]);
  });

  test('relayed frames leave at most at the capacity, overflow is dropped at the queue bound, and relaying is still counted', async () => {
    assert.equal(h.overlay.view('c').qos?.capacity, RATE * 8);
    assert.equal(h.overlay.view('a').qos, undefined);
    const got = c.ports.lab?.got as Buffer[];
    got.length = 0;
    const times = timeArrivals(c);
    const n = 400;
    const started = performance.now(); // no frame can have reached the hub's shaper before this
    for (let i = 0; i < n; i++) a.ports.lab?.rx(ipv4(MC, MA, 0, i));
    // Everything a sent reached the hub (its link is not shaped); then the shaper holds the rest back.
    await until('the hub got all frames', () => h.overlay.view('a').rx_frames >= n);
    await until('the shaper drained', () => h.overlay.view('c').qos?.queued === 0);
    const dropped = h.overlay.view('c').qos?.drops_queue_full ?? 0;
    // Each frame arrived or was dropped at the hub's queue bound.
    await until('every frame arrived or was dropped', () => got.length + dropped === n);
    assert.ok(dropped > 0, 'a burst beyond the per-flow queue is dropped at the hub');
    assert.equal(got.length + dropped, n, `${got.length} arrived, ${dropped} dropped`);
    // Order kept within the flow.
    const seqs = got.map((f) => f.readUInt32BE(40));
    assert.deepEqual(
      seqs,
      [...seqs].sort((x, y) => x - y),
    );
    // Never faster than the capacity: beyond the shaper's burst (64 KiB) the frames took their time.
    const bytes = got.length * FRAME;
    const elapsed = ((times.at(-1) as number) - started) / 1000;
    const least = leastSeconds(bytes);
    assert.ok(elapsed >= least, `${bytes} bytes in ${elapsed} s through a ${RATE} B/s link (at least ${least} s)`);
    // The hub counted what it relayed from a to c, through the shaper.
    assert.equal(h.overlay.view('a').relayed_to['c'], bytes);
  });
});

describe('a shaped link between two hosts', { timeout: 60_000 }, () => {
  let x: RigHost;
  let y: RigHost;
  const MX = '52:54:00:00:1a:01';
  const MY = '52:54:00:00:1b:01';

  before(async () => {
    [x, y] = await Promise.all([rigHost({ id: 'x', networks: lab }), rigHost({ id: 'y', networks: lab })]);
    x.overlay.add({ name: 'y', connect: to(y), qos: { capacity: RATE } }, 'config');
    await until('link up', () => x.overlay.view('y').state === 'up');
    y.ports.lab?.rx(eth(BCAST, MY));
    await until('MY learned at x', () => x.sw.fdb('lab').some((e) => e.mac === MY));
    // x's VM may use the latency class (EF marks honoured); unmarked and CS1 frames stay below it.
    x.sw.setPortQos('vm-lab', { cls: CLASS_LATENCY });
  });

  after(async () => {
    await Promise.all([x?.stop(), y?.stop()]);
  });

  test('a latency-class frame overtakes the bulk frames queued on the link', async () => {
    const got = y.ports.lab?.got as Buffer[];
    got.length = 0;
    const bulk = 200;
    for (let i = 0; i < bulk; i++) x.ports.lab?.rx(ipv4(MY, MX, 8, i)); // CS1: bulk
    x.ports.lab?.rx(ipv4(MY, MX, 46, 9999)); // EF: latency
    await until('all arrived', () => got.length === bulk + 1);
    const pos = got.findIndex((f) => f.readUInt32BE(40) === 9999);
    // The shaper's burst lets ~64 frames through at once; the EF frame goes next, not after the other ~136.
    assert.ok(pos >= 0 && pos < bulk - 50, `the EF frame arrived at position ${pos} of ${bulk + 1}`);
    // Each frame was charged to the shaper with the link's 8-byte record header.
    const flows = x.overlay.shapedLinks()[0]?.shaper?.egress.flows() ?? [];
    assert.equal(
      flows.reduce((a, f) => a + f.bytes, 0),
      flows.reduce((a, f) => a + f.frames, 0) * (FRAME + 8),
    );
  });

  test('without its capacity the link sends unshaped again: a burst arrives whole', async () => {
    x.overlay.setQos('y', undefined);
    assert.equal(x.overlay.view('y').qos, undefined);
    assert.equal(x.sw.port('link/y/lab').egress, undefined);
    const got = y.ports.lab?.got as Buffer[];
    got.length = 0;
    const n = 400;
    for (let i = 0; i < n; i++) x.ports.lab?.rx(ipv4(MY, MX, 0, i));
    await until('all arrived', () => got.length === n);
    // And back: the link ports join a new shaper at once.
    x.overlay.setQos('y', { capacity: RATE });
    assert.equal(x.sw.port('link/y/lab').egressShared, true);
  });
});

describe("a spoke's direct link shares the shaper of its uplink to the hub", { timeout: 90_000 }, () => {
  let hub: RigHost;
  let x: RigHost;
  let y: RigHost;
  const MX = '52:54:00:00:2a:01';
  const MY = '52:54:00:00:2b:01';

  before(async () => {
    hub = await rigHost({ id: 'hub', networks: lab, relay: true, directThresholdBps: 200_000 });
    [x, y] = await Promise.all([
      rigHost({ id: 'x', networks: lab }),
      rigHost({ id: 'y', networks: lab, listen: false }),
    ]);
    x.overlay.add({ name: 'hub', connect: to(hub), qos: { capacity: RATE } }, 'config');
    y.overlay.add({ name: 'hub', connect: to(hub), qos: { capacity: RATE } }, 'config');
    await until('spokes up', () => hub.overlay.list().filter((l) => l.state === 'up').length === 2);
    await until('spokes see the hub', () => [x, y].every((s) => s.overlay.view('hub').state === 'up'));
    x.ports.lab?.rx(eth(BCAST, MX));
    await until('MX learned at y', () => y.sw.fdb('lab').some((e) => e.mac === MX));
  });

  after(async () => {
    await Promise.all([hub?.stop(), x?.stop(), y?.stop()]);
  });

  test('both ends of the direct link go through their uplink shaper, and the capacity still holds', async () => {
    // y sends to x through the hub until the hub asks for a direct link.
    let stop = false;
    const pump = (async () => {
      for (let i = 0; !stop; i++) {
        for (let k = 0; k < 20; k++) y.ports.lab?.rx(ipv4(MX, MY, 0, i));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await until(
        'direct link up',
        () => y.overlay.has('direct-x') && y.overlay.view('direct-x').state === 'up',
        20_000,
      );
    } finally {
      stop = true;
      await pump;
    }
    assert.equal(y.overlay.view('direct-x').qos?.shared_with, 'hub');
    assert.equal(y.overlay.view('direct-x').qos?.capacity, RATE * 8);
    await until('x accepted y', () => x.overlay.list().some((l) => l.peer === 'y' && l.state === 'up'));
    const onX = x.overlay.list().find((l) => l.peer === 'y');
    assert.equal(onX?.qos?.shared_with, 'hub');
    // Only the uplinks count for admission and qos show: one shaped link per spoke.
    assert.deepEqual(
      y.overlay.shapedLinks().map((l) => l.name),
      ['hub'],
    );
    // Frames y -> x now take the direct link, through y's uplink shaper.
    await until('the shaper drained', () => y.overlay.view('hub').qos?.queued === 0);
    y.ports.lab?.rx(eth(BCAST, MY));
    await until(
      'x learned y on the direct link',
      () => x.sw.fdb('lab').find((e) => e.mac === MY)?.port === 'link/y/lab',
    );
    x.ports.lab?.rx(eth(BCAST, MX));
    await until(
      'y learned x on the direct link',
      () => y.sw.fdb('lab').find((e) => e.mac === MX)?.port === 'link/direct-x/lab',
    );
    const got = x.ports.lab?.got as Buffer[];
    got.length = 0;
    const times = timeArrivals(x);
    const directBefore = y.overlay.view('direct-x').tx_frames;
    const dropsBefore = y.overlay.view('hub').qos?.drops_queue_full ?? 0;
    const n = 300;
    const mine = () => got.filter((f) => f.readUInt32BE(40) >= 100_000);
    const started = performance.now(); // no frame can have reached y's shaper before this
    for (let i = 0; i < n; i++) y.ports.lab?.rx(ipv4(MX, MY, 0, 100_000 + i));
    await until('the shaper drained again', () => y.overlay.view('hub').qos?.queued === 0);
    await until(
      'every frame arrived at x or was dropped at the shared queue bound',
      () => mine().length + (y.overlay.view('hub').qos?.drops_queue_full ?? 0) - dropsBefore === n,
    );
    const arrived = mine();
    assert.ok(arrived.length > 0, 'frames at x');
    assert.ok(y.overlay.view('direct-x').tx_frames - directBefore >= arrived.length, 'they took the direct link');
    const bytes = arrived.length * FRAME;
    const elapsed = ((times.at(-1) as number) - started) / 1000;
    const least = leastSeconds(bytes);
    assert.ok(elapsed >= least, `${bytes} bytes in ${elapsed} s over a direct link sharing a ${RATE} B/s uplink`);
    // Deleting the direct link leaves the uplink shaped.
    await y.overlay.delete('direct-x');
    assert.equal(y.overlay.view('hub').qos?.capacity, RATE * 8);
    assert.equal(y.sw.port('link/hub/lab').egressShared, true);
  });
});
