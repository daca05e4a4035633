/**
 * The bounded soak (bench/soak.ts): two real daemons, 15 s of warm-up and
 * 60 s of mixed traffic (stream peers, vhost-user, TAP when root, the overlay
 * link, NBD, connection and API churn). Resource bounds, not timing: the
 * daemon's open fds come back to exactly the warm-up count once the churn
 * stops, and its RSS grows by less than RSS_TOLERANCE_MIB after the warm-up.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runSoak } from '../../bench/soak.js';

/** Largest RSS growth tolerated between the end of the warm-up and the end of the run, MiB. */
const RSS_TOLERANCE_MIB = 32;

describe('soak', { timeout: 240_000 }, () => {
  test('keeps fds and memory flat through a minute of mixed traffic and churn', async (t) => {
    const r = await runSoak({ seconds: 60, warmupSeconds: 15, log: (l) => t.diagnostic(l) });
    const growthMiB = (r.end.rssBytes - r.baseline.rssBytes) / 2 ** 20;
    t.diagnostic(
      `fds ${r.baseline.fds} -> ${r.end.fds}; RSS +${growthMiB.toFixed(1)} MiB; ` +
        `event-loop delay p99 up to ${r.eld.p99MaxMs} ms, max ${r.eld.maxMs} ms; skipped: ${r.skipped.join(', ') || 'none'}`,
    );
    t.diagnostic(JSON.stringify(r.counts));

    // Every path carried traffic, and nothing failed.
    for (const [name, c] of Object.entries(r.counts)) {
      assert.ok(c.sent > 0, `${name} sent nothing`);
      assert.equal(c.errors, 0, `${name}: ${c.errors} errors`);
    }
    const paths = ['stream-s1', 'stream-s2', 'link-r1', 'vhost-v1', 'nbd', 'api-churn', 'nbd-churn'];
    if (process.getuid?.() === 0) paths.push('tap-t1');
    for (const name of paths) {
      assert.ok((r.counts[name]?.received ?? 0) > 0, `${name} received nothing`);
    }
    assert.ok(r.samples.length > 0 && r.samples.every((s) => s.fds > 0 && s.rssBytes > 0));

    assert.equal(r.end.fds, r.baseline.fds, 'open fds of the daemon after the churn stopped');
    assert.ok(growthMiB < RSS_TOLERANCE_MIB, `RSS grew by ${growthMiB.toFixed(1)} MiB`);
  });
});
