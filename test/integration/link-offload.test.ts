/**
 * Large segments across TCP links (offload records, docs/overlay.md "Wire
 * format"): a TSO segment crosses whole and is cut only at a port that
 * cannot take it; an older peer (no `offloads` in its hello) only ever gets
 * plain frames; a garbled offload record closes that connection and the host
 * carries on. Real sockets on loopback, in-process switches.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { GSO_TCPV4, OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import {
  DecodeResult,
  encodeControl,
  HEADER_LEN,
  LinkDecoder,
  OFFLOAD_HLEN,
  TYPE_FRAME_OFFLOAD,
  writeHeader,
  writeOffloadHeader,
} from '../../src/net/overlay/codec.js';
import { MetaPort } from '../helpers/meta-port.js';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';
import { prng } from '../helpers/prng.js';

function addMetaPort(h: RigHost, name: string, network: string, offloads: boolean): MetaPort {
  let p: MetaPort | undefined;
  h.sw.addPort(name, { network }, (sink) => {
    p = new MetaPort(name, offloads, sink);
    return p;
  });
  return p as MetaPort;
}

// The TCP/IPv4 fixture of offload.test.ts: 20 payload bytes, cut at gso_size 8 into these three frames.
const TCP4_IN =
  '52540000000252540000000108004500003c12344000400614860a0000010a0000029c401389000003e80102030450990200dead00004142434445464748494a4b4c4d4e4f5051525354';
const TCP4_SEGS = [
  '52540000000252540000000108004500003012344000400614920a0000010a0000029c401389000003e80102030450900200d07d00004142434445464748',
  '52540000000252540000000108004500003012354000400614910a0000010a0000029c401389000003f00102030450100200b0d50000494a4b4c4d4e4f50',
  '52540000000252540000000108004500002c12364000400614940a0000010a0000029c401389000003f801020304501902003d57000051525354',
];
const DST = '52:54:00:00:00:02';

function tso(gsoSize: number): OffloadMeta {
  return Object.assign(new OffloadMeta(), { flags: 1, gsoType: GSO_TCPV4, gsoSize, csumStart: 34, csumOffset: 16 });
}

/** A peer's hello, then its network list (one part). */
function hello(host: string, extra: object = {}): Buffer {
  return Buffer.concat([
    encodeControl({ type: 'hello', proto: 'vmlink-link', version: 2, host, ...extra }),
    encodeControl({ type: 'networks', part: 0, last: true, networks: [{ vni: 100, name: 'lab' }] }),
  ]);
}

/** A raw link peer on a socket: records (type, body hex) it receives, after the host's hello. */
async function rawPeer(port: number, helloRec: Buffer): Promise<{ s: Socket; recs: { type: number; hex: string }[] }> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  const recs: { type: number; hex: string }[] = [];
  const d = new LinkDecoder({
    frame: (_vni, buf, off, len, meta) => recs.push({ type: meta ? 3 : 1, hex: buf.toString('hex', off, off + len) }),
    control: () => undefined,
  });
  s.on('data', (c: Buffer) => assert.equal(d.push(c), DecodeResult.OK));
  s.write(helloRec);
  return { s, recs };
}

