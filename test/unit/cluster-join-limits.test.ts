/**
 * The join endpoint's per-source failure window (src/cluster/join-limits.ts):
 * a source is refused after `max` failures within a minute, free again after
 * it, and the number of sources remembered is bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FailureWindow } from '../../src/cluster/join-limits.js';

describe('join endpoint failure window', () => {
  it('blocks a source at its max-th failure within a minute, and only that source', () => {
    const w = new FailureWindow(3);
    assert.equal(w.fail('10.0.0.1', 0), false);
    assert.equal(w.fail('10.0.0.1', 1000), false);
    assert.equal(w.blocked('10.0.0.1', 1000), false);
    assert.equal(w.fail('10.0.0.1', 2000), true, 'the failure that blocks it is reported once');
    assert.equal(w.blocked('10.0.0.1', 2000), true);
    assert.equal(w.fail('10.0.0.1', 3000), false);
    assert.equal(w.blocked('10.0.0.2', 3000), false);
  });

  it('frees a source a minute after its first failure and counts afresh', () => {
    const w = new FailureWindow(2);
    w.fail('s', 0);
    w.fail('s', 10);
    assert.equal(w.blocked('s', 59_999), true);
    assert.equal(w.blocked('s', 60_000), false);
    assert.equal(w.fail('s', 60_001), false);
    assert.equal(w.blocked('s', 60_001), false);
  });

  it('remembers at most 1024 sources, forgetting the oldest first', () => {
    const w = new FailureWindow(1);
    for (let i = 0; i <= 1024; i++) w.fail(`src-${i}`, i);
    assert.equal(w.blocked('src-0', 2000), false, 'the oldest source was forgotten');
    assert.equal(w.blocked('src-1', 2000), true);
    assert.equal(w.blocked('src-1024', 2000), true);
  });
});
