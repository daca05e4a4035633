import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { FrameArena } from '../../src/net/frame-arena.js';
import type { PortContext, PortState } from '../../src/net/port.js';
import { destroyReason, FdPortCore } from '../../src/net/ports/fd-port.js';

function rig(): { core: FdPortCore; tx: FrameArena; states: string[]; flushes: number[] } {
  const states: string[] = [];
  const flushes: number[] = [];
  const ctx: PortContext = {
    sink: () => {},
    onState: (state: PortState, reason: string) => states.push(`${state}: ${reason}`),
    logger: silentLogger(),
    maxFrameLen: 1514,
    queueLen: 8,
    onMalformed: () => {},
  };
  const tx = new FrameArena(8, 4096);
  const core: FdPortCore = new FdPortCore(ctx, tx, () => {
    core.scheduled = undefined;
    flushes.push(tx.queued);
  });
  return { core, tx, states, flushes };
}

test('reports each state change to the context and keeps it as the port state', () => {
  const { core, states } = rig();
  assert.equal(core.state, 'closed');
  core.setState('up', 'bound');
  core.setState('down', 'peer gone');
  assert.equal(core.state, 'down');
  assert.deepEqual(states, ['up: bound', 'down: peer gone']);
});

test('teardown cancels the scheduled flush, drops the queue, releases once and reports closed once', async () => {
  const { core, tx, states, flushes } = rig();
  core.setState('up', 'bound');
  tx.push(Buffer.alloc(60, 1), 0, 60);
  core.scheduled = setImmediate(core.flushBound);
  let releases = 0;
  let queuedAtRelease = -1;
  const release = (): void => {
    releases++;
    queuedAtRelease = tx.queued;
  };
  core.teardown('closed', release);
  core.teardown('destroyed', release);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(core.closed, true);
  assert.equal(core.scheduled, undefined);
  assert.deepEqual(flushes, [], 'the cancelled flush never ran');
  assert.equal(releases, 1);
  assert.equal(queuedAtRelease, 0);
  assert.deepEqual(states, ['up: bound', 'closed: closed']);
});

test('teardown of a port that never came up reports no state', () => {
  const { core, states } = rig();
  core.teardown('closed', () => {});
  assert.equal(core.closed, true);
  assert.deepEqual(states, []);
});

test('describes the batch counters and the destroy reason', () => {
  const { core } = rig();
  core.rxFrames += 5;
  core.rxBatches++;
  core.txFrames += 3;
  core.txBatches += 2;
  assert.deepEqual(core.counters(), { rx_frames: 5, rx_batches: 1, tx_frames: 3, tx_batches: 2 });
  assert.equal(destroyReason(), 'destroyed');
  assert.equal(destroyReason(new Error('peer broke the protocol')), 'destroyed: peer broke the protocol');
});