describe('large segments across TCP links', { timeout: 60_000 }, () => {
  let a: RigHost;
  let b: RigHost;
  let src: MetaPort;
  let srcB: MetaPort;
  let tapB: MetaPort;
  let vmB: MetaPort;

  before(async () => {
    a = await rigHost({ id: 'a', listen: false, networks: [{ name: 'lab', vni: 100, mtu: 1500 }] });
    b = await rigHost({ id: 'b', networks: [{ name: 'lab', vni: 100, mtu: 1500 }] });
    src = addMetaPort(a, 'tap-a', 'lab', true);
    tapB = addMetaPort(b, 'tap-b', 'lab', true);
    vmB = addMetaPort(b, 'vm-b', 'lab', false);
    // What arrives on a link is not flooded to another link (split horizon): segments for raw peers start at b.
    srcB = addMetaPort(b, 'tap-src-b', 'lab', true);
    a.overlay.add({ name: 'to-b', connect: { host: '127.0.0.1', port: b.port } }, 'config');
    await until('link to-b up', () => a.overlay.view('to-b').state === 'up');
    await until('accepted link on b', () => b.overlay.list().some((l) => l.state === 'up'));
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('a TSO segment crosses the link whole and is cut only at the far port that takes no offloads', async () => {
    const f = Buffer.from(TCP4_IN, 'hex');
    src.sink(f, 0, f.length, tso(8));
    await until('segment at b', () => tapB.got.length >= 1 && vmB.got.length >= 3);
    assert.equal(tapB.got.length, 1);
    assert.equal(tapB.got[0]?.hex, TCP4_IN);
    const m = tapB.got[0]?.meta;
    assert.deepEqual([m?.flags, m?.gsoType, m?.gsoSize, m?.csumStart, m?.csumOffset], [1, GSO_TCPV4, 8, 34, 16]);
    assert.deepEqual(
      vmB.got.map((g) => g.hex),
      TCP4_SEGS,
    );
    assert.ok(vmB.got.every((g) => g.meta === undefined));
    // The rig's own port on lab (no offloads) got the segments too: flooded, unknown destination.
    assert.equal(b.ports.lab?.got.length, 3);
    const linkA = a.sw.ports().find((p) => p.name === 'link/to-b/lab');
    assert.deepEqual(linkA?.counterSnapshot().offload, { rx_gso: 0, tx_gso: 1, tx_segmented: 0, tx_csum: 0 });
    const linkB = b.sw.ports().find((p) => p.name.startsWith('link/a/'));
    assert.equal(linkB?.counterSnapshot().offload.rx_gso, 1);
    assert.equal(a.overlay.view('to-b').state, 'up');
    tapB.got.splice(0);
    vmB.got.splice(0);
    b.ports.lab?.got.splice(0);
  });

  test('a peer whose hello does not offer offloads only ever receives plain frames within the MTU', async () => {
    const old = await rawPeer(b.port, hello('old'));
    await until('old peer up on b', () => b.overlay.list().some((l) => l.peer === 'old' && l.state === 'up'));
    const f = Buffer.from(TCP4_IN, 'hex');
    srcB.sink(f, 0, f.length, tso(8));
    await until('segments at the old peer', () => old.recs.length >= 3);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(
      old.recs,
      TCP4_SEGS.map((hex) => ({ type: 1, hex })),
    );
    old.s.destroy();
    await until('old peer gone', () => !b.overlay.list().some((l) => l.peer === 'old'));
    tapB.got.splice(0);
    vmB.got.splice(0);
  });

  test('a peer that offers offloads gets the segment whole as an offload record', async () => {
    const peer = await rawPeer(b.port, hello('new', { offloads: true }));
    await until('new peer up on b', () => b.overlay.list().some((l) => l.peer === 'new' && l.state === 'up'));
    const f = Buffer.from(TCP4_IN, 'hex');
    srcB.sink(f, 0, f.length, tso(8));
    await until('segment at the new peer', () => peer.recs.length >= 1);
    assert.deepEqual(peer.recs, [{ type: 3, hex: TCP4_IN }]);
    peer.s.destroy();
    await until('new peer gone', () => !b.overlay.list().some((l) => l.peer === 'new'));
    tapB.got.splice(0);
    vmB.got.splice(0);
  });

  test('metadata that does not fit its frame is dropped and counted on the link port; the link stays up', async () => {
    const s = connect(b.port, '127.0.0.1');
    s.on('error', () => undefined);
    s.resume();
    await new Promise((r) => s.once('connect', r));
    s.write(hello('liar', { offloads: true }));
    await until('liar up on b', () => b.overlay.list().some((l) => l.peer === 'liar' && l.state === 'up'));
    const frame = eth(DST, '52:54:00:00:0c:01', 100);
    const m = tso(8);
    m.csumStart = 400; // beyond the frame
    const rec = Buffer.alloc(HEADER_LEN + OFFLOAD_HLEN + frame.length);
    writeHeader(rec, 0, OFFLOAD_HLEN + frame.length, TYPE_FRAME_OFFLOAD, 100);
    writeOffloadHeader(rec, HEADER_LEN, m);
    frame.copy(rec, HEADER_LEN + OFFLOAD_HLEN);
    s.write(rec);
    await until('offload drop counted', () =>
      b.sw.ports().some((p) => p.name.startsWith('link/liar/') && p.counterSnapshot().drops.offload > 0),
    );
    assert.ok(b.overlay.list().some((l) => l.peer === 'liar' && l.state === 'up'));
    assert.equal(vmB.got.length + tapB.got.length, 0);
    s.destroy();
    await until('liar gone', () => !b.overlay.list().some((l) => l.peer === 'liar'));
  });

  test('garbled offload records (seeded fuzz) close only their connection; the host and its link carry on', async () => {
    const rnd = prng(404);
    for (let i = 0; i < 30; i++) {
      const s = connect(b.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.resume();
      await new Promise((r) => s.once('connect', r));
      const body = Buffer.alloc(Math.floor(rnd() * 200));
      for (let j = 0; j < body.length; j++) body[j] = Math.floor(rnd() * 256);
      const rec = Buffer.alloc(HEADER_LEN + body.length);
      writeHeader(rec, 0, rnd() < 0.9 ? body.length : Math.floor(rnd() * 300), TYPE_FRAME_OFFLOAD, 100);
      body.copy(rec, HEADER_LEN);
      s.write(Buffer.concat([hello('fuzz', { offloads: rnd() < 0.5 }), rec]));
      await Promise.race([new Promise((r) => s.once('close', r)), new Promise((r) => setTimeout(r, 200))]);
      s.destroy();
    }
    await until('fuzz links gone', () => !b.overlay.list().some((l) => l.peer === 'fuzz'));
    assert.equal(a.overlay.view('to-b').state, 'up');
    // A bad offload header (flag bit 0x04) is refused: the host closes that connection.
    const s = connect(b.port, '127.0.0.1');
    s.on('error', () => undefined);
    s.resume();
    await new Promise((r) => s.once('connect', r));
    const bad = Buffer.alloc(HEADER_LEN + OFFLOAD_HLEN + 60);
    writeHeader(bad, 0, OFFLOAD_HLEN + 60, TYPE_FRAME_OFFLOAD, 100);
    bad[HEADER_LEN] = 0x04;
    const closed = new Promise((r) => s.once('close', r));
    s.write(Buffer.concat([hello('garbled', { offloads: true }), bad]));
    await closed;
    // And the good link still carries large segments whole.
    tapB.got.splice(0);
    const f = Buffer.from(TCP4_IN, 'hex');
    src.sink(f, 0, f.length, tso(8));
    await until('segment at b after fuzz', () => tapB.got.some((g) => g.hex === TCP4_IN && g.meta !== undefined));
  });
});
