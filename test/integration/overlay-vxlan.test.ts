/**
 * VXLAN links (RFC 7348) between two vmlink hosts on loopback addresses:
 * frames tagged with their VNI, too-large frames counted, datagrams from
 * strangers and non-VXLAN datagrams dropped and counted; the source port of
 * each inner flow, and bursts moved with and without UDP GSO/GRO.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

const BCAST = 'ff:ff:ff:ff:ff:ff';

describe('VXLAN links between two vmlink hosts', { timeout: 30_000 }, () => {
  let a: RigHost;
  let b: RigHost;

  before(async () => {
    const nets = [
      { name: 'lab', vni: 100, mtu: 9000 },
      { name: 'dev', vni: 200, mtu: 9000 },
    ];
    a = await rigHost({ id: 'a', networks: nets, listen: false, vxlan: { host: '127.0.0.1', mtu: 1500 } });
    b = await rigHost({ id: 'b', networks: nets, listen: false, vxlan: { host: '127.0.0.2', mtu: 1500 } });
    a.overlay.add({ name: 'b', connect: { host: '127.0.0.2', port: b.vxlanPort }, transport: 'vxlan' }, 'config');
    b.overlay.add({ name: 'a', connect: { host: '127.0.0.1', port: a.vxlanPort }, transport: 'vxlan' }, 'config');
    await until('both up', () => a.overlay.view('b').state === 'up' && b.overlay.view('a').state === 'up');
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('carries frames of each network with its VNI, both ways', async () => {
    assert.equal(a.overlay.view('b').transport, 'vxlan');
    const f1 = eth(BCAST, '52:54:00:00:0a:01');
    const f2 = eth(BCAST, '52:54:00:00:0a:02', 100, 0x22);
    a.ports.lab?.rx(f1);
    a.ports.dev?.rx(f2);
    await until('both at b', () => (b.ports.lab?.got.length ?? 0) >= 1 && (b.ports.dev?.got.length ?? 0) >= 1);
    assert.deepEqual(b.ports.lab?.got.splice(0), [f1]);
    assert.deepEqual(b.ports.dev?.got.splice(0), [f2]);
    const back = eth('52:54:00:00:0a:01', '52:54:00:00:0b:01');
    b.ports.lab?.rx(back);
    await until('reply at a', () => (a.ports.lab?.got.length ?? 0) >= 1);
    assert.deepEqual(a.ports.lab?.got.splice(0), [back]);
  });

  test('counts a frame larger than the underlay MTU allows instead of losing it silently', async () => {
    const before1 = a.overlay.view('b').drops.too_big;
    // 1500 - 36 = 1464 bytes fit; 1465 do not.
    a.ports.lab?.rx(eth(BCAST, '52:54:00:00:0a:01', 1464 - 14));
    a.ports.lab?.rx(eth(BCAST, '52:54:00:00:0a:01', 1465 - 14));
    await until('the fitting one at b', () => (b.ports.lab?.got.length ?? 0) >= 1);
    assert.equal(b.ports.lab?.got.splice(0)[0]?.length, 1464);
    assert.equal(a.overlay.view('b').drops.too_big, before1 + 1);
  });

  test('drops datagrams from unknown addresses and datagrams that are not VXLAN, and carries on', async () => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.3', r));
    const hdr = Buffer.from('0800000000006400', 'hex');
    s.send(Buffer.concat([hdr, eth(BCAST, '52:54:00:00:0e:01')]), b.vxlanPort, '127.0.0.2');
    await until('stranger counted', () => (b.vxlan?.unknownSource ?? 0) >= 1);
    s.close();
    assert.equal(b.ports.lab?.got.length, 0);
    // From a's address, but without the I flag.
    const s2 = createSocket('udp4');
    await new Promise<void>((r) => s2.bind(0, '127.0.0.1', r));
    s2.send(Buffer.concat([Buffer.alloc(8), eth(BCAST, '52:54:00:00:0e:01')]), b.vxlanPort, '127.0.0.2');
    await until('malformed counted', () => (b.vxlan?.malformed ?? 0) >= 1);
    s2.close();
    const f = eth(BCAST, '52:54:00:00:0a:01', 46, 0x99);
    a.ports.lab?.rx(f);
    await until('still works', () => b.ports.lab?.got.some((g) => g.equals(f)) ?? false);
  });

  test('frames for a VNI the link does not carry, and for VNI 0, are counted as unknown_vni drops, not as received', async () => {
    b.ports.lab?.got.splice(0);
    const before1 = b.overlay.view('a');
    // From a's address: VNI 0 (never a network) and VNI 999 (b has none), with the I flag.
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const send = (vni: number) =>
      new Promise<void>((r) => {
        const hdr = Buffer.alloc(8);
        hdr[0] = 0x08;
        hdr.writeUInt32BE(vni << 8, 4);
        s.send(Buffer.concat([hdr, eth(BCAST, '52:54:00:00:0e:02')]), b.vxlanPort, '127.0.0.2', () => r());
      });
    await send(0);
    await send(999);
    await until('two unknown_vni drops', () => b.overlay.view('a').drops.unknown_vni >= before1.drops.unknown_vni + 2);
    s.close();
    const after1 = b.overlay.view('a');
    assert.equal(after1.drops.unknown_vni, before1.drops.unknown_vni + 2);
    assert.equal(after1.rx_frames, before1.rx_frames);
    assert.equal(after1.rx_bytes, before1.rx_bytes);
    assert.equal(b.ports.lab?.got.length, 0);
  });
});

/** An IPv4/TCP frame 10.0.0.1:sport -> 10.0.0.2:80 with `pay` payload bytes of `fill`. */
function tcpFrame(sport: number, pay = 6, fill = 0): Buffer {
  const b = Buffer.alloc(54 + pay, fill);
  Buffer.from('ffffffffffff5254000000010800', 'hex').copy(b, 0);
  Buffer.from('4500002800004000400600000a0000010a000002', 'hex').copy(b, 14);
  b.writeUInt16BE(20 + 20 + pay, 16);
  b.writeUInt16BE(sport, 34);
  b.writeUInt16BE(80, 36);
  b.writeUInt8(0x50, 46);
  return b;
}

