/**
 * The switch's batch ingress (Switch.ingressBatch): frames of one batch are
 * collected per destination port and written with one writeBatch each, and
 * whatever needs the per-frame path keeps its place in every port's order.
 * A seeded fuzz checks that a batch gives the same frames, in the same order,
 * and the same counters as the same frames fed one by one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { WriteResult } from '../../src/net/port.js';
import { type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { prng } from '../helpers/prng.js';
import { packBatch, RecPort } from '../helpers/rec-port.js';

const MAC = (n: number) => `5254000000${n.toString(16).padStart(2, '0')}`;
const BCAST = 'ffffffffffff';
const eth = (dst: string, src: string, n = 46, fill = 'ab') => `${dst}${src}88b5${fill.repeat(n)}`;

function rig(batchPorts: string[], plainPorts: string[] = [], bindings: Record<string, Partial<PortBinding>> = {}) {
  const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
  sw.addNetwork({ name: 'red', vni: 1, mtu: 1500 });
  sw.addNetwork({ name: 'blue', vni: 2, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const sps: Record<string, SwitchPort> = {};
  for (const name of [...batchPorts, ...plainPorts]) {
    sps[name] = sw.addPort(name, { network: 'red', ...bindings[name] }, (sink) => {
      ports[name] = new RecPort(name, sink, batchPorts.includes(name));
      return ports[name];
    });
  }
  /** Feeds hex frames to `name` as one batch (all in one buffer, 2 bytes apart). */
  const batch = (name: string, frames: string[]) => {
    const { buf, idx, count } = packBatch(frames);
    (sps[name] as SwitchPort).ingressBatch(buf, idx, count);
  };
  const one = (name: string, hex: string) => {
    const b = Buffer.from(hex, 'hex');
    (ports[name] as RecPort).sink(b, 0, b.length);
  };
  return { sw, ports, sps, batch, one };
}

