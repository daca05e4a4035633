import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Dwrr } from '../../src/net/qos/dwrr.js';

/** Serves `n` items and returns the bytes each queue got. */
function serve(d: Dwrr<{ q: number; cost: number }>, n: number, queues: number): number[] {
  const got = new Array<number>(queues).fill(0);
  for (let i = 0; i < n; i++) {
    const it = d.dequeue();
    assert.ok(it, 'scheduler returned nothing while items were queued');
    got[it.q] = (got[it.q] as number) + it.cost;
  }
  return got;
}

describe('DWRR scheduler', () => {
  it('shares service in proportion to weight when every queue is backlogged', () => {
    const d = new Dwrr<{ q: number; cost: number }>({ quantum: 1500 });
    const weights = [1, 2, 4];
    const ids = weights.map((w) => d.addQueue(w));
    for (const [q, id] of ids.entries()) for (let i = 0; i < 3000; i++) d.enqueue(id, { q, cost: 1500 }, 1500);
    const got = serve(d, 3500, 3);
    const total = got.reduce((a, b) => a + b, 0);
    for (const [q, w] of weights.entries()) {
      const share = (got[q] as number) / total;
      assert.ok(Math.abs(share - w / 7) < 0.01, `queue ${q} weight ${w} got share ${share}`);
    }
  });

  it('shares bytes, not items, when item costs differ between queues', () => {
    const d = new Dwrr<{ q: number; cost: number }>({ quantum: 4096 });
    const small = d.addQueue(1);
    const large = d.addQueue(1);
    for (let i = 0; i < 20000; i++) d.enqueue(small, { q: 0, cost: 512 }, 512);
    for (let i = 0; i < 2000; i++) d.enqueue(large, { q: 1, cost: 65536 }, 65536);
    const got = serve(d, 5000, 2);
    const ratio = (got[0] as number) / (got[1] as number);
    assert.ok(ratio > 0.9 && ratio < 1.1, `byte ratio small/large was ${ratio}`);
  });

  it('is work-conserving: an idle queue does not stop a backlogged one and earns no credit while idle', () => {
    const d = new Dwrr<{ q: number; cost: number }>({ quantum: 1000 });
    const a = d.addQueue(1);
    const b = d.addQueue(100);
    for (let i = 0; i < 10; i++) d.enqueue(a, { q: 0, cost: 1000 }, 1000);
    // b is idle: a gets every dequeue, one after another.
    assert.deepEqual(serve(d, 10, 2), [10000, 0]);
    assert.equal(d.dequeue(), undefined);
    assert.equal(d.size, 0);
    // b wakes: it starts from zero deficit, so a backlogged a still gets its share.
    for (let i = 0; i < 1000; i++) d.enqueue(a, { q: 0, cost: 1000 }, 1000);
    for (let i = 0; i < 1000; i++) d.enqueue(b, { q: 1, cost: 1000 }, 1000);
    const got = serve(d, 505, 2);
    assert.deepEqual(got, [5000, 500000]);
  });

  it('serves an item larger than the quantum after enough rounds without starving others', () => {
    const d = new Dwrr<{ q: number; cost: number }>({ quantum: 100 });
    const big = d.addQueue(1);
    const small = d.addQueue(1);
    d.enqueue(big, { q: 0, cost: 1_000_000 }, 1_000_000);
    for (let i = 0; i < 20000; i++) d.enqueue(small, { q: 1, cost: 100 }, 100);
    const order: number[] = [];
    for (let i = 0; i < 20001; i++) order.push((d.dequeue() as { q: number }).q);
    const bigAt = order.indexOf(0);
    // `big` is first in the ring: it saves up credit for 10000 rounds and sends
    // in the 10000th, before `small` takes its 10000th item (one per round).
    assert.equal(bigAt, 9999);
    assert.equal(d.dequeue(), undefined);
  });

  it('keeps FIFO order within a queue across ring growth', () => {
    const d = new Dwrr<number>({ quantum: 1, initialCapacity: 2 });
    const q = d.addQueue(1);
    for (let i = 0; i < 3; i++) d.enqueue(q, i, 1);
    assert.equal(d.dequeue(), 0);
    for (let i = 3; i < 40; i++) d.enqueue(q, i, 1);
    const out: number[] = [];
    for (let x = d.dequeue(); x !== undefined; x = d.dequeue()) out.push(x);
    assert.deepEqual(
      out,
      Array.from({ length: 39 }, (_, i) => i + 1),
    );
  });

  it('returns the items of a removed queue and keeps serving the others', () => {
    const d = new Dwrr<string>({ quantum: 10 });
    const a = d.addQueue(1);
    const b = d.addQueue(1);
    d.enqueue(a, 'a1', 10);
    d.enqueue(a, 'a2', 10);
    d.enqueue(b, 'b1', 10);
    assert.deepEqual(d.removeQueue(a), ['a1', 'a2']);
    assert.equal(d.dequeue(), 'b1');
    assert.equal(d.dequeue(), undefined);
    const c = d.addQueue(2);
    assert.equal(c, a, 'the freed id is reused');
    d.enqueue(c, 'c1', 10);
    assert.equal(d.dequeue(), 'c1');
    assert.equal(d.size, 0);
  });

  it('rejects a weight that is not a positive number', () => {
    const d = new Dwrr<number>();
    assert.throws(() => d.addQueue(0), RangeError);
    assert.throws(() => d.addQueue(Number.NaN), RangeError);
  });
});