/** A UDP port that was free a moment ago on `host`. */
async function freePort(host: string): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** A plain UDP socket standing in for a VTEP: records each datagram's source port and the inner TCP source port. */
async function fakeVtep(host: string): Promise<{ sock: Socket; port: number; seen: { src: number; flow: number }[] }> {
  const sock = createSocket('udp4');
  const seen: { src: number; flow: number }[] = [];
  sock.on('message', (m, r) => seen.push({ src: r.port, flow: m.length >= 8 + 38 ? m.readUInt16BE(8 + 34) : -1 }));
  await new Promise<void>((r) => sock.bind(0, host, r));
  return { sock, port: sock.address().port, seen };
}

describe('VXLAN source ports (RFC 7348 §5)', { timeout: 30_000 }, () => {
  const nets = [{ name: 'lab', vni: 100, mtu: 1450 }];
  const hosts: RigHost[] = [];
  const socks: Socket[] = [];
  after(async () => {
    for (const h of hosts) await h.stop();
    for (const s of socks) s.close();
  });

  test('each inner flow keeps one source port in 49152-65535, and flows spread over several', async () => {
    const a = await rigHost({ id: 'a', networks: nets, listen: false, vxlan: { host: '127.0.0.1' } });
    hosts.push(a);
    const v = await fakeVtep('127.0.0.5');
    socks.push(v.sock);
    a.overlay.add({ name: 'v', connect: { host: '127.0.0.5', port: v.port }, transport: 'vxlan' }, 'config');
    await until('up', () => a.overlay.view('v').state === 'up');
    for (let round = 0; round < 3; round++) for (let p = 1000; p < 1032; p++) a.ports.lab?.rx(tcpFrame(p));
    await until('all 96 at the VTEP', () => v.seen.length >= 96);
    const byFlow = new Map<number, Set<number>>();
    for (const { src, flow } of v.seen) byFlow.set(flow, (byFlow.get(flow) ?? new Set()).add(src));
    assert.equal(byFlow.size, 32);
    for (const [flow, ports] of byFlow) assert.equal(ports.size, 1, `flow ${flow} used ${[...ports]}`);
    const all = new Set(v.seen.map((x) => x.src));
    assert.ok(all.size > 1, 'several source ports');
    for (const p of all) assert.ok(p >= 49152 && p <= 65535, `source port ${p}`);
    assert.deepEqual(new Set(a.vxlan?.offloads.sourcePorts), all);
  });

  test('a one-port range sends from that port; the listening port itself sends from the listening socket', async () => {
    const p = await freePort('127.0.0.1');
    const a = await rigHost({
      id: 'a',
      networks: nets,
      listen: false,
      vxlan: { host: '127.0.0.1', sourcePorts: { min: p, max: p } },
    });
    hosts.push(a);
    const l = await freePort('127.0.0.2');
    const b = await rigHost({
      id: 'b',
      networks: nets,
      listen: false,
      vxlan: { host: '127.0.0.2', port: l, sourcePorts: { min: l, max: l } },
    });
    hosts.push(b);
    const v = await fakeVtep('127.0.0.6');
    socks.push(v.sock);
    a.overlay.add({ name: 'v', connect: { host: '127.0.0.6', port: v.port }, transport: 'vxlan' }, 'config');
    b.overlay.add({ name: 'v', connect: { host: '127.0.0.6', port: v.port }, transport: 'vxlan' }, 'config');
    await until('up', () => a.overlay.view('v').state === 'up' && b.overlay.view('v').state === 'up');
    a.ports.lab?.rx(tcpFrame(1));
    b.ports.lab?.rx(tcpFrame(2));
    await until('both at the VTEP', () => v.seen.length >= 2);
    assert.deepEqual(new Set(v.seen.map((x) => x.src)), new Set([p, l]));
    assert.deepEqual(b.vxlan?.offloads.sourcePorts, [l]);
  });
});

