import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProcessStats } from '../../src/daemon/process-stats.js';

describe('process stats for the status API', () => {
  const stats = startProcessStats();
  after(() => stats.stop());

  test('counts the open file descriptors and reports RSS and heap in bytes', () => {
    const before = stats.view();
    const fd = openSync('/dev/null', 'r');
    try {
      assert.equal(stats.view().fds, before.fds + 1);
    } finally {
      closeSync(fd);
    }
    assert.equal(stats.view().fds, readdirSync('/proc/self/fd').length - 1);
    assert.ok(before.rss_bytes > before.heap_used_bytes && before.heap_used_bytes > 0);
  });

  test('reports a blocked event loop in the one-second windows that follow', async () => {
    // The monitor measures from its previous tick: let it tick once first.
    await sleep(100);
    const t = Date.now();
    while (Date.now() - t < 300) {
      // Busy: no timer can fire for 300 ms.
    }
    // The window holding the late timer closes within two seconds (the roll may come just before the sample).
    for (let i = 0; i < 30 && stats.view().event_loop_delay_ms.max_since_start < 250; i++) await sleep(100);
    const d = stats.view().event_loop_delay_ms;
    assert.ok(d.max_since_start >= 250 && d.max_since_start < 10_000, JSON.stringify(d));
  });
});
