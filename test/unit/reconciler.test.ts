/**
 * The reconcile loop on its own: from any running state, converging to any
 * desired state leaves exactly the desired items running, touches nothing
 * already right, removes before it creates (in reverse kind order), and a
 * failing item neither stops the others nor leaves a half-done change.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { silentLogger } from '../../src/log.js';
import { type Actuator, Reconciler } from '../../src/reconcile/reconciler.js';
import { type DesiredItem, type DesiredState, emptyDesired, KINDS, type Kind } from '../../src/reconcile/state.js';

/** Running things of one kind in a map; every call is written to `ops`; names in `broken` fail to create. */
class MapActuator implements Actuator {
  readonly items = new Map<string, DesiredItem>();
  constructor(
    readonly kind: Kind,
    readonly ops: string[],
    readonly broken: Set<string>,
  ) {}
  running(): ReadonlyMap<string, DesiredItem> {
    return this.items;
  }
  async create(item: DesiredItem): Promise<void> {
    this.ops.push(`+${this.kind}/${item.name}`);
    if (this.broken.has(item.name)) throw Object.assign(new Error(`${item.name} is broken`), { code: 'ERR_TEST' });
    this.items.set(item.name, item);
  }
  async destroy(name: string): Promise<void> {
    this.ops.push(`-${this.kind}/${name}`);
    this.items.delete(name);
  }
}

function rig(broken = new Set<string>()) {
  const ops: string[] = [];
  const acts = Object.fromEntries(KINDS.map((k) => [k, new MapActuator(k, ops, broken)])) as Record<Kind, MapActuator>;
  return { ops, acts, r: new Reconciler({ actuators: acts, logger: silentLogger() }) };
}

/** A desired state: per kind, a few names from a small set, each with a version (a changed item) and a source. */
const desiredArb = fc
  .record(
    Object.fromEntries(
      KINDS.map((k) => [
        k,
        fc.uniqueArray(fc.record({ name: fc.constantFrom('a', 'b', 'c', 'd'), v: fc.nat(2), api: fc.boolean() }), {
          selector: (x) => x.name,
          maxLength: 4,
        }),
      ]),
    ) as Record<Kind, fc.Arbitrary<{ name: string; v: number; api: boolean }[]>>,
  )
  .map((spec) => {
    const d = emptyDesired();
    for (const k of KINDS)
      for (const x of spec[k])
        d[k].set(x.name, { name: x.name, source: x.api ? 'api' : 'config', raw: { name: x.name, v: x.v }, spec: x });
    return d;
  });

const runningOf = (acts: Record<Kind, MapActuator>) =>
  Object.fromEntries(
    KINDS.map((k) => [k, [...acts[k].items.values()].map((i) => `${i.source}:${JSON.stringify(i.raw)}`).sort()]),
  );
const wanted = (d: DesiredState) =>
  Object.fromEntries(
    KINDS.map((k) => [k, [...d[k].values()].map((i) => `${i.source}:${JSON.stringify(i.raw)}`).sort()]),
  );

describe('reconciler', () => {
  test('from any running state, converging leaves exactly the desired state running and touches only what differs', async () => {
    await fc.assert(
      fc.asyncProperty(desiredArb, desiredArb, async (from, to) => {
        const { ops, acts, r } = rig();
        await r.converge(from);
        assert.deepEqual(runningOf(acts), wanted(from));
        ops.length = 0;
        const report = await r.converge(to);
        assert.deepEqual(runningOf(acts), wanted(to));
        assert.deepEqual(report.failed, []);
        // Only items that differ were touched: an unchanged item is neither removed nor created.
        for (const k of KINDS)
          for (const [name, item] of to[k]) {
            const before = from[k].get(name);
            const same = before && before.source === item.source && before.raw['v'] === item.raw['v'];
            if (same) assert.ok(!ops.includes(`-${k}/${name}`) && !ops.includes(`+${k}/${name}`), `${k}/${name}`);
          }
        // Every removal comes before every creation, links first and networks last.
        const firstCreate = ops.findIndex((o) => o.startsWith('+'));
        if (firstCreate >= 0) assert.ok(!ops.slice(firstCreate).some((o) => o.startsWith('-')), ops.join(' '));
        const removed = ops
          .filter((o) => o.startsWith('-'))
          .map((o) => KINDS.indexOf(o.slice(1).split('/')[0] as Kind));
        assert.deepEqual(
          removed,
          [...removed].sort((a, b) => b - a),
        );
      }),
      { numRuns: 200 },
    );
  });

  test('an item that cannot be created is reported, the others are created, and the next converge tries it again', async () => {
    const broken = new Set(['b']);
    const { acts, r } = rig(broken);
    const d = emptyDesired();
    for (const name of ['a', 'b', 'c']) d.ports.set(name, { name, source: 'config', raw: { name }, spec: undefined });
    const first = await r.converge(d);
    assert.deepEqual(
      first.failed.map((f) => [f.item, f.code]),
      [['ports/b', 'ERR_TEST']],
    );
    assert.match(first.failed[0]?.reason ?? '', /b is broken/);
    assert.deepEqual([...acts.ports.items.keys()], ['a', 'c']);
    broken.clear();
    const second = await r.converge(d);
    assert.deepEqual([second.created, second.removed, second.failed], [['ports/b'], [], []]);
  });

  test('an API change whose store write fails is undone and leaves the desired state as it was', async () => {
    const { acts, r } = rig();
    const item: DesiredItem = { name: 'n', source: 'api', raw: { name: 'n' }, spec: undefined };
    await assert.rejects(
      r.apply('networks', item, async () => {
        throw new Error('disk full');
      }),
      /disk full/,
    );
    assert.equal(acts.networks.items.size, 0);
    assert.equal(r.desired.networks.has('n'), false);
    await r.apply('networks', item, async () => undefined);
    assert.equal(r.desired.networks.get('n'), item);
    await assert.rejects(
      r.remove('networks', 'n', async () => {
        throw new Error('disk full');
      }),
      /disk full/,
    );
    assert.ok(acts.networks.items.has('n'), 'a removal whose store write fails changes nothing');
  });
});
