/**
 * The native ring fast path over guest memory whose file the front-end
 * shrank under it (an unsealed memfd): faults are reported, never fatal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GPA, HDR, setup } from '../helpers/vring-rig.js';

test('a transmit buffer beyond the end of a shrunk memory file makes the fast path report a fault (-1), not kill the process', () => {
  const { q, desc, avail, shrink, mem } = setup(true);
  desc(0, GPA + 0x8000, HDR + 60, 0);
  desc(1, GPA + 0x9000, HDR + 60, 0);
  avail(0);
  avail(1);
  shrink(0x9000); // the second buffer's page is gone
  assert.equal(q.txBatch(8, 14, 1514), -1);
  assert.equal(q.lastAvail, 1, 'the first chain was taken before the fault');
  assert.equal(mem.fault()?.code, 'ERR_VHOST_MEMORY_FAULT');
});

test('a receive buffer beyond the end of a shrunk memory file: the copy completes into memory the guest cannot see and the fault is counted', () => {
  const { q, desc, avail, used, shrink, mem, g } = setup(true);
  desc(0, GPA + 0x8000, 2048, 2);
  desc(1, GPA + 0xa000, 2048, 2);
  avail(0);
  avail(1);
  shrink(0xa000);
  const frame = Buffer.alloc(60, 0x5a);
  assert.equal(q.rxOne(frame, 0, 60), 0, 'the buffer inside the file takes the frame');
  assert.deepEqual(g.subarray(0x8000 + HDR, 0x8000 + HDR + 60), frame);
  assert.equal(mem.fault(), undefined);
  assert.equal(q.rxOne(frame, 0, 60), 0, 'the one beyond its end: written to the private page that replaced it');
  assert.equal(used().readUInt16LE(2), 2);
  assert.equal(mem.fault()?.code, 'ERR_VHOST_MEMORY_FAULT');
});

test('a batch whose source frames lie beyond the end of a shrunk memory file stops there: the frames before it are published, none after', () => {
  const { q, desc, avail, used } = setup(true);
  for (let i = 0; i < 3; i++) {
    desc(i, GPA + 0x8000 + 0x800 * i, 2048, 2);
    avail(i);
  }
  // The source is another guest's memory that shrank: its first page is still there, the rest is gone.
  const other = setup(true);
  other.shrink(0x4000);
  const src = other.q.regionView(0);
  assert.equal(q.rxBatch(src, Uint32Array.of(0x3000, 60, 0x5000, 60, 0x3100, 60), 3), 1);
  assert.equal(q.usedIdx, 1);
  assert.equal(used().readUInt16LE(2), 1, 'the first frame is published, the faulting one is not');
  assert.ok(other.mem.fault(), 'the fault is counted on the source memory');
});

test('rings in the truncated part of a memory file read as zeros: nothing available, no crash', () => {
  const { q, avail, desc, shrink, mem } = setup(true);
  desc(0, GPA + 0x8000, HDR + 60, 0);
  avail(0);
  shrink(0);
  assert.equal(q.availCount(), 0);
  assert.equal(q.txBatch(8, 14, 1514), 0);
  assert.ok(mem.fault());
});
