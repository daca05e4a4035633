/**
 * Backpressure between co-resident guests, in a real daemon driven by test
 * front-ends over the control sockets: a sender whose frames all go to a
 * full vhost-user receiver is paused (its frames wait in its own transmit
 * ring, none is dropped), a sender that also sends elsewhere is not, and a
 * receiver that takes nothing for a while stops holding its senders.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { until, untilAsync } from '../helpers/overlay-rig.js';
import { TestFrontend } from '../helpers/vhost-frontend.js';

const MAC_S = '020000001a01';
const MAC_R = '020000001b02';
const MAC_Q = '020000001c03';
const MAC_Z = '020000001d04';

function frame(dst: string, src: string, n: number, len = 60): Buffer {
  const f = Buffer.alloc(len, n & 0xff);
  Buffer.from(dst, 'hex').copy(f, 0);
  Buffer.from(src, 'hex').copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  f.writeUInt32BE(n, 14);
  return f;
}

interface VhostView {
  transport: { tx_pauses: number; tx_paused?: boolean; rx_dropped: number };
  counters: { drops: { queue_full: number } };
}

describe('vhost-user backpressure', { timeout: 120_000 }, () => {
  let daemon: TestDaemon;
  const fronts = new Map<string, TestFrontend>();

  const attach = async (port: string, queueSize: number): Promise<TestFrontend> => {
    const f = new TestFrontend(daemon.path(`${port}.sock`), { queueSize });
    fronts.set(port, f);
    await f.setup();
    return f;
  };
  const show = async (port: string): Promise<VhostView> =>
    (await daemon.json<{ port: VhostView }>(['port', 'show', port])).port;
  /** Puts numbered frames from s into its transmit ring and kicks once: the daemon takes them in one go. */
  const send = (s: TestFrontend, from: number, count: number, dst: (i: number) => string): Buffer[] => {
    const sent: Buffer[] = [];
    for (let i = from; i < from + count; i++) {
      sent.push(frame(dst(i), MAC_S, i));
      s.sendFrame(sent.at(-1) as Buffer, undefined, 0, undefined, false);
    }
    s.kick(1);
    return sent;
  };
  const drained = (s: TestFrontend): boolean => s.txUsed() === s.rings[1]?.availIdx;

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) =>
        [
          ['s', 100],
          ['r', 60_000],
          ['q', 100],
          ['z', 50],
        ].map(([name, hold]) => ({
          name: name as string,
          network: 'lab',
          kind: 'vhost-user',
          listen: `unix:${dir}/${name}.sock`,
          queue_len: 64,
          hold_ms: hold as number,
        })),
    });
    const s = await attach('s', 512);
    // r and z: 32 receive buffers and a backlog of 64 frames; q: room for 256 frames.
    for (const [port, mac, size] of [
      ['r', MAC_R, 32],
      ['q', MAC_Q, 256],
      ['z', MAC_Z, 32],
    ] as const)
      (await attach(port, size)).sendFrame(frame(MAC_S, mac, 0)); // every MAC learned: nothing floods
    await s.waitFrames(3);
    // Before s was learned those frames were flooded to the other receivers too.
    for (const port of ['r', 'q', 'z']) fronts.get(port)?.receive();
  });

  after(async () => {
    for (const f of fronts.values()) f.close();
    await daemon?.cleanup();
  });

  test('a sender whose only receiver is full waits with its frames in its own ring; none is dropped, all arrive in order', async () => {
    const [s, r] = [fronts.get('s'), fronts.get('r')] as TestFrontend[] as [TestFrontend, TestFrontend];
    // 200 frames: 32 fit the ring and 64 the backlog; the rest fit only if the sender waits.
    const sent = send(s, 1, 200, () => MAC_R);
    await untilAsync('the sender paused', async () => (await show('s')).transport.tx_paused === true);
    assert.ok(!drained(s), 'frames wait in the sender ring');
    assert.ok((await show('s')).transport.tx_pauses >= 1);
    const got = await r.waitFrames(200, 10_000);
    assert.deepEqual(
      got.map((f) => f.readUInt32BE(14)),
      sent.map((f) => f.readUInt32BE(14)),
    );
    assert.deepEqual(got, sent);
    await until('every transmitted frame taken', () => drained(s));
    const [vs, vr] = [await show('s'), await show('r')];
    assert.equal(vr.counters.drops.queue_full, 0);
    assert.equal(vr.transport.rx_dropped, 0);
    assert.equal(vs.transport.tx_paused, false);
  });

  test('a sender that also sends to another port is not paused by a full receiver', async () => {
    const [s, r, q] = ['s', 'r', 'q'].map((n) => fronts.get(n)) as [TestFrontend, TestFrontend, TestFrontend];
    const pausesBefore = (await show('s')).transport.tx_pauses;
    // Alternately to r (not reading: 32 buffers, then a backlog of 64) and to q.
    const sent = send(s, 1000, 250, (i) => (i % 2 === 0 ? MAC_R : MAC_Q));
    await until('every transmitted frame taken', () => drained(s));
    const toQ = await q.waitFrames(125);
    assert.deepEqual(
      toQ,
      sent.filter((f) => f.readUInt32BE(14) % 2 === 1),
    );
    const [vs, vr] = [await show('s'), await show('r')];
    assert.equal(vs.transport.tx_pauses, pausesBefore);
    assert.equal(vr.counters.drops.queue_full, 125 - 32 - 64);
    const toR = await r.waitFrames(96);
    assert.deepEqual(toR, sent.filter((f) => f.readUInt32BE(14) % 2 === 0).slice(0, 96));
  });

  test('a receiver that takes nothing for its hold time lets its sender go on; the rest is dropped there', async () => {
    const [s, z] = [fronts.get('s'), fronts.get('z')] as TestFrontend[] as [TestFrontend, TestFrontend];
    const pausesBefore = (await show('s')).transport.tx_pauses;
    const sent = send(s, 2000, 200, () => MAC_Z);
    // z never reads: 50 ms after the pause it lets s go, and s's ring empties.
    await until('every transmitted frame taken', () => drained(s));
    const [vs, vz] = [await show('s'), await show('z')];
    assert.equal(vs.transport.tx_pauses, pausesBefore + 1);
    assert.equal(vs.transport.tx_paused, false);
    assert.equal(vz.counters.drops.queue_full, 200 - 32 - 64);
    // What z's ring and backlog hold arrives in order once it reads.
    assert.deepEqual(await z.waitFrames(96), sent.slice(0, 96));
  });

  test('the CLI sets hold_ms and queues, and names a bad value', async () => {
    const add = (...extra: string[]) =>
      daemon.cli([
        'port',
        'add',
        'h',
        '--kind',
        'vhost-user',
        '--network',
        'lab',
        '--listen',
        `unix:${daemon.path('h.sock')}`,
        ...extra,
      ]);
    const bad = await add('--hold-ms', '70000');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--hold-ms/);
    assert.match(bad.stderr, /60000/);
    const ok = await add('--hold-ms', '0', '--queues', '2');
    assert.equal(ok.code, 0, ok.stderr);
    const spec = (await daemon.json<{ port: { spec: { hold_ms: number; queues: number } } }>(['port', 'show', 'h']))
      .port.spec;
    assert.equal(spec.hold_ms, 0);
    assert.equal(spec.queues, 2);
    await daemon.cli(['port', 'delete', 'h']);
  });
});
