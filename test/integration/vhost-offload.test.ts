/**
 * Checksum and TSO offloads on vhost-user ports, in a real daemon driven by
 * the test front-end over the real socket: a large TCP segment from one
 * guest reaches another guest whole (header fields intact, mergeable
 * buffers), and a stream port and a guest without offloads cut and
 * checksummed; headers that use offloads not negotiated, or point outside
 * the frame, are dropped and counted while the guest stays attached. A UDP
 * large segment from a vnet_hdr TAP is cut for a guest that has no USO.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { PortView } from '../../src/api/client.js';
import { F } from '../../src/net/vhost/constants.js';
import { OFFLOAD_FEATURES, OffF } from '../../src/net/vhost/net-offload.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import { prng } from '../helpers/prng.js';
import { DEFAULT_FEATURES, TestFrontend } from '../helpers/vhost-frontend.js';

const MAC_A = '020000000a01';
const MAC_B = '020000000b02';
const MAC_N = '020000000c03';
const MAC_S = '020000000d04';
const MSS = 1448;
const PAYLOAD = 20_000;

/** A TCP/IPv4 frame dst <- src carrying `payload`; the TCP checksum field holds the pseudo-header sum (NEEDS_CSUM). */
function tcpFrame(dst: string, src: string, payload: Buffer): Buffer {
  const f = Buffer.alloc(54 + payload.length);
  Buffer.from(dst, 'hex').copy(f, 0);
  Buffer.from(src, 'hex').copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  const ip = Buffer.from('4500000000014000400600000a0000010a000002', 'hex');
  ip.writeUInt16BE(40 + payload.length, 2);
  ip.copy(f, 14);
  f.writeUInt16BE(onesComplement(sum(f.subarray(14, 34))), 24);
  const tcp = Buffer.from('9c401389000003e8010203045018ffff00000000', 'hex');
  tcp.copy(f, 34);
  payload.copy(f, 54);
  // NEEDS_CSUM: the field holds the folded pseudo-header sum, not complemented (as Linux leaves it).
  f.writeUInt16BE(
    sum(
      Buffer.concat([
        f.subarray(26, 34),
        Buffer.from([0, 6, (20 + payload.length) >> 8, (20 + payload.length) & 0xff]),
      ]),
    ),
    50,
  );
  return f;
}

function sum(b: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i < b.length; i += 2) s += (b[i] as number) * 256 + (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}
const onesComplement = (s: number): number => ~s & 0xffff;

/** Asserts a cut segment's IPv4 and TCP checksums, independently of src/net/offload. */
function assertChecksums(f: Buffer): void {
  assert.equal(sum(f.subarray(14, 34)), 0xffff, 'IPv4 header checksum');
  const l4 = f.length - 34;
  const pseudo = Buffer.concat([f.subarray(26, 34), Buffer.from([0, 6, l4 >> 8, l4 & 0xff])]);
  assert.equal(sum(Buffer.concat([pseudo, f.subarray(34)])), 0xffff, 'TCP checksum');
}

/** A virtio_net_hdr (10 bytes): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset. */
function hdr(flags: number, gsoType: number, gsoSize: number, csumStart = 34, csumOffset = 16): Buffer {
  const h = Buffer.alloc(10);
  h[0] = flags;
  h[1] = gsoType;
  h.writeUInt16LE(54, 2);
  h.writeUInt16LE(gsoSize, 4);
  h.writeUInt16LE(csumStart, 6);
  h.writeUInt16LE(csumOffset, 8);
  return h;
}

/** The vhost-user port's own offload counters (`transport.offload_frames` of `port show`). */
function offloadFrames(p: PortView | undefined): Record<string, number> {
  return (p as PortView).transport.offload_frames as Record<string, number>;
}

const OFFLOADS = DEFAULT_FEATURES + OFFLOAD_FEATURES;

