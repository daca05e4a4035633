/**
 * The switch with frames that carry offload metadata: whole to ports that
 * take offloads, segmented in software for the others, bad metadata dropped
 * and counted. In-memory ports; frames byte-exact where the bytes matter.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { Segmenter } from '../../src/net/offload/segmenter.js';
import { GSO_TCPV4, OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import { type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { MetaPort } from '../helpers/meta-port.js';
import { prng } from '../helpers/prng.js';

// The TCP/IPv4 fixtures of offload.test.ts: 20 payload bytes cut at gso_size 8.
const TCP4_IN =
  '52540000000252540000000108004500003c12344000400614860a0000010a0000029c401389000003e80102030450990200dead00004142434445464748494a4b4c4d4e4f5051525354';
const TCP4_SEGS = [
  '52540000000252540000000108004500003012344000400614920a0000010a0000029c401389000003e80102030450900200d07d00004142434445464748',
  '52540000000252540000000108004500003012354000400614910a0000010a0000029c401389000003f00102030450100200b0d50000494a4b4c4d4e4f50',
  '52540000000252540000000108004500002c12364000400614940a0000010a0000029c401389000003f801020304501902003d57000051525354',
];

function rig() {
  const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
  sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
  sw.addNetwork({ name: 'other', vni: 2, mtu: 1500 });
  const ports: Record<string, MetaPort> = {};
  const sps: Record<string, SwitchPort> = {};
  const add = (name: string, offloads: boolean, binding: PortBinding = { network: 'lan' }) => {
    sps[name] = sw.addPort(name, binding, (sink) => {
      ports[name] = new MetaPort(name, offloads, sink);
      return ports[name];
    });
    return ports[name] as MetaPort;
  };
  return { sw, add, ports, sps };
}

function gsoMeta(gsoSize: number): OffloadMeta {
  return Object.assign(new OffloadMeta(), { flags: 1, gsoType: GSO_TCPV4, gsoSize, csumStart: 34, csumOffset: 16 });
}

function send(p: MetaPort, hex: string, meta?: OffloadMeta): void {
  const b = Buffer.from(hex, 'hex');
  p.sink(b, 0, b.length, meta);
}

describe('Switch with offload metadata', () => {
  test('hands a large segment whole to a port that takes offloads and cut in software to one that does not', () => {
    const { add, sps } = rig();
    const src = add('src', true);
    const tap = add('tap', true);
    const vm = add('vm', false);
    send(src, TCP4_IN, gsoMeta(8)); // unknown destination: flooded to both
    assert.equal(tap.got.length, 1);
    assert.equal(tap.got[0]?.hex, TCP4_IN);
    assert.deepEqual({ ...tap.got[0]?.meta }, { ...gsoMeta(8), hdrLen: 0 });
    assert.deepEqual(
      vm.got.map((s) => s.hex),
      TCP4_SEGS,
    );
    assert.ok(vm.got.every((s) => s.meta === undefined));
    const [s, t, v] = [sps['src'], sps['tap'], sps['vm']].map((p) => p?.counterSnapshot());
    assert.deepEqual(s?.offload, { rx_gso: 1, tx_gso: 0, tx_segmented: 0, tx_csum: 0 });
    assert.deepEqual(t?.offload, { rx_gso: 0, tx_gso: 1, tx_segmented: 0, tx_csum: 0 });
    assert.deepEqual(v?.offload, { rx_gso: 0, tx_gso: 0, tx_segmented: 1, tx_csum: 0 });
    assert.equal(v?.tx_frames, 3);
  });

  test('completes a partial checksum for a port without offloads and passes it on for one with them', () => {
    const { add, sps } = rig();
    const src = add('src', true);
    const tap = add('tap', true);
    const vm = add('vm', false);
    // One segment's worth: the first fixture segment with its checksum field holding the pseudo-header sum.
    const frame = Buffer.from(TCP4_SEGS[0] as string, 'hex');
    frame.writeUInt16BE(0x1425, 50); // 0a00 + 0001 + 0a00 + 0002 + 0006 (TCP) + 001c (length) = 0x1425
    const m = Object.assign(new OffloadMeta(), { flags: 1, csumStart: 34, csumOffset: 16 });
    send(src, frame.toString('hex'), m);
    assert.equal(tap.got[0]?.hex, frame.toString('hex'));
    assert.equal(tap.got[0]?.meta?.flags, 1);
    assert.equal(vm.got[0]?.hex, TCP4_SEGS[0]);
    assert.equal(sps['vm']?.counters.txCsum, 1);
  });

  test('drops a frame with bad metadata and counts it as an offload drop on the ingress port', () => {
    const { add, sps } = rig();
    const src = add('src', true);
    const tap = add('tap', true);
    const vm = add('vm', false);
    send(src, TCP4_IN, Object.assign(gsoMeta(8), { gsoType: 42 }));
    send(src, TCP4_IN.slice(0, 90), gsoMeta(8)); // TCP header cut short
    assert.equal(tap.got.length + vm.got.length, 0);
    assert.equal(sps['src']?.counters.offload, 2);
    assert.equal(sps['src']?.counterSnapshot().drops.offload, 2);
  });

  test('checks a large segment against the MTU by the segments it will be cut into', () => {
    const { add, sps } = rig();
    const src = add('src', true);
    const vm = add('vm', false);
    const big = `${TCP4_IN.slice(0, 108)}${'5a'.repeat(3000)}`; // 54 header bytes, 3000 payload bytes
    send(src, big, gsoMeta(1460)); // 20 + 20 + 1460 = the 1500-byte MTU
    assert.deepEqual(
      vm.got.map((s) => s.hex.length / 2),
      [1514, 1514, 134],
    );
    send(src, big, gsoMeta(1461));
    assert.equal(vm.got.length, 3);
    assert.equal(sps['src']?.counters.mtu, 1);
  });

  test('moves csum_start with a VLAN tag stripped on a trunk and inserted on egress', () => {
    const { add } = rig();
    const trunk = add('trunk', true, { trunk: { vlans: { 100: 'lan' } } });
    const tap = add('tap', true);
    const vm = add('vm', false);
    const tagged = `${TCP4_IN.slice(0, 24)}81000064${TCP4_IN.slice(24)}`;
    send(trunk, tagged, Object.assign(gsoMeta(8), { csumStart: 38 }));
    assert.equal(tap.got[0]?.hex, TCP4_IN);
    assert.equal(tap.got[0]?.meta?.csumStart, 34);
    assert.deepEqual(
      vm.got.map((s) => s.hex),
      TCP4_SEGS,
    );
    // And back: from an access port out of the trunk, tagged, with csum_start 4 further.
    send(tap, TCP4_IN.replace(/^(.{12})(.{12})/, '$2$1'), gsoMeta(8));
    assert.equal(trunk.got[0]?.meta?.csumStart, 38);
    assert.match(trunk.got[0]?.hex ?? '', /^.{24}81000064/);
  });

  test('shows capture taps the segments a large segment stands for', () => {
    const { add, sw } = rig();
    const src = add('src', true);
    add('vm', false);
    const seen: string[] = [];
    sw.port('src').taps.push({ frame: (b, o, l, dir) => seen.push(`${dir}:${b.toString('hex', o, o + l)}`) });
    send(src, TCP4_IN, gsoMeta(8));
    assert.deepEqual(
      seen,
      TCP4_SEGS.map((s) => `rx:${s}`),
    );
  });

  test('fuzz: 3000 seeded frames with random metadata never throw; each is forwarded or counted as a drop', () => {
    const { add, sps } = rig();
    const src = add('src', true);
    const tap = add('tap', true);
    const vm = add('vm', false);
    const rand = prng(0x5eed_0ff);
    const check = new Segmenter(70_000);
    const base = Buffer.from(TCP4_IN, 'hex');
    let refused = 0;
    for (let i = 0; i < 3000; i++) {
      const f = Buffer.from(base.subarray(0, 14 + Math.floor(rand() * (base.length - 13))));
      for (let k = Math.floor(rand() * 3); k > 0; k--)
        f[14 + Math.floor(rand() * (f.length - 14))] = Math.floor(rand() * 256);
      const m = Object.assign(new OffloadMeta(), {
        flags: Math.floor(rand() * 4),
        gsoType: rand() < 0.7 ? GSO_TCPV4 : Math.floor(rand() * 256),
        gsoSize: Math.floor(rand() * 3000),
        csumStart: rand() < 0.5 ? 34 : Math.floor(rand() * 70_000),
        csumOffset: rand() < 0.5 ? 16 : Math.floor(rand() * 70_000),
      });
      const bad = m.active && !check.check(f, 0, f.length, m);
      if (bad) refused++;
      const before = tap.got.length;
      src.sink(f, 0, f.length, m);
      if (!bad) assert.ok(tap.got.length === before + 1 || sps['src']!.counters.mtu > 0, `frame ${i} vanished`);
    }
    assert.equal(sps['src']?.counters.offload, refused);
    assert.ok(refused > 300 && refused < 2700, `${refused} refused: the fuzz misses one side`);
    assert.ok(vm.got.length > 0);
  });
});
