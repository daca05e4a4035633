/**
 * Backpressure through the Port contract from ports that are not guests: a
 * stream port and a TAP port sending into a vhost-user guest whose receive
 * ring is full are held (the stream socket and the TAP are not read) instead
 * of losing frames, up to the receiver's hold_ms; past it the receiver drops
 * and counts the drops by reason. A real daemon, a real unix socket peer, a
 * real TAP in a namespace made by the test, and a test vhost-user front-end
 * that withholds its receive buffers.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { TestFrontend } from '../helpers/vhost-frontend.js';

const MAC_R = '020000002b01';
const MAC_Z = '020000002b02';
const MAC_S = '020000002b03';
const MAC_T = '020000002b04';
const ETHERTYPE = 0x88b5;
const LEN = 1000;

function frame(dst: string, src: string, n: number): Buffer {
  const f = Buffer.alloc(LEN, n & 0xff);
  Buffer.from(dst, 'hex').copy(f, 0);
  Buffer.from(src, 'hex').copy(f, 6);
  f.writeUInt16BE(ETHERTYPE, 12);
  f.writeUInt32BE(n, 14);
  return f;
}

/** The stream wire format: a 4-byte big-endian length, then the frame. */
function framed(frames: Buffer[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => [Buffer.from([0, 0, f.length >> 8, f.length & 0xff]), f]));
}

/** Sends raw frames out of `ifname` (AF_PACKET): numbered frames [from, from+count) to argv[2] from argv[3]. */
const RAW_SEND = `
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
dst, src = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
start, count, length = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
for n in range(start, start + count):
    head = dst + src + struct.pack('>HI', 0x88b5, n)
    s.send(head + bytes([n & 0xff]) * (length - len(head)))
`;

interface View {
  counters: { rx_frames: number; drops: { queue_full: number } };
  transport: { read_holds?: number; read_held?: boolean; rx_dropped?: number; tx_pauses?: number };
}

const ours = (fs: Buffer[]): Buffer[] => fs.filter((f) => f.readUInt16BE(12) === ETHERTYPE);

