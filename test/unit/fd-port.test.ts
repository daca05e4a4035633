/**
 * FdPortCore, the base of the fd ports, on a real unix datagram socket pair:
 * its flush, its writable wait, its hold/release of reading, its shutdown.
 * The transport calls (FdIo) are the test's, so each case can steer them.
 */
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { after, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { native } from '../../src/native/index.js';
import { FrameArena } from '../../src/net/frame-arena.js';
import { type PortContext, type PortState, WriteResult } from '../../src/net/port.js';
import { destroyReason, type FdIo, FdPortCore, SEND_DROP_ALL } from '../../src/net/ports/fd-port.js';

const n = native();
const peers: number[] = [];
after(() => {
  for (const fd of peers) closeSync(fd);
});

interface Rig {
  core: FdPortCore;
  tx: FrameArena;
  states: string[];
  /** What each send() was asked to send (frames queued). */
  sends: number[];
  reads: number;
  /** The far end of the socket pair. */
  peer: number;
}

/** A core attached to one end of a socket pair; `send` decides what each FdIo.send returns (default: all sent). */
function rig(send?: (tx: FrameArena, call: number) => number): Rig {
  const states: string[] = [];
  const ctx: PortContext = {
    sink: () => {},
    onState: (state: PortState, reason: string) => states.push(`${state}: ${reason}`),
    logger: silentLogger(),
    maxFrameLen: 1514,
    queueLen: 8,
    onMalformed: () => {},
  };
  const tx = new FrameArena(8, 4096);
  const [fd, peer] = n.socketpair(n.SOCK_DGRAM);
  peers.push(peer);
  const r = { tx, states, sends: [] as number[], reads: 0, peer } as Rig;
  const rx = Buffer.alloc(2048);
  const lens = new Uint32Array(8);
  const io: FdIo = {
    read: () => {
      r.reads++;
      n.recvBatch(fd, rx, 2048, lens, null);
    },
    send: (q) => {
      r.sends.push(q.queued);
      return send ? send(q, r.sends.length) : q.count;
    },
    pollError: () => {},
  };
  r.core = new FdPortCore(ctx, tx, io);
  r.core.attach(n, fd);
  r.core.setState('up', 'attached');
  return r;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const f60 = Buffer.alloc(60, 7);

/** Sends one datagram from the far end to the core's fd. */
function fromPeer(r: Rig): void {
  n.sendBatch(r.peer, f60, new Uint32Array([0]), new Uint32Array([60]), 0, 1, null);
}

test('queues written frames and sends them in one batch at the end of the event-loop turn', async (t) => {
  const r = rig();
  t.after(() => r.core.teardown('closed'));
  for (let i = 0; i < 3; i++) assert.equal(r.core.write(f60, 0, 60), WriteResult.OK);
  assert.equal(r.core.queued, 3);
  await turn();
  assert.deepEqual(r.sends, [3]);
  assert.equal(r.core.queued, 0);
  assert.deepEqual([r.core.txFrames, r.core.txBatches], [3, 1]);
});

test('refuses frames beyond the queue bound with QUEUE_FULL and any frame once closing with DOWN', async () => {
  const r = rig();
  for (let i = 0; i < 8; i++) assert.equal(r.core.write(f60, 0, 60), WriteResult.OK);
  assert.equal(r.core.write(f60, 0, 60), WriteResult.QUEUE_FULL);
  const closing = r.core.close();
  assert.equal(r.core.write(f60, 0, 60), WriteResult.DOWN);
  await closing;
  assert.deepEqual(r.sends, [8], 'close() flushed the queue');
});

test('skips and counts a frame whose send fails, and drops everything on SEND_DROP_ALL', async (t) => {
  const r = rig((tx, call) => {
    if (call === 1) throw new Error('EMSGSIZE');
    return call === 2 ? tx.head + 1 : SEND_DROP_ALL;
  });
  t.after(() => r.core.teardown('closed'));
  for (let i = 0; i < 4; i++) r.core.write(f60, 0, 60);
  await turn();
  // Call 1 threw (frame 0 skipped), call 2 sent frame 1, call 3 dropped frames 2 and 3.
  assert.deepEqual(r.sends, [4, 3, 2]);
  assert.equal(r.core.sendErrors, 1);
  assert.equal(r.core.lastError, 'EMSGSIZE');
  assert.equal(r.core.queued, 0);
  assert.equal(r.core.txFrames, 1);
});

test('when the transport would block, keeps the rest queued and sends it on POLLOUT', async (t) => {
  const r = rig((tx, call) => (call === 1 ? tx.head + 1 : call === 2 ? tx.head : tx.count));
  t.after(() => r.core.teardown('closed'));
  for (let i = 0; i < 3; i++) r.core.write(f60, 0, 60);
  await turn();
  assert.deepEqual(r.sends, [3, 2]);
  assert.equal(r.core.waitingWritable, true);
  // While waiting, a write queues but schedules nothing: POLLOUT will flush.
  assert.equal(r.core.write(f60, 0, 60), WriteResult.OK);
  // The socket is writable: the watcher reports it and the flush sends the rest.
  while (r.core.queued > 0) await turn();
  assert.deepEqual(r.sends, [3, 2, 3]);
  assert.equal(r.core.waitingWritable, false);
});

test('hold() stops reading until release(), and a datagram that arrived meanwhile is read after it', async (t) => {
  const r = rig();
  t.after(() => r.core.teardown('closed'));
  r.core.hold();
  r.core.hold();
  assert.equal(r.core.held, true);
  fromPeer(r);
  // A second pair, ready in the same poll as the held fd: once its watcher ran, the held one would have too.
  const [a, b] = n.socketpair(n.SOCK_DGRAM);
  peers.push(a, b);
  const seen = new Promise<void>((resolve) => {
    const p = new n.Poller(a, () => {
      p.close();
      resolve();
    });
    p.start(n.READABLE);
  });
  n.sendBatch(b, f60, new Uint32Array([0]), new Uint32Array([60]), 0, 1, null);
  await seen;
  await turn();
  assert.equal(r.reads, 0, 'a held port read');
  r.core.release();
  while (r.reads === 0) await turn();
  assert.deepEqual(r.core.counters(), {
    rx_frames: 0,
    rx_batches: 0,
    tx_frames: 0,
    tx_batches: 0,
    read_held: false,
    read_holds: 1,
    queued: 0,
  });
});

test('close() waits for a slow transport to take the rest, then reports closed once', async () => {
  let blocked = true;
  const r = rig((tx) => (blocked ? tx.head : tx.count));
  r.core.write(f60, 0, 60);
  const closing = r.core.close();
  await turn();
  assert.equal(r.core.closed, false, 'closed before the queue drained');
  blocked = false;
  await Promise.all([closing, r.core.close()]);
  assert.equal(r.core.queued, 0);
  assert.equal(r.core.txFrames, 1);
  assert.deepEqual(r.states, ['up: attached', 'closed: closed']);
});

test('teardown drops the queue, releases once, reports closed once, and waits for an async release', async () => {
  const r = rig();
  r.core.write(f60, 0, 60);
  let releases = 0;
  let queuedAtRelease = -1;
  const release = async (): Promise<void> => {
    releases++;
    queuedAtRelease = r.tx.queued;
    await turn();
  };
  const first = r.core.teardown('destroyed', release);
  assert.equal(r.core.teardown('closed', release), undefined);
  assert.deepEqual(r.states, ['up: attached'], 'closed reported before the release finished');
  await first;
  await turn();
  assert.equal(r.core.fd, -1);
  assert.deepEqual(r.sends, [], 'the cancelled flush never ran');
  assert.equal(releases, 1);
  assert.equal(queuedAtRelease, 0);
  assert.deepEqual(r.states, ['up: attached', 'closed: destroyed']);
  assert.equal(destroyReason(), 'destroyed');
  assert.equal(destroyReason(new Error('peer broke the protocol')), 'destroyed: peer broke the protocol');
});
