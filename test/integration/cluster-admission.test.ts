/**
 * Fabric admission (src/cluster/admission.ts) against a real etcd: two
 * "hosts" are two etcd clients, each with its own FabricAdmission, admitting
 * reservations on one shared link capacity.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Etcd3, type Namespace } from 'etcd3';
import { createFabricAdmission, type FabricAdmission, pairKey } from '../../src/cluster/admission.js';
import type { AdmissionRecord } from '../../src/cluster/admission-record.js';
import { EtcdConnection } from '../../src/cluster/etcd.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';
import { recording } from '../helpers/overlay-rig.js';

const MBIT = 1_000_000;

describe('fabric admission over etcd', () => {
  let etcd: EtcdCluster;
  const clients: Etcd3[] = [];

  /** A fresh fabric prefix seen by one etcd client per host: no test sees another's keys. */
  function fabric(hosts: string[], logger = silentLogger()): { kv: Namespace[]; fa: FabricAdmission[] } {
    const prefix = `/vmlink-test-${randomBytes(4).toString('hex')}/`;
    const kv = hosts.map(() => {
      const c = new Etcd3({ hosts: etcd.endpoints });
      clients.push(c);
      return c.namespace(prefix);
    });
    return { kv, fa: hosts.map((host, i) => createFabricAdmission({ kv: kv[i] as Namespace, host, logger })) };
  }

  async function record(kv: Namespace, link: string): Promise<AdmissionRecord | null> {
    const v = await kv.get(`admission/${link}`).string();
    return v === null ? null : (JSON.parse(v) as AdmissionRecord);
  }

  const total = (r: AdmissionRecord | null) => Object.values(r?.reservations ?? {}).reduce((a, b) => a + b, 0);

  before(async () => {
    etcd = await startEtcd({ members: 1 });
  });

  after(async () => {
    for (const c of clients) c.close();
    await etcd?.stop();
  });

  it('names a link between two hosts by the same key from both ends', () => {
    assert.equal(pairKey('b', 'a'), 'a~b');
    assert.equal(pairKey('a', 'b'), 'a~b');
  });

  it('admits exactly the reservations that fit when two hosts race many at once, and no revision of the record ever holds more than the capacity', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const link = pairKey('a', 'b');
    const capacity = 100 * MBIT;
    // 2 hosts × 30 ports × 7 Mbit/s = 420 Mbit/s asked: 14 fit.
    const asks = [0, 1].flatMap((h) =>
      Array.from({ length: 30 }, (_, i) => (fa[h] as FabricAdmission).admit(link, capacity, `vm${i}`, 7 * MBIT)),
    );
    const results = await Promise.allSettled(asks);
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    assert.equal(ok, 14, `admitted ${ok}; failures: ${refused.map((e) => e.message).join(' | ')}`);
    for (const e of refused) {
      assert.ok(hasCode(e, 'ERR_QOS_ADMISSION'), `${e.message}`);
      assert.match(e.message, /link "a~b" has capacity 100mbit/);
    }
    const r = await record(kv[0] as Namespace, link);
    assert.equal(Object.keys(r?.reservations ?? {}).length, 14);
    assert.equal(total(r), 98 * MBIT);
    assert.equal(r?.capacity_bps, capacity);
    // Every revision the key went through, not only the last.
    const head = await (kv[0] as Namespace).get(`admission/${link}`).exec();
    const first = Number(head.kvs[0]?.create_revision);
    const last = Number(head.kvs[0]?.mod_revision);
    let versions = 0;
    for (let rev = first; rev <= last; rev++) {
      const v = await (kv[0] as Namespace).get(`admission/${link}`).revision(rev).string();
      if (v === null) continue;
      versions++;
      assert.ok(total(JSON.parse(v) as AdmissionRecord) <= capacity, `revision ${rev} holds ${v}`);
    }
    assert.ok(versions >= 2, `saw ${versions} versions of the record`);
  });

  it('admits exactly what fits when two hosts each ask one port after another as fast as etcd answers', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const link = pairKey('a', 'b');
    const failures: Error[] = [];
    let ok = 0;
    // 2 hosts × 40 ports × 1 Mbit/s on 50 Mbit/s: every transaction races the other host's next one.
    await Promise.all(
      fa.map(async (f) => {
        for (let i = 0; i < 40; i++) {
          try {
            await f.admit(link, 50 * MBIT, `vm${i}`, MBIT);
            ok++;
          } catch (err) {
            failures.push(err as Error);
          }
        }
      }),
    );
    assert.equal(ok, 50);
    assert.equal(total(await record(kv[0] as Namespace, link)), 50 * MBIT);
    // A refusal, or (rarely) a request that lost every one of its transactions to the other host: never anything else.
    for (const e of failures)
      assert.ok(hasCode(e, 'ERR_QOS_ADMISSION') || hasCode(e, 'ERR_CLUSTER_CONFLICT'), e.message);
  });

  it('refuses with the fabric-wide sum and its holders, and a release frees room another host can take', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const [a, b] = fa as [FabricAdmission, FabricAdmission];
    const link = pairKey('a', 'b');
    await a.admit(link, 10 * MBIT, 'vm1', 6 * MBIT);
    await b.admit(link, 10 * MBIT, 'vm2', 3 * MBIT);
    await assert.rejects(b.admit(link, 10 * MBIT, 'vm3', 2 * MBIT), (e: Error) => {
      assert.ok(hasCode(e, 'ERR_QOS_ADMISSION'));
      assert.match(e.message, /link "a~b" has capacity 10mbit/);
      assert.match(e.message, /would total 11mbit \(a\/vm1 6mbit, b\/vm2 3mbit, b\/vm3 2mbit\)/);
      assert.match(e.message, /port "vm3" of host "b" can reserve at most 1mbit there, nothing was changed/);
      return true;
    });
    assert.equal(total(await record(kv[0] as Namespace, link)), 9 * MBIT);
    await a.release(link, 'vm1');
    await b.admit(link, 10 * MBIT, 'vm3', 2 * MBIT);
    assert.deepEqual((await record(kv[1] as Namespace, link))?.reservations, { 'b/vm2': 3 * MBIT, 'b/vm3': 2 * MBIT });
    // The last release deletes the key.
    await b.release(link, 'vm2');
    await b.admit(link, 10 * MBIT, 'vm3', 0);
    assert.equal(await record(kv[0] as Namespace, link), null);
  });

  it('replaces a port reservation when it asks again instead of adding to it', async () => {
    const { kv, fa } = fabric(['a']);
    const a = fa[0] as FabricAdmission;
    await a.admit('wan', 10 * MBIT, 'vm1', 8 * MBIT);
    await a.admit('wan', 10 * MBIT, 'vm1', 9 * MBIT);
    assert.deepEqual((await record(kv[0] as Namespace, 'wan'))?.reservations, { 'a/vm1': 9 * MBIT });
  });

  it('bounds the sum by the smaller capacity when the two ends state different ones', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const [a, b] = fa as [FabricAdmission, FabricAdmission];
    const link = pairKey('a', 'b');
    await a.admit(link, 20 * MBIT, 'vm1', 5 * MBIT);
    await b.admit(link, 10 * MBIT, 'vm2', 4 * MBIT);
    await assert.rejects(a.admit(link, 20 * MBIT, 'vm3', 2 * MBIT), (e: Error) => {
      assert.ok(hasCode(e, 'ERR_QOS_ADMISSION'));
      assert.match(e.message, /capacity 10mbit \(as stated by b\)/);
      return true;
    });
    const r = await record(kv[0] as Namespace, link);
    assert.equal(r?.capacity_bps, 10 * MBIT);
    assert.deepEqual(r?.capacities, { a: 20 * MBIT, b: 10 * MBIT });
  });

  it('grants asking for less even where a lowered capacity is already exceeded, and refuses asking for more there', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const [a, b] = fa as [FabricAdmission, FabricAdmission];
    await a.admit('a~b', 10 * MBIT, 'vm1', 5 * MBIT);
    await b.admit('a~b', 10 * MBIT, 'vm2', 4 * MBIT);
    // a's end of the link was re-configured to 6 Mbit/s: 9 are reserved.
    await a.admit('a~b', 6 * MBIT, 'vm1', 4 * MBIT);
    const r = await record(kv[0] as Namespace, 'a~b');
    assert.equal(r?.capacity_bps, 6 * MBIT);
    assert.equal(total(r), 8 * MBIT);
    await assert.rejects(b.admit('a~b', 10 * MBIT, 'vm2', 5 * MBIT), (e: Error) => {
      assert.match(e.message, /capacity 6mbit \(as stated by a\)/);
      assert.match(e.message, /can reserve at most 2mbit there/);
      return true;
    });
  });

  it('puts back the links already changed when a reservation over several links is refused on one', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const [a, b] = fa as [FabricAdmission, FabricAdmission];
    await a.admit('a~b', 10 * MBIT, 'vm1', 2 * MBIT);
    await b.admit('a~c', 10 * MBIT, 'vm9', 9 * MBIT);
    const links = [
      { key: 'a~b', capacityBps: 10 * MBIT },
      { key: 'a~c', capacityBps: 10 * MBIT },
    ];
    await assert.rejects(a.reserve(links, 'vm1', 4 * MBIT), (e: Error) => hasCode(e, 'ERR_QOS_ADMISSION'));
    assert.deepEqual((await record(kv[0] as Namespace, 'a~b'))?.reservations, { 'a/vm1': 2 * MBIT });
    assert.deepEqual((await record(kv[0] as Namespace, 'a~c'))?.reservations, { 'b/vm9': 9 * MBIT });
    await a.reserve(links, 'vm1', 1 * MBIT);
    assert.deepEqual((await record(kv[0] as Namespace, 'a~c'))?.reservations, { 'a/vm1': MBIT, 'b/vm9': 9 * MBIT });
  });

  it('sweeps the reservations and stated capacity of a host that is gone and keeps the living ones', async () => {
    const { kv, fa } = fabric(['a', 'b', 'c']);
    const [a, b, c] = fa as [FabricAdmission, FabricAdmission, FabricAdmission];
    await a.admit('a~b', 10 * MBIT, 'vm1', 2 * MBIT);
    await b.admit('a~b', 8 * MBIT, 'vm2', 3 * MBIT);
    await b.admit('b~c', 10 * MBIT, 'vm2', 3 * MBIT);
    await b.admit('b~c', 10 * MBIT, 'vm3', 1 * MBIT);
    await c.admit('b~c', 10 * MBIT, 'vm4', 1 * MBIT);
    // b died: a notices and sweeps (c at the same time: the transactions keep it to one removal each).
    const [na, nc] = await Promise.all([a.sweep(new Set(['a', 'c'])), c.sweep(new Set(['a', 'c']))]);
    assert.equal(na + nc, 3);
    const ab = await record(kv[0] as Namespace, 'a~b');
    assert.deepEqual(ab?.reservations, { 'a/vm1': 2 * MBIT });
    assert.deepEqual(ab?.capacities, { a: 10 * MBIT });
    assert.equal(ab?.capacity_bps, 10 * MBIT);
    assert.deepEqual((await record(kv[0] as Namespace, 'b~c'))?.reservations, { 'c/vm4': MBIT });
    assert.equal(await a.sweep(new Set(['a', 'c'])), 0);
    const view = await c.view();
    assert.deepEqual(
      view.map((v) => [v.link, v.record?.reserved_bps]),
      [
        ['a~b', 2 * MBIT],
        ['b~c', MBIT],
      ],
    );
  });

  it('prunes the reservations of this host that it no longer holds and leaves the other hosts alone', async () => {
    const { kv, fa } = fabric(['a', 'b']);
    const [a, b] = fa as [FabricAdmission, FabricAdmission];
    await a.admit('a~b', 10 * MBIT, 'vm1', MBIT);
    await a.admit('a~b', 10 * MBIT, 'vm2', MBIT);
    await a.admit('a~c', 10 * MBIT, 'vm1', MBIT);
    await b.admit('a~b', 10 * MBIT, 'vm2', MBIT);
    assert.equal(await a.prune(new Map([['a~b', new Set(['vm1'])]])), 2);
    assert.deepEqual((await record(kv[0] as Namespace, 'a~b'))?.reservations, { 'a/vm1': MBIT, 'b/vm2': MBIT });
    assert.equal(await record(kv[0] as Namespace, 'a~c'), null);
    assert.equal(await a.prune(new Map([['a~b', new Set(['vm1'])]])), 0);
  });

  it('reports a corrupt value at a link key and refuses admission there as unavailable, not as nothing reserved', async () => {
    const rec = recording();
    const { kv, fa } = fabric(['a'], rec.logger);
    const a = fa[0] as FabricAdmission;
    const k = kv[0] as Namespace;
    await k.put('admission/a~b').value('{"capacity_bps": 1000');
    await k.put('admission/a~c').value(JSON.stringify({ capacity_bps: 1e7, reservations: { 'c/vm': 'lots' } }));
    for (const [link, why] of [
      ['a~b', /not JSON/],
      ['a~c', /reservations\["c\/vm"\] "lots" is not a rate/],
    ] as const) {
      for (let i = 0; i < 2; i++)
        await assert.rejects(a.admit(link, 10 * MBIT, 'vm1', MBIT), (e: Error) => {
          assert.ok(hasCode(e, 'ERR_CLUSTER_UNAVAILABLE'), e.message);
          assert.match(e.message, new RegExp(`the value of admission/${link} in etcd is not valid`));
          assert.match(e.message, new RegExp(`link "${link}" admits and releases no reservation`));
          assert.match(e.message, why);
          return true;
        });
      // Reported once per bad value, by key.
      assert.equal(rec.lines.filter((l) => l['key'] === `admission/${link}`).length, 1);
    }
    await assert.rejects(a.release('a~b', 'vm1'), (e: Error) => hasCode(e, 'ERR_CLUSTER_UNAVAILABLE'));
    // Other links are not affected; the view shows the problem.
    await a.admit('a~d', 10 * MBIT, 'vm1', MBIT);
    const view = await a.view();
    assert.match(view.find((v) => v.link === 'a~b')?.problem ?? '', /not JSON/);
    assert.equal(view.find((v) => v.link === 'a~d')?.record?.reserved_bps, MBIT);
    // A sweep leaves what it cannot read alone (it was reported).
    assert.equal(await a.sweep(new Set(['a'])), 0);
    // Deleting the bad key makes the link admit again.
    await k.delete().key('admission/a~b');
    await a.admit('a~b', 10 * MBIT, 'vm1', MBIT);
  });

  it('refuses with ERR_CLUSTER_UNAVAILABLE when etcd is away and admits again once it is back', async () => {
    const own = await startEtcd({ members: 1 });
    // As the daemon wires it: the connection's namespace and its run() (deadline, health state).
    const conn = new EtcdConnection({
      endpoints: own.endpoints,
      prefix: '/vmlink-test/',
      logger: silentLogger(),
      opTimeoutMs: 1000,
    });
    try {
      const a = createFabricAdmission({
        kv: conn.kv,
        host: 'a',
        logger: silentLogger(),
        run: (w, op) => conn.run(w, op),
      });
      await a.admit('a~b', 10 * MBIT, 'vm1', MBIT);
      await own.killAll();
      for (const ask of [
        () => a.admit('a~b', 10 * MBIT, 'vm2', MBIT),
        () => a.release('a~b', 'vm1'),
        () => a.view(),
        () => a.sweep(new Set(['a'])),
      ])
        await assert.rejects(ask(), (e: Error) => {
          assert.ok(hasCode(e, 'ERR_CLUSTER_UNAVAILABLE'), e.message);
          assert.match(e.message, /etcd endpoints are unreachable/);
          return true;
        });
      await own.startAll();
      const deadline = Date.now() + 60_000;
      for (;;) {
        try {
          await a.admit('a~b', 10 * MBIT, 'vm2', MBIT);
          break;
        } catch (err) {
          if (!hasCode(err, 'ERR_CLUSTER_UNAVAILABLE') || Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      const v = await conn.kv.get('admission/a~b').string();
      assert.deepEqual((JSON.parse(v ?? '{}') as AdmissionRecord).reservations, { 'a/vm1': MBIT, 'a/vm2': MBIT });
    } finally {
      await conn.close();
      await own.stop();
    }
  });

  it('refuses with ERR_CLUSTER_UNAVAILABLE on a bare etcd client too (its own deadline)', async () => {
    const own = await startEtcd({ members: 1 });
    const client = new Etcd3({ hosts: own.endpoints });
    try {
      const a = createFabricAdmission({
        kv: client.namespace('/t/'),
        host: 'a',
        logger: silentLogger(),
        opTimeoutMs: 1000,
      });
      await a.admit('a~b', 10 * MBIT, 'vm1', MBIT);
      await own.killAll();
      await assert.rejects(a.admit('a~b', 10 * MBIT, 'vm2', MBIT), (e: Error) => hasCode(e, 'ERR_CLUSTER_UNAVAILABLE'));
    } finally {
      client.close();
      await own.stop();
    }
  });
});
