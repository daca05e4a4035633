import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Backoff } from '../../src/util/backoff.js';

describe('Backoff', () => {
  test('doubles the nominal delay from min up to max, waiting between half and all of it', () => {
    const lo = new Backoff(100, 1000, () => 0);
    const hi = new Backoff(100, 1000, () => 0.999999);
    const nominal = [100, 200, 400, 800, 1000, 1000];
    for (const d of nominal) {
      assert.equal(lo.next(), d / 2);
      assert.equal(hi.next(), d);
    }
    assert.equal(lo.attempt, 6);
  });

  test('starts again at the minimum after reset()', () => {
    const b = new Backoff(50, 5000, () => 0.5);
    b.next();
    b.next();
    b.reset();
    assert.equal(b.attempt, 0);
    assert.equal(b.next(), 38); // 25 + 25 * 0.5, rounded
  });

  test('never overflows after very many failures', () => {
    const b = new Backoff(100, 5000, () => 1);
    let last = 0;
    for (let i = 0; i < 2000; i++) last = b.next();
    assert.equal(last, 5000);
  });
});