describe('backpressure from stream and TAP ports into a full vhost-user guest', { timeout: 180_000 }, () => {
  let daemon: TestDaemon;
  let r: TestFrontend;
  let z: TestFrontend;
  let peer: Socket;
  let ns: Netns | undefined;
  const ifname = uniqueIfname('vbp');
  const root = process.getuid?.() === 0;

  const show = async (port: string): Promise<View> => (await daemon.json<{ port: View }>(['port', 'show', port])).port;

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) => [
        // r waits as long as a test may take; z gives up after 200 ms. Both: 32 receive buffers, a backlog of 64.
        { name: 'r', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/r.sock`, queue_len: 64, hold_ms: 60_000 },
        { name: 'z', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/z.sock`, queue_len: 64, hold_ms: 200 },
        { name: 'st', network: 'lab', kind: 'stream', listen: `unix:${dir}/st.sock` },
        ...(root ? [{ name: 'tp', network: 'lab', kind: 'tap', ifname }] : []),
      ],
    });
    r = new TestFrontend(daemon.path('r.sock'), { queueSize: 32 });
    z = new TestFrontend(daemon.path('z.sock'), { queueSize: 32 });
    await r.setup();
    await z.setup();
    // Every receiver's MAC learned: nothing floods to it later.
    r.sendFrame(frame(MAC_S, MAC_R, 0));
    z.sendFrame(frame(MAC_S, MAC_Z, 0));
    peer = connect(daemon.path('st.sock'));
    peer.on('data', () => undefined);
    await new Promise<void>((resolve, reject) => peer.once('connect', resolve).once('error', reject));
    await untilAsync(
      'both guests heard',
      async () => (await show('r')).counters.rx_frames >= 1 && (await show('z')).counters.rx_frames >= 1,
    );
    // Before its MAC was learned, each guest's frame was flooded to the other: not part of the tests.
    r.receive();
    z.receive();
    if (root) {
      ns = await Netns.create('vbp');
      // No IPv6 (router solicitations, DAD) and no address: only the test's frames leave the TAP.
      await ns.exec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
      await ns.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
      await ns.adopt(ifname);
    }
  });

  after(async () => {
    peer?.destroy();
    r?.close();
    z?.close();
    await ns?.delete();
    await daemon?.cleanup();
  });

  test('a stream peer faster than a full guest is held: every frame arrives in order, none is dropped', async () => {
    const sent = Array.from({ length: 400 }, (_, i) => frame(MAC_R, MAC_S, 1 + i));
    peer.write(framed(sent));
    // 32 frames fill the ring and 64 the backlog: the rest arrive only if the stream is held.
    await untilAsync('the stream port is held', async () => (await show('st')).transport.read_held === true);
    const got = ours(await r.waitFrames(400, 20_000)).filter((f) => f.subarray(6, 12).toString('hex') === MAC_S);
    assert.deepEqual(
      got.map((f) => f.readUInt32BE(14)),
      sent.map((f) => f.readUInt32BE(14)),
    );
    assert.deepEqual(got, sent);
    const [vr, vs] = [await show('r'), await show('st')];
    assert.equal(vr.counters.drops.queue_full, 0);
    assert.equal(vr.transport.rx_dropped, 0);
    assert.ok((vs.transport.read_holds ?? 0) >= 1, 'the stream port was held');
    assert.equal(vs.transport.read_held, false);
  });

  test('a TAP faster than a full guest is held: every frame arrives in order, none is dropped', async (t) => {
    if (!root) {
      t.skip('needs root for the TAP and the namespace');
      return;
    }
    const before = await show('r');
    await (ns as Netns).exec('python3', '-c', RAW_SEND, ifname, MAC_R, MAC_T, '5000', '400', String(LEN));
    const got = ours(await r.waitFrames(400, 20_000)).filter((f) => f.subarray(6, 12).toString('hex') === MAC_T);
    assert.deepEqual(
      got.map((f) => f.readUInt32BE(14)),
      Array.from({ length: 400 }, (_, i) => 5000 + i),
    );
    const [vr, vt] = [await show('r'), await show('tp')];
    assert.equal(vr.counters.drops.queue_full, before.counters.drops.queue_full);
    assert.equal(vr.transport.rx_dropped, 0);
    assert.ok((vt.transport.read_holds ?? 0) >= 1, 'the TAP port was held');
    assert.equal(vt.transport.read_held, false);
  });

  test('past the receiver hold_ms the stream goes on and the receiver drops, counted as queue_full', async () => {
    const before = await show('z');
    const sent = Array.from({ length: 300 }, (_, i) => frame(MAC_Z, MAC_S, 10_000 + i));
    peer.write(framed(sent));
    // z never reads: 200 ms after its ring filled it lets the stream go, and drops what its backlog cannot hold.
    const dropped = async () => (await show('z')).counters.drops.queue_full - before.counters.drops.queue_full;
    await untilAsync(
      'the receiver dropped what it could not hold',
      async () => (await dropped()) >= 300 - 32 - 64,
      20_000,
    );
    assert.equal(await dropped(), 300 - 32 - 64, 'drops: all but what the ring (32) and the backlog (64) hold');
    const [vz, vs] = [await show('z'), await show('st')];
    assert.equal(vs.transport.read_held, false);
    assert.ok((vs.transport.read_holds ?? 0) >= 2, 'the stream was held before z gave up');
    assert.equal(vz.transport.rx_dropped, 0, 'every drop is counted once, at the switch, by its reason');
    // What z's ring and backlog hold arrives in order once it reads.
    const got = ours(await z.waitFrames(96)).filter((f) => f.subarray(6, 12).toString('hex') === MAC_S);
    assert.deepEqual(got, sent.slice(0, 96));
  });
});
