import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type AliveRecord, type LinkPlan, type MemberRecord, planLinks } from '../../src/cluster/topology.js';

/** A reachable host listening on 10.0.0.N:7400. */
const reach = (id: string, n: number, relay = false): MemberRecord => ({
  id,
  overlay: `tcp:10.0.0.${n}:7400`,
  reachable: true,
  relay,
});
/** A host that only dials out. */
const out = (id: string): MemberRecord => ({ id, overlay: null, reachable: false, relay: false });
const aliveOf = (nets: Record<string, string[]>): Map<string, AliveRecord> =>
  new Map(Object.entries(nets).map(([h, networks]) => [h, { networks }]));

/** Each host's plan. */
function plans(members: MemberRecord[], alive: Map<string, AliveRecord>): Map<string, LinkPlan> {
  return new Map([...alive.keys()].map((h) => [h, planLinks(h, members, alive)]));
}

/** Every link of the fabric as "dialler>peer", sorted. */
function edges(all: Map<string, LinkPlan>): string[] {
  return [...all].flatMap(([h, p]) => p.links.map((l) => `${h}>${l.peer}`)).sort();
}

describe('planLinks', () => {
  test('three reachable hosts sharing a network get a full mesh, each pair dialled once by the lower id', () => {
    const members = [reach('a', 1), reach('b', 2), reach('c', 3)];
    const all = plans(members, aliveOf({ a: ['lab'], b: ['lab'], c: ['lab'] }));
    assert.deepEqual(edges(all), ['a>b', 'a>c', 'b>c']);
    assert.deepEqual(all.get('a')?.links, [
      { name: 'b', peer: 'b', connect: 'tcp:10.0.0.2:7400' },
      { name: 'c', peer: 'c', connect: 'tcp:10.0.0.3:7400' },
    ]);
    assert.deepEqual(all.get('c')?.links, []);
    assert.deepEqual(all.get('c')?.peers, ['a', 'b']);
    for (const p of all.values()) assert.deepEqual(p.unreachable, []);
  });

  test('hosts that share no network get no link', () => {
    const members = [reach('a', 1), reach('b', 2), reach('c', 3)];
    const all = plans(members, aliveOf({ a: ['lab'], b: ['dev'], c: ['lab', 'dev'] }));
    assert.deepEqual(edges(all), ['a>c', 'b>c']);
    assert.deepEqual(all.get('a')?.peers, ['c']);
  });

  test('a dial-out host dials the reachable host it shares a network with, whatever the ids', () => {
    const members = [reach('z', 1), out('a')];
    const all = plans(members, aliveOf({ z: ['lab'], a: ['lab'] }));
    assert.deepEqual(edges(all), ['a>z']);
    assert.deepEqual(all.get('z')?.peers, ['a']);
    assert.equal(all.get('a')?.hub, undefined, 'no hub is alive');
  });

  test('two dial-out hosts meet through the lowest-id alive relay, which relays for them', () => {
    const members = [reach('r2', 2, true), reach('r1', 1, true), reach('x', 3), out('d1'), out('d2')];
    const alive = aliveOf({ r1: [], r2: ['lab'], x: ['lab'], d1: ['lab'], d2: ['lab'] });
    const all = plans(members, alive);
    assert.deepEqual(edges(all), ['d1>r1', 'd1>r2', 'd1>x', 'd2>r1', 'd2>r2', 'd2>x', 'r2>x']);
    for (const d of ['d1', 'd2']) {
      const p = all.get(d) as LinkPlan;
      assert.equal(p.hub, 'r1');
      assert.deepEqual(p.viaHub, [d === 'd1' ? 'd2' : 'd1']);
      assert.deepEqual(p.unreachable, []);
    }
    assert.deepEqual(all.get('r1')?.relayFor, ['d1', 'd2']);
    assert.deepEqual(all.get('r1')?.peers, ['d1', 'd2']);
    assert.deepEqual(all.get('r2')?.relayFor, [], 'only the hub relays');
    assert.deepEqual(all.get('x')?.relayFor, []);
  });

  test('a dial-out host whose hub is also a mesh peer keeps one link to it', () => {
    const members = [reach('h', 1, true), out('d1'), out('d2')];
    const all = plans(members, aliveOf({ h: ['lab'], d1: ['lab'], d2: ['lab'] }));
    assert.deepEqual(edges(all), ['d1>h', 'd2>h']);
    assert.deepEqual(all.get('h')?.relayFor, ['d1', 'd2']);
  });

  test('two dial-out hosts with no hub alive get nothing, and the plan says why', () => {
    const members = [reach('h', 1, true), out('d1'), out('d2')];
    const p = planLinks('d1', members, aliveOf({ d1: ['lab'], d2: ['lab'] }));
    assert.deepEqual(p.links, []);
    assert.equal(p.hub, undefined);
    assert.equal(p.unreachable.length, 1);
    assert.equal(p.unreachable[0]?.host, 'd2');
    assert.match(p.unreachable[0]?.reason ?? '', /only dial out, and no relay hub is up/);
  });

  test('a reachable host that does not relay is never a hub, nor one whose listener is missing or malformed', () => {
    const members = [
      reach('a', 1),
      { id: 'b', overlay: 'nonsense', reachable: true, relay: true },
      out('d1'),
      out('d2'),
    ];
    const p = planLinks('d1', members, aliveOf({ a: [], b: [], d1: ['lab'], d2: ['lab'] }));
    assert.equal(p.hub, undefined);
    assert.deepEqual(p.links, []);
    assert.deepEqual(
      p.unreachable.map((u) => u.host),
      ['d2'],
    );
  });

  test('hosts that are not alive get no link, and a host without an alive record of its own has no networks', () => {
    const members = [reach('a', 1), reach('b', 2), reach('c', 3)];
    const p = planLinks('a', members, aliveOf({ a: ['lab'], c: ['lab'] }));
    assert.deepEqual(
      p.links.map((l) => l.peer),
      ['c'],
    );
    assert.deepEqual(p.hosts, ['b', 'c'], 'every other member is a fabric host');
    assert.deepEqual(planLinks('b', members, aliveOf({ a: ['lab'], c: ['lab'] })).links, []);
  });

  test('a host that is not a member plans nothing', () => {
    const p = planLinks('q', [reach('a', 1)], aliveOf({ a: ['lab'], q: ['lab'] }));
    assert.deepEqual(p, {
      links: [],
      peers: [],
      hub: undefined,
      viaHub: [],
      relayFor: [],
      hosts: ['a'],
      unreachable: [],
    });
  });

  test('bad records are skipped, not thrown on: invalid ids, repeated ids, non-string networks', () => {
    const members = [
      reach('a', 1),
      { id: 'b/../x', overlay: 'tcp:10.0.0.9:1', reachable: true, relay: false },
      null as unknown as MemberRecord,
      reach('b', 2),
      reach('b', 7),
    ];
    const alive = new Map<string, AliveRecord>([
      ['a', { networks: ['lab', 5 as unknown as string] }],
      ['b', { networks: ['lab'] }],
      ['b/../x', { networks: ['lab'] }],
    ]);
    const p = planLinks('a', members, alive);
    assert.deepEqual(p.links, [{ name: 'b', peer: 'b', connect: 'tcp:10.0.0.2:7400' }]);
    assert.deepEqual(planLinks('a', members, new Map([['b', {} as AliveRecord]])).links, []);
  });

  test('the plan does not depend on the order of the records', () => {
    const members = [reach('r', 5, true), reach('a', 1), reach('b', 2), out('d1'), out('d2'), out('d3')];
    const alive = aliveOf({ r: ['x'], a: ['lab'], b: ['lab', 'x'], d1: ['lab'], d2: ['x'], d3: ['lab', 'x'] });
    const reversed = new Map([...alive].reverse());
    for (const h of alive.keys())
      assert.deepEqual(planLinks(h, [...members].reverse(), reversed), planLinks(h, members, alive), `host ${h}`);
  });

  test('every pair sharing a network is linked exactly once or meets through the hub', () => {
    const members = [reach('r', 5, true), reach('a', 1), reach('b', 2), out('d1'), out('d2'), out('d3')];
    const nets: Record<string, string[]> = {
      r: [],
      a: ['lab'],
      b: ['lab', 'x'],
      d1: ['lab'],
      d2: ['x'],
      d3: ['lab', 'x'],
    };
    const all = plans(members, aliveOf(nets));
    const e = edges(all);
    assert.equal(new Set(e.map((x) => x.split('>').sort().join('-'))).size, e.length, 'no pair is dialled twice');
    const ids = Object.keys(nets);
    for (const x of ids)
      for (const y of ids) {
        if (x >= y || !nets[x]?.some((n) => nets[y]?.includes(n))) continue;
        const direct = e.includes(`${x}>${y}`) || e.includes(`${y}>${x}`);
        const hubbed = all.get(x)?.viaHub.includes(y) && all.get(y)?.viaHub.includes(x);
        assert.ok(direct !== Boolean(hubbed), `${x} and ${y}: direct ${direct}, through the hub ${hubbed}`);
        assert.ok(all.get(x)?.peers.includes(y) === direct && all.get(y)?.peers.includes(x) === direct);
      }
    // Both sides of each link agree: the dialled host lists the dialler among its peers.
    for (const [h, p] of all) for (const l of p.links) assert.ok(all.get(l.peer)?.peers.includes(h), `${h}>${l.peer}`);
  });

  test('a host going down changes only the links that involve it', () => {
    const members = [reach('r', 5, true), reach('a', 1), reach('b', 2), reach('c', 3), out('d1'), out('d2'), out('d3')];
    const nets = { r: [], a: ['lab'], b: ['lab', 'x'], c: ['x'], d1: ['lab'], d2: ['x'], d3: ['lab', 'x'] };
    const before = edges(plans(members, aliveOf(nets)));
    for (const gone of ['a', 'b', 'c', 'd1', 'd2', 'd3']) {
      const rest = Object.fromEntries(Object.entries(nets).filter(([h]) => h !== gone));
      const after = edges(plans(members, aliveOf(rest)));
      const involves = (x: string) => x.split('>').includes(gone);
      assert.deepEqual(
        after,
        before.filter((x) => !involves(x)),
        `after ${gone} went down`,
      );
    }
  });

  test('when the hub goes down, the next relay takes over for the dial-out hosts', () => {
    const members = [reach('h1', 1, true), reach('h2', 2, true), out('d1'), out('d2')];
    const all = plans(members, aliveOf({ h2: [], d1: ['lab'], d2: ['lab'] }));
    assert.deepEqual(edges(all), ['d1>h2', 'd2>h2']);
    assert.deepEqual(all.get('h2')?.relayFor, ['d1', 'd2']);
    assert.equal(all.get('d1')?.hub, 'h2');
  });

  test('link names are the peer ids and fit the link name form, up to 32 characters', () => {
    const long = 'h'.repeat(32);
    const p = planLinks('a', [reach('a', 1), reach(long, 2)], aliveOf({ a: ['lab'], [long]: ['lab'] }));
    assert.deepEqual(
      p.links.map((l) => l.name),
      [long],
    );
    assert.match(p.links[0]?.name ?? '', /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/);
  });
});
