import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ExportRetry } from '../../src/daemon/export-retry.js';

describe('ExportRetry', () => {
  // Retry timers are unref'ed (they must not keep the daemon alive): keep the loop alive meanwhile.
  let keep: NodeJS.Timeout;
  before(() => {
    keep = setInterval(() => {}, 1000);
  });
  after(() => clearInterval(keep));

  it('tries again with backoff until an attempt succeeds, then stops', async () => {
    const tries: number[] = [];
    let done: () => void = () => {};
    const finished = new Promise<void>((r) => {
      done = r;
    });
    const retry = new ExportRetry({
      minMs: 5,
      maxMs: 20,
      attempt: async (name, n) => {
        assert.equal(name, 'disk');
        tries.push(n);
        if (n < 4) return false;
        done();
        return true;
      },
    });
    retry.schedule('disk');
    assert.equal(retry.schedule('disk'), 0, 'already being retried');
    await finished;
    assert.deepEqual(tries, [1, 2, 3, 4]);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(tries, [1, 2, 3, 4], 'no more tries after success');
    assert.deepEqual(retry.names(), []);
  });

  it('stops retrying a cancelled export and everything after close()', async () => {
    let calls = 0;
    const retry = new ExportRetry({
      minMs: 5,
      maxMs: 5,
      attempt: async () => {
        calls++;
        return false;
      },
    });
    retry.schedule('a');
    retry.schedule('b');
    retry.cancel('a');
    assert.deepEqual(retry.names(), ['b']);
    await new Promise((r) => setTimeout(r, 30));
    assert.ok(calls > 0, 'b was tried');
    retry.close();
    const after = calls;
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(calls, after);
    assert.equal(retry.schedule('c'), 0, 'nothing is scheduled after close');
  });
});