describe('vhost-user offloads', { timeout: 120_000 }, () => {
  let daemon: TestDaemon;
  const fronts: TestFrontend[] = [];
  let stream: Socket | undefined;
  const streamGot: Buffer[] = [];
  let a: TestFrontend;
  let b: TestFrontend;
  let n: TestFrontend;

  const attach = async (port: string, opts: ConstructorParameters<typeof TestFrontend>[1] = {}) => {
    const f = new TestFrontend(daemon.path(`${port}.sock`), opts);
    fronts.push(f);
    await f.setup(opts);
    return f;
  };
  const port = async (name: string) => (await daemon.json<{ port: PortView }>(['port', 'show', name])).port;
  const waitStream = async (count: number) => {
    for (let i = 0; i < 500 && streamGot.length < count; i++) await new Promise((r) => setTimeout(r, 10));
    return streamGot.splice(0, streamGot.length);
  };

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) => [
        { name: 'va', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/va.sock` },
        { name: 'vb', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vb.sock` },
        { name: 'vn', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vn.sock` },
        { name: 'st', network: 'lab', kind: 'stream', listen: `unix:${dir}/st.sock` },
      ],
    });
    // The sender: buffers large enough for a whole large segment.
    a = await attach('va', { features: OFFLOADS, queueSize: 64, bufSize: 70_000 });
    // A receiver with offloads and 4 KiB mergeable buffers: a large segment spans several.
    b = await attach('vb', { features: OFFLOADS + 2 ** F.NET_MRG_RXBUF, bufSize: 4096 });
    // A guest without offloads (and without CSUM: it may not send NEEDS_CSUM).
    n = await attach('vn', { features: DEFAULT_FEATURES + 2 ** F.NET_MRG_RXBUF, bufSize: 4096 });
    stream = connect(daemon.path('st.sock'));
    await new Promise<void>((resolve, reject) => stream?.once('connect', resolve).once('error', reject));
    let acc = Buffer.alloc(0);
    stream.on('data', (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      while (acc.length >= 4 && acc.length >= 4 + acc.readUInt32BE(0)) {
        streamGot.push(acc.subarray(4, 4 + acc.readUInt32BE(0)));
        acc = acc.subarray(4 + acc.readUInt32BE(0));
      }
    });
    // Teach the switch every MAC, then forget those frames.
    b.sendFrame(tcpFrame(MAC_A, MAC_B, Buffer.alloc(10)));
    n.sendFrame(tcpFrame(MAC_A, MAC_N, Buffer.alloc(10)));
    const h = Buffer.alloc(4);
    const s = tcpFrame(MAC_A, MAC_S, Buffer.alloc(10));
    h.writeUInt32BE(s.length);
    stream.write(Buffer.concat([h, s]));
    assert.equal((await a.waitFrames(3)).length, 3);
    // MAC_A was unknown: those three were flooded to the others too.
    assert.equal((await b.waitFrames(2)).length, 2);
    assert.equal((await n.waitFrames(2)).length, 2);
    assert.equal((await waitStream(2)).length, 2);
  });

  after(async () => {
    for (const f of fronts) f.close();
    stream?.destroy();
    await daemon?.cleanup();
  });

  test('negotiates CSUM, GUEST_CSUM, TSO4/6 and ECN both ways; a guest without them takes no offloads', async () => {
    const va = (await port('va')).transport;
    assert.equal(va.offloads, 'csum,tso4,tso6,ecn,guest_csum,guest_tso4,guest_tso6,guest_ecn');
    const feats = BigInt(String(va.features));
    for (const bit of Object.values(OffF)) assert.ok(feats & (1n << BigInt(bit)), `feature bit ${bit} negotiated`);
    assert.equal((await port('vn')).transport.offloads, 'off');
  });

  test('a large TCP segment reaches an offloading guest whole and is cut and checksummed for the others', async () => {
    const payload = Buffer.alloc(PAYLOAD);
    for (let i = 0; i < PAYLOAD; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
    const big = tcpFrame('ffffffffffff', MAC_A, payload); // broadcast: one frame to every port
    a.sendFrame(big, undefined, 0, hdr(1, 1, MSS));
    const atB = await b.waitFrames(1);
    assert.equal(atB.length, 1, 'one frame at the offloading guest');
    assert.deepEqual(atB[0], big, 'the frame arrives byte for byte');
    const h = b.rxHeaders.at(-1) as Buffer;
    assert.equal(h[0], 1, 'NEEDS_CSUM');
    assert.equal(h[1], 1, 'gso_type TCPV4');
    assert.equal(h.readUInt16LE(4), MSS, 'gso_size');
    assert.equal(h.readUInt16LE(6), 34, 'csum_start');
    assert.equal(h.readUInt16LE(8), 16, 'csum_offset');
    assert.equal(h.readUInt16LE(10), Math.ceil((12 + big.length) / 4096), 'num_buffers: mergeable 4 KiB buffers');

    const segs = Math.ceil(PAYLOAD / MSS);
    for (const got of [await n.waitFrames(segs), await waitStream(segs)]) {
      assert.equal(got.length, segs, 'cut into gso_size segments');
      for (const f of got) {
        assert.ok(f.length <= 54 + MSS);
        assertChecksums(f);
      }
      assert.deepEqual(Buffer.concat(got.map((f) => f.subarray(54))), payload, 'the payload in order');
    }
    for (const h of n.rxHeaders)
      assert.equal(h.readUInt32LE(0) | h.readUInt16LE(4), 0, 'plain headers without offloads');

    const [va, vb, vn, st] = await Promise.all(['va', 'vb', 'vn', 'st'].map(port));
    assert.equal(va?.counters.offload?.rx_gso, 1);
    assert.equal(vb?.counters.offload?.tx_gso, 1, 'passed whole');
    assert.equal(vn?.counters.offload?.tx_segmented, 1);
    assert.equal(st?.counters.offload?.tx_segmented, 1);
    assert.equal(offloadFrames(vb).rx_gso, 1, 'the guest received one large segment');
    assert.equal(offloadFrames(va).tx_gso, 1, 'the guest sent one large segment');
  });

  test('a checksum-only frame keeps NEEDS_CSUM for an offloading guest and is completed for a stream port', async () => {
    const f = tcpFrame('ffffffffffff', MAC_A, Buffer.from('hello, partial checksum'));
    a.sendFrame(f, 40, 0, hdr(1, 0, 0)); // header and frame in two descriptors, split inside the frame
    const [atB] = await b.waitFrames(1);
    assert.deepEqual(atB, f);
    assert.equal(b.rxHeaders.at(-1)?.[0], 1);
    assert.equal(b.rxHeaders.at(-1)?.[1], 0);
    const [atS] = await waitStream(1);
    assert.ok(atS);
    assertChecksums(atS);
    await n.waitFrames(1);
  });

  test('drops and counts headers with offloads not negotiated or pointing outside the frame; the guest stays', async () => {
    const before = await Promise.all(['va', 'vn'].map(port));
    const f = tcpFrame(MAC_B, MAC_A, Buffer.alloc(3000, 9));
    a.sendFrame(f, undefined, 0, hdr(1, 3, MSS)); // UFO: not offered
    a.sendFrame(f, undefined, 0, hdr(1, 5, MSS)); // USO: not offered
    a.sendFrame(f, undefined, 0, hdr(1, 1, MSS, 9000)); // csum_start beyond the frame
    a.sendFrame(f, undefined, 0, hdr(1, 0, 0, 9000)); // the same, checksum only
    a.sendFrame(f, undefined, 0, hdr(1, 1, 0)); // gso_size 0: refused by the switch's checks
    n.sendFrame(tcpFrame(MAC_B, MAC_N, Buffer.alloc(100)), undefined, 0, hdr(1, 0, 0)); // NEEDS_CSUM without CSUM
    n.sendFrame(f, undefined, 0, hdr(1, 1, MSS)); // TSO without HOST_TSO4
    const ok = tcpFrame(MAC_B, MAC_A, Buffer.from('still here'));
    a.sendFrame(ok);
    const got = await b.waitFrames(1);
    assert.deepEqual(got, [ok], 'only the good frame arrives');
    const [va, vn] = await Promise.all(['va', 'vn'].map(port));
    const bad = offloadFrames;
    assert.equal(
      (bad(va).bad_headers as number) - (bad(before[0]).bad_headers as number),
      4,
      'UFO, USO and two csum_start on va',
    );
    assert.equal(
      (bad(vn).bad_headers as number) - (bad(before[1]).bad_headers as number),
      2,
      'NEEDS_CSUM and TSO on vn',
    );
    assert.equal((va?.counters.drops.offload ?? 0) - (before[0]?.counters.drops.offload ?? 0), 1, 'gso_size 0 on va');
    assert.equal(va?.state, 'up');
    assert.equal(vn?.state, 'up');
  });

  test('seeded fuzz of transmitted headers: every frame is delivered or counted, and no guest is disconnected', async () => {
    const rnd = prng(5);
    const f = tcpFrame(MAC_B, MAC_A, Buffer.alloc(4000, 3));
    const before = await port('va');
    let sent = 0;
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 24; i++) {
        const h = Buffer.alloc(10);
        for (let k = 0; k < 10; k++) h[k] = Math.floor(rnd() * 256);
        if (rnd() < 0.5) h[1] = [0, 1, 4, 0x81, 3, 5][Math.floor(rnd() * 6)] as number;
        if (rnd() < 0.5) h.writeUInt16LE(Math.floor(rnd() * 200), 6);
        a.sendFrame(f, undefined, 0, h);
        sent++;
      }
      await b.waitFrames(1000, 200);
    }
    const ok = tcpFrame(MAC_B, MAC_A, Buffer.from('after the fuzz'));
    a.sendFrame(ok);
    const got = await b.waitFrames(1);
    assert.deepEqual(got.at(-1), ok);
    const va = await port('va');
    assert.equal(va.state, 'up');
    assert.equal((va.transport as { sessions: number }).sessions, 1, 'never re-attached');
    const rx = va.counters.rx_frames - before.counters.rx_frames;
    const badHdr = (offloadFrames(va).bad_headers as number) - (offloadFrames(before).bad_headers as number);
    assert.equal(rx + badHdr, sent + 1, 'each frame reached the switch or was counted as a bad header');
  });
});

/** One UDP send of `total` bytes that Linux cuts into `seg`-byte datagrams (UDP_SEGMENT, socket option 103). */
const USO_SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, int(sys.argv[3]))
s.sendto(bytes(i % 251 for i in range(int(sys.argv[2]))), (sys.argv[1], 9999))
`;

describe('vhost-user offloads: a UDP large segment from a vnet_hdr TAP', { timeout: 120_000 }, () => {
  let daemon: TestDaemon;
  let ns: Netns | undefined;
  let u: TestFrontend | undefined;
  const ifname = uniqueIfname('vhu');

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) => [
        { name: 'vu', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vu.sock` },
        { name: 'tp', network: 'lab', kind: 'tap', ifname, vnet_hdr: true },
      ],
    });
    ns = await Netns.create('vhuso');
    await ns.adopt(ifname, '10.0.5.1/24');
    for (const f of ['tx', 'sg', 'tso', 'gso', 'tx-udp-segmentation'])
      await ns.exec('ethtool', '-K', ifname, f, 'on').catch(() => undefined);
    await ns.ip('neigh', 'add', '10.0.5.2', 'lladdr', '02:00:00:00:0b:02', 'dev', ifname);
    u = new TestFrontend(daemon.path('vu.sock'), { bufSize: 4096 });
    await u.setup({ features: OFFLOADS + 2 ** F.NET_MRG_RXBUF });
  });

  after(async () => {
    u?.close();
    await ns?.delete();
    await daemon?.cleanup();
  });

  test('is cut into datagrams with good checksums in the port, since the guest took no USO', async (t) => {
    const { stdout } = await (ns as Netns).exec('ethtool', '-k', ifname);
    if (!/tx-udp-segmentation: on/.test(stdout)) {
      t.skip('this kernel gives the TAP no USO (Linux 6.2+): it segments UDP GSO itself');
      return;
    }
    const f = u as TestFrontend;
    f.sendFrame(tcpFrame('ffffffffffff', MAC_B, Buffer.alloc(10))); // the switch learns the guest's MAC
    await (ns as Netns).exec('python3', '-c', USO_SEND, '10.0.5.2', '14000', '1400'); // throws if it fails
    // The namespace's own IPv6 neighbour discovery may arrive too: keep the UDP/IPv4 frames.
    const isUdp = (d: Buffer) => d.readUInt16BE(12) === 0x0800 && d[23] === 17;
    const got: Buffer[] = [];
    for (let i = 0; i < 50 && got.length < 10; i++) got.push(...(await f.waitFrames(1, 100)).filter(isUdp));
    assert.equal(got.length, 10, 'ten datagrams');
    const data: Buffer[] = [];
    for (const d of got) {
      assert.equal(sum(d.subarray(14, 34)), 0xffff, 'IPv4 header checksum');
      const l4 = d.length - 34;
      const pseudo = Buffer.concat([d.subarray(26, 34), Buffer.from([0, 17, l4 >> 8, l4 & 0xff])]);
      assert.equal(sum(Buffer.concat([pseudo, d.subarray(34)])), 0xffff, 'UDP checksum');
      data.push(d.subarray(42));
    }
    for (const h of f.rxHeaders) assert.equal(h[1], 0, 'no gso_type given to the guest');
    const want = Buffer.alloc(14000);
    for (let i = 0; i < want.length; i++) want[i] = i % 251;
    assert.deepEqual(Buffer.concat(data), want);
    const { port } = await daemon.json<{ port: PortView }>(['port', 'show', 'vu']);
    assert.equal(port.counters.offload?.tx_gso, 1, 'the switch handed the port the large segment');
    assert.equal(offloadFrames(port).segmented_here, 1, 'the port cut it');
  });
});