describe('Switch batch ingress', () => {
  test('unicast frames to learned MACs reach each port in order, one writeBatch per destination, counted as frames', () => {
    const { ports, sps, batch, one } = rig(['a', 'b', 'c']);
    one('b', eth(BCAST, MAC(2)));
    one('c', eth(BCAST, MAC(3)));
    for (const p of Object.values(ports)) p.sent.length = 0;
    const f = (dst: number, n: number) => eth(MAC(dst), MAC(1), 46, n.toString(16).padStart(2, '0'));
    batch('a', [f(2, 1), f(2, 2), f(3, 3), f(2, 4), f(3, 5), f(2, 6)]);
    assert.deepEqual(ports['b']?.sent, [f(2, 1), f(2, 2), f(2, 4), f(2, 6)]);
    assert.deepEqual(ports['c']?.sent, [f(3, 3), f(3, 5)]);
    assert.deepEqual(ports['b']?.batches, [4]);
    assert.deepEqual(ports['c']?.batches, [2]);
    assert.deepEqual(ports['a']?.sent, []);
    const ca = sps['a']?.counters;
    assert.equal(ca?.rxFrames, 6);
    assert.equal(ca?.rxBytes, 6 * 60);
    assert.equal(sps['b']?.counters.txFrames, 5, 'the flood from c, then four');
    assert.equal(sps['b']?.counters.txBytes, 5 * 60);
  });

  test('broadcasts, unknown MACs, runts, frames over the MTU and ports without writeBatch keep their place in each port order', () => {
    const { ports, sps, batch, one } = rig(['a', 'b'], ['d']);
    one('b', eth(BCAST, MAC(2)));
    one('d', eth(BCAST, MAC(4)));
    for (const p of Object.values(ports)) p.sent.length = 0;
    const u1 = eth(MAC(2), MAC(1), 46, '01');
    const bc = eth(BCAST, MAC(1), 46, '02');
    const u2 = eth(MAC(2), MAC(1), 46, '03');
    const unknown = eth(MAC(9), MAC(1), 46, '04');
    const toD = eth(MAC(4), MAC(1), 46, '05');
    const runt = 'ffffffffffff5254';
    const big = eth(MAC(2), MAC(1), 1501, '06');
    const u3 = eth(MAC(2), MAC(1), 46, '07');
    batch('a', [u1, bc, u2, unknown, toD, runt, big, u3]);
    assert.deepEqual(ports['b']?.sent, [u1, bc, u2, unknown, u3]);
    assert.deepEqual(ports['d']?.sent, [bc, unknown, toD]);
    const c = sps['a']?.counters;
    assert.equal(c?.rxFrames, 8);
    assert.equal(c?.runt, 1);
    assert.equal(c?.mtu, 1);
  });

  test('a batch larger than one destination collects is written in pieces, in order', () => {
    const { ports, batch, one } = rig(['a', 'b']);
    one('b', eth(BCAST, MAC(2)));
    ports['b']!.sent.length = 0;
    const frames = Array.from({ length: 300 }, (_, i) =>
      eth(MAC(2), MAC(1), 46, (i & 0xff).toString(16).padStart(2, '0')),
    );
    batch('a', frames);
    assert.deepEqual(ports['b']?.batches, [256, 44]);
    assert.deepEqual(ports['b']?.sent, frames);
  });

  test('frames a port refuses in writeBatch are counted as queue_full or down on that port', () => {
    const { ports, sps, batch, one } = rig(['a', 'b']);
    one('b', eth(BCAST, MAC(2)));
    (ports['b'] as RecPort).result = WriteResult.QUEUE_FULL;
    batch('a', [eth(MAC(2), MAC(1)), eth(MAC(2), MAC(1))]);
    (ports['b'] as RecPort).result = WriteResult.DOWN;
    batch('a', [eth(MAC(2), MAC(1))]);
    const c = sps['b']?.counters;
    assert.equal(c?.queue_full, 2);
    assert.equal(c?.down, 1);
    assert.equal(c?.txFrames, 0);
  });

  test('a MAC that moves to the batching port in the middle of a batch is filtered from then on', () => {
    const { ports, batch, one } = rig(['a', 'b']);
    one('b', eth(BCAST, MAC(2)));
    ports['b']!.sent.length = 0;
    // The first frame goes to b; then MAC 2 sends from a (it moved): the next frame to MAC 2 stays on a.
    batch('a', [eth(MAC(2), MAC(1), 46, '01'), eth(BCAST, MAC(2), 46, '02'), eth(MAC(2), MAC(1), 46, '03')]);
    assert.deepEqual(ports['b']?.sent, [eth(MAC(2), MAC(1), 46, '01'), eth(BCAST, MAC(2), 46, '02')]);
  });

  test('fuzz: a batch gives every port the same frames, in order, and the same counters as the frames one by one', () => {
    const rnd = prng(0xba7c_0001);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    const bindings: Record<string, Partial<PortBinding>> = {
      c: { maxMacs: 2 },
      e: { allowedMacs: [0x5254_0000_0001, 0x5254_0000_0005] },
      t: { network: undefined, trunk: { vlans: { 10: 'red', 20: 'blue' } } },
    };
    let batched = 0;
    for (let round = 0; round < 150; round++) {
      const x = rig(['a', 'b', 'c', 'e'], ['d', 't'], bindings);
      const y = rig(['a', 'b', 'c', 'e'], ['d', 't'], bindings);
      const names = ['a', 'b', 'c', 'd', 'e', 't'];
      for (let step = 0; step < 12; step++) {
        const from = pick(names);
        const frames = Array.from({ length: 1 + Math.floor(rnd() * 24) }, (_, k) => {
          const dst = pick([MAC(1), MAC(2), MAC(3), MAC(5), MAC(7), BCAST, '01005e000001']);
          const src = pick([MAC(1), MAC(2), MAC(3), MAC(4), MAC(5), MAC(6), '01005e000002']);
          const fill = ((step * 32 + k) & 0xff).toString(16).padStart(2, '0');
          const r = rnd();
          if (r < 0.05) return 'ffffffff';
          if (r < 0.1) return eth(dst, src, 1501, fill);
          if (r < 0.2) return `${dst}${src}8100${pick(['000a', '0014', '0063', '0000'])}88b5${fill.repeat(42)}`;
          return eth(dst, src, 46, fill);
        });
        for (const h of frames) x.one(from, h);
        y.batch(from, frames);
      }
      for (const n of names) {
        assert.deepEqual(y.ports[n]?.sent, x.ports[n]?.sent, `round ${round}: frames of port ${n}`);
        assert.deepEqual(
          y.sps[n]?.counterSnapshot(),
          x.sps[n]?.counterSnapshot(),
          `round ${round}: counters of port ${n}`,
        );
      }
      assert.deepEqual(
        y.sw.fdb().map((r) => [r.mac, r.port]),
        x.sw.fdb().map((r) => [r.mac, r.port]),
      );
      for (const n of names) batched += (y.ports[n]?.batches ?? []).reduce((a, b) => a + b, 0);
    }
    assert.ok(batched > 1000, `only ${batched} frames went through writeBatch`);
  });
});
