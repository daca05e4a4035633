import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QosScheduler } from '../../src/qos/scheduler.js';
import { TokenBucket } from '../../src/qos/token-bucket.js';
import { prng } from '../helpers/prng.js';

const FRAME = 1500;

/** A virtual clock in ms. */
function virtualClock(): { now: number; clock: () => number } {
  const c = { now: 0, clock: () => c.now };
  return c;
}

/**
 * Runs `ms` of virtual time in steps of `stepMs`: before each step the flows in
 * `backlogged` are topped up to 64 queued frames, then everything the
 * scheduler allows at that instant is served. Returns bytes served per flow id.
 */
function run(
  s: QosScheduler<number>,
  c: { now: number },
  ms: number,
  backlogged: number[],
  stepMs = 1,
  cost = FRAME,
): Map<number, number> {
  const got = new Map<number, number>();
  const end = c.now + ms;
  for (; c.now < end; c.now += stepMs) {
    for (const id of backlogged) while (s.queued(id) < 64) s.enqueue(id, id, cost);
    for (let item = s.dequeue(c.now); item !== undefined; item = s.dequeue(c.now)) {
      assert.equal(item, s.lastFlow, 'lastFlow names the flow of the item returned');
      got.set(item, (got.get(item) ?? 0) + cost);
    }
  }
  return got;
}

const rateOf = (bytes: number | undefined, ms: number): number => ((bytes ?? 0) * 1000) / ms;

