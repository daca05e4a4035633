import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameArena } from '../../src/net/frame-arena.js';

const frame = (byte: number, len: number) => Buffer.alloc(len, byte);

function queued(a: FrameArena): string[] {
  const out: string[] = [];
  for (let i = a.head; i < a.count; i++) {
    const off = a.offs[i] as number;
    out.push(a.buf.subarray(off, off + (a.lens[i] as number)).toString('hex'));
  }
  return out;
}

test('queues copies of frames back to back, up to its frame count', () => {
  const a = new FrameArena(2, 64);
  const src = Buffer.from('0000aabbcc0000', 'hex');
  assert.equal(a.push(src, 2, 3), true);
  src.fill(0); // the arena holds a copy
  assert.equal(a.push(frame(0x11, 3), 0, 3), true);
  assert.equal(a.push(frame(0x22, 3), 0, 3), false);
  assert.deepEqual(queued(a), ['aabbcc', '111111']);
  assert.equal(a.queued, 2);
});

test('refuses a frame that does not fit in the bytes left when nothing was sent', () => {
  const a = new FrameArena(8, 10);
  assert.equal(a.push(frame(1, 6), 0, 6), true);
  assert.equal(a.push(frame(2, 5), 0, 5), false);
  assert.deepEqual(queued(a), ['010101010101']);
});

test('moves unsent frames to the front to make room once some were sent', () => {
  const a = new FrameArena(8, 10);
  a.push(frame(1, 4), 0, 4);
  a.push(frame(2, 4), 0, 4);
  assert.equal(a.advance(1), false);
  assert.equal(a.push(frame(3, 5), 0, 5), true);
  assert.deepEqual(queued(a), ['02020202', '0303030303']);
  assert.equal(a.head, 0);
});

test('empties itself when everything was sent, and clear() reports what it dropped', () => {
  const a = new FrameArena(4, 64);
  a.push(frame(1, 4), 0, 4);
  a.push(frame(2, 4), 0, 4);
  assert.equal(a.advance(2), true);
  assert.equal(a.queued, 0);
  assert.equal(a.count, 0);
  a.push(frame(3, 4), 0, 4);
  a.push(frame(4, 4), 0, 4);
  a.advance(1);
  assert.equal(a.clear(), 1);
  assert.equal(a.queued, 0);
});