describe('VXLAN source ports in use', { timeout: 30_000 }, () => {
  test('a one-port range whose port is taken refuses to start with ERR_VXLAN_CONFIG', async () => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    try {
      const p = s.address().port;
      await assert.rejects(
        rigHost({
          id: 'a',
          networks: [{ name: 'lab', vni: 1 }],
          listen: false,
          vxlan: { host: '127.0.0.1', sourcePorts: { min: p, max: p } },
        }),
        (err: Error & { code?: string }) => err.code === 'ERR_VXLAN_CONFIG' && err.message.includes(`${p}-${p}`),
      );
    } finally {
      s.close();
    }
  });
});

describe('VXLAN bursts of one flow', { timeout: 30_000 }, () => {
  const nets = [{ name: 'lab', vni: 100, mtu: 1450 }];
  for (const offloads of [true, false]) {
    test(`arrive whole and in order ${offloads ? 'with UDP GSO and GRO where the kernel has them' : 'datagram by datagram with offloads off'}`, async () => {
      const a = await rigHost({ id: 'a', networks: nets, listen: false, vxlan: { host: '127.0.0.1', offloads } });
      const b = await rigHost({ id: 'b', networks: nets, listen: false, vxlan: { host: '127.0.0.2', offloads } });
      try {
        a.overlay.add({ name: 'b', connect: { host: '127.0.0.2', port: b.vxlanPort }, transport: 'vxlan' }, 'config');
        b.overlay.add({ name: 'a', connect: { host: '127.0.0.1', port: a.vxlanPort }, transport: 'vxlan' }, 'config');
        await until('up', () => a.overlay.view('b').state === 'up' && b.overlay.view('a').state === 'up');
        // A cut 64 KB segment: 45 frames of 1450 bytes and a shorter last one, all in one event-loop turn.
        const frames: Buffer[] = [];
        for (let i = 0; i < 45; i++) frames.push(tcpFrame(5000, 1450 - 54, i));
        frames.push(tcpFrame(5000, 300, 45));
        for (const f of frames) a.ports.lab?.rx(f);
        await until('all at b', () => (b.ports.lab?.got.length ?? 0) >= frames.length);
        assert.deepEqual(b.ports.lab?.got, frames);
        const tx = a.vxlan?.counters;
        const rx = b.vxlan?.counters;
        const o = a.vxlan?.offloads;
        assert.equal(tx?.datagrams, frames.length);
        assert.equal(rx?.rxDatagrams, frames.length);
        if (!offloads) {
          assert.deepEqual([o?.gso, b.vxlan?.offloads.gro], [false, false]);
          assert.equal(rx?.rxBuffers, frames.length, 'one buffer per datagram');
        } else if (o?.gso && b.vxlan?.offloads.gro) {
          assert.ok(
            (rx?.rxBuffers ?? 0) < frames.length,
            `GRO: ${rx?.rxBuffers} buffers for ${frames.length} datagrams`,
          );
        }
      } finally {
        await a.stop();
        await b.stop();
      }
    });
  }
});

describe('VXLAN over an IPv6 underlay', { timeout: 30_000 }, () => {
  test('carries frames both ways between two hosts on ::1, senders matched by their IPv6 address', async () => {
    const nets = [{ name: 'lab', vni: 300, mtu: 1400 }];
    const a = await rigHost({ id: 'a', networks: nets, listen: false, vxlan: { host: '::1' } });
    const b = await rigHost({ id: 'b', networks: nets, listen: false, vxlan: { host: '::1' } });
    try {
      a.overlay.add({ name: 'b', connect: { host: '::1', port: b.vxlanPort }, transport: 'vxlan' }, 'config');
      b.overlay.add({ name: 'a', connect: { host: '::1', port: a.vxlanPort }, transport: 'vxlan' }, 'config');
      await until('up', () => a.overlay.view('b').state === 'up' && b.overlay.view('a').state === 'up');
      const f = eth(BCAST, '52:54:00:00:06:01', 100, 0x61);
      a.ports.lab?.rx(f);
      await until('at b', () => (b.ports.lab?.got.length ?? 0) >= 1);
      assert.deepEqual(b.ports.lab?.got, [f]);
      const g = eth('52:54:00:00:06:01', '52:54:00:00:06:02', 60, 0x62);
      b.ports.lab?.rx(g);
      await until('at a', () => (a.ports.lab?.got.length ?? 0) >= 1);
      assert.deepEqual(a.ports.lab?.got, [g]);
      assert.equal(b.vxlan?.unknownSource, 0);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