describe('QoS scheduler', () => {
  it('shapes the aggregate to its rate within 0.5% over 5 s of virtual time', () => {
    const c = virtualClock();
    const rate = 12_500_000; // 100 Mbit/s
    const s = new QosScheduler<number>({ clock: c.clock, rate });
    const a = s.addFlow();
    run(s, c, 100, [a]); // past the initial burst
    const got = run(s, c, 5000, [a]);
    const r = rateOf(got.get(a), 5000);
    assert.ok(Math.abs(r / rate - 1) < 0.005, `shaped to ${r} B/s, configured ${rate}`);
  });

  it('keeps a token bucket exact: 5 s at 1000 tokens/s with a burst of 10 yields 5000 tokens plus the burst', () => {
    const b = new TokenBucket(1000, 10, 0);
    let taken = 0;
    for (let t = 0; t <= 5000; t += 0.25) while (b.take(1, t)) taken++;
    assert.equal(taken, 5010);
    assert.equal(b.waitMs(1, 5000), 1 + 1e-6);
  });

  it('shares a saturated shaper in proportion to DWRR weights', () => {
    const c = virtualClock();
    const s = new QosScheduler<number>({ clock: c.clock, rate: 10_000_000 });
    const weights = [1, 2, 3, 4];
    const ids = weights.map((w) => s.addFlow({ weight: w }));
    const got = run(s, c, 3000, ids);
    const total = [...got.values()].reduce((x, y) => x + y, 0);
    for (const [k, id] of ids.entries()) {
      const share = (got.get(id) ?? 0) / total;
      const want = (weights[k] as number) / 10;
      assert.ok(Math.abs(share / want - 1) < 0.02, `weight ${weights[k]}: share ${share}, want ${want}`);
    }
  });

  it('gives a reserved flow at least its minimum under saturation by eight equal flows', () => {
    const c = virtualClock();
    const rate = 10_000_000;
    const s = new QosScheduler<number>({ clock: c.clock, rate });
    const min = 4_000_000;
    const reserved = s.addFlow({ min: new TokenBucket(min, 16 * 1024, 0) });
    const others = Array.from({ length: 7 }, () => s.addFlow());
    const got = run(s, c, 4000, [reserved, ...others]);
    const r = rateOf(got.get(reserved), 4000);
    // Its minimum, plus an eighth of what is left over.
    assert.ok(r >= min * 0.99, `reserved flow got ${r} B/s, minimum ${min}`);
    assert.ok(r <= min + (rate - min) / 8 + rate * 0.02, `reserved flow got ${r} B/s, more than its share`);
    for (const id of others) {
      const o = rateOf(got.get(id), 4000);
      assert.ok(Math.abs(o / ((rate - r) / 7) - 1) < 0.03, `flow ${id} got ${o} B/s`);
    }
  });

  it('serves the priority flow first but no faster than its cap', () => {
    const c = virtualClock();
    const rate = 10_000_000;
    const cap = 2_000_000;
    const s = new QosScheduler<number>({ clock: c.clock, rate });
    const bulk = s.addFlow({ weight: 100 });
    const prio = s.addFlow({ priority: true, max: new TokenBucket(cap, 8 * 1024, 0) });
    run(s, c, 50, [bulk]);
    // Behind a backlog of bulk frames, a latency frame is the next one out once the shaper allows.
    for (let i = 0; i < 100; i++) s.enqueue(bulk, bulk, FRAME);
    s.enqueue(prio, prio, 100);
    c.now += 1;
    assert.equal(s.dequeue(c.now), prio);
    // Saturated, the priority flow is held to its cap and the rest goes to bulk.
    const got = run(s, c, 4000, [bulk, prio]);
    const p = rateOf(got.get(prio), 4000);
    const b = rateOf(got.get(bulk), 4000);
    assert.ok(Math.abs(p / cap - 1) < 0.02, `priority flow got ${p} B/s, cap ${cap}`);
    assert.ok(Math.abs(b / (rate - cap) - 1) < 0.02, `bulk got ${b} B/s`);
  });

  it('is work-conserving: a backlogged flow gets the whole rate while heavier flows are idle, and caps only hold their own flow', () => {
    const c = virtualClock();
    const rate = 10_000_000;
    const s = new QosScheduler<number>({ clock: c.clock, rate });
    const light = s.addFlow({ weight: 1 });
    s.addFlow({ weight: 100 });
    const capped = s.addFlow({ weight: 100, max: new TokenBucket(1_000_000, 4096, 0) });
    run(s, c, 50, [light]);
    const alone = run(s, c, 2000, [light]);
    assert.ok(Math.abs(rateOf(alone.get(light), 2000) / rate - 1) < 0.01);
    const both = run(s, c, 2000, [light, capped]);
    const cr = rateOf(both.get(capped), 2000);
    const lr = rateOf(both.get(light), 2000);
    assert.ok(Math.abs(cr / 1_000_000 - 1) < 0.02, `capped flow got ${cr}`);
    assert.ok(Math.abs((lr + cr) / rate - 1) < 0.01, `link used ${lr + cr} of ${rate}`);
  });

  it('without a shaper returns an item whenever one is queued, and tells when a capped flow may go next', () => {
    const s = new QosScheduler<string>({ clock: () => 0 });
    const a = s.addFlow({ max: new TokenBucket(1000, 100, 0) });
    s.enqueue(a, 'x', 300);
    s.enqueue(a, 'y', 300);
    assert.equal(s.nextAt(0), 0);
    assert.equal(s.dequeue(0), 'x');
    assert.equal(s.dequeue(0), undefined, 'in debt: waits');
    assert.ok(Math.abs(s.nextAt(0) - 200) < 0.01, `next at ${s.nextAt(0)}`);
    assert.equal(s.dequeue(200.01), 'y');
    assert.equal(s.nextAt(200.01), Number.POSITIVE_INFINITY);
  });

  it('keeps its counts consistent through a seeded random sequence of operations', () => {
    const rnd = prng(7);
    const c = virtualClock();
    const s = new QosScheduler<number>({ clock: c.clock, rate: 1_000_000, quantum: 500 });
    const flows: number[] = [];
    const queued = new Map<number, number>();
    let total = 0;
    for (let step = 0; step < 20000; step++) {
      const r = rnd();
      if (r < 0.02 && flows.length < 12) {
        const id = s.addFlow({
          weight: 1 + Math.floor(rnd() * 8),
          priority: rnd() < 0.2,
          min: rnd() < 0.3 ? new TokenBucket(1 + rnd() * 300_000, 2000, c.now) : undefined,
          max: rnd() < 0.3 ? new TokenBucket(1 + rnd() * 500_000, 2000, c.now) : undefined,
        });
        flows.push(id);
        queued.set(id, 0);
      } else if (r < 0.03 && flows.length > 0) {
        const id = flows.splice(Math.floor(rnd() * flows.length), 1)[0] as number;
        const left = s.removeFlow(id);
        assert.equal(left.length, queued.get(id));
        total -= left.length;
        queued.delete(id);
      } else if (r < 0.6 && flows.length > 0) {
        const id = flows[Math.floor(rnd() * flows.length)] as number;
        s.enqueue(id, id, 1 + Math.floor(rnd() * 9000));
        queued.set(id, (queued.get(id) ?? 0) + 1);
        total++;
      } else {
        c.now += rnd() * 3;
        const item = s.dequeue(c.now);
        if (item !== undefined) {
          queued.set(item, (queued.get(item) as number) - 1);
          total--;
        } else if (total > 0) {
          assert.ok(s.nextAt(c.now) > c.now || s.nextAt(c.now) === c.now, 'nextAt is never in the past');
        }
      }
      assert.equal(s.size, total);
    }
  });
});
