import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Port, WriteResult } from '../../src/net/port.js';
import { Hold, type HoldPort } from '../../src/net/switch/hold.js';

/** A port that records holds and releases (the rest of the contract is not used by the hold logic). */
function port(name: string, canWait = true): HoldPort & { events: string[] } {
  const events: string[] = [];
  const p = { name, events } as unknown as Port & { events: string[] };
  if (canWait) {
    p.hold = () => events.push('hold');
    p.release = () => events.push('release');
  }
  return { port: p, events };
}

const src = Buffer.alloc(64);

function batch(h: Hold, from: HoldPort, writes: [HoldPort, WriteResult][]): void {
  h.begin(from, src, writes.length);
  for (const [to, r] of writes) h.wrote(to, r, 1);
  h.end();
}

test('holds a sender whose every frame went to ports that said FULL, and releases it when one announces room', () => {
  const h = new Hold();
  const [s, r] = [port('s'), port('r')];
  batch(h, s, [
    [r, WriteResult.OK],
    [r, WriteResult.FULL],
  ]);
  assert.deepEqual(s.events, ['hold']);
  assert.deepEqual(h.ctx.full, [], 'the context is cleared at the end of the batch');
  h.room(r);
  assert.deepEqual(s.events, ['hold', 'release']);
  h.room(r);
  assert.deepEqual(s.events, ['hold', 'release'], 'a second announcement releases nobody');
});

test('does not hold a sender that also sent to a port with room, in the batch or in the last 10 ms', () => {
  const h = new Hold();
  const [s, r, q] = [port('s'), port('r'), port('q')];
  batch(h, s, [
    [r, WriteResult.FULL],
    [q, WriteResult.OK],
  ]);
  batch(h, s, [[r, WriteResult.FULL]]);
  assert.deepEqual(s.events, []);
});

test('does not hold a sender whose frames partly reached nobody, nor one that cannot wait', () => {
  const h = new Hold();
  const [s, r, d, w] = [port('s'), port('r'), port('d'), port('w', false)];
  batch(h, s, [
    [r, WriteResult.FULL],
    [d, WriteResult.DOWN],
  ]);
  assert.deepEqual(s.events, []);
  batch(h, w, [[r, WriteResult.FULL]]);
  h.room(r);
  assert.deepEqual(w.events, []);
});

test('a receiver leaving the switch releases the senders it held', () => {
  const h = new Hold();
  const [s, r] = [port('s'), port('r')];
  batch(h, s, [[r, WriteResult.FULL]]);
  h.forget(r);
  assert.deepEqual(s.events, ['hold', 'release']);
});

test('a batch nested in a write (a port answering at once) counts as part of the outer one', () => {
  const h = new Hold();
  const [s, r, x] = [port('s'), port('r'), port('x')];
  h.begin(s, src, 1);
  h.begin(x, Buffer.alloc(8), 1);
  h.wrote(s, WriteResult.OK, 1);
  h.end();
  assert.equal(h.ctx.src, src, 'the outer batch goes on');
  h.wrote(r, WriteResult.FULL, 1);
  h.end();
  assert.deepEqual(s.events, ['hold']);
  assert.deepEqual(x.events, []);
});
