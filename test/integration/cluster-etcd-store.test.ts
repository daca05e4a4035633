/**
 * The etcd state store against real etcd: the StateStore round trip, two
 * hosts sharing networks but not ports, watch(), unique VNIs across hosts,
 * corrupt values, importState() and its conflicts, etcd away, and a
 * 3-member cluster that lost one member.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { EtcdConnection } from '../../src/cluster/etcd.js';
import { createEtcdStore, type EtcdStore } from '../../src/control/etcd-store.js';
import type { StoredState } from '../../src/control/store.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';

async function waitFor(pred: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Index of the member that leads the cluster. */
async function leaderIndex(endpoints: string[]): Promise<number> {
  const ids: string[] = [];
  let leader = '';
  for (const e of endpoints) {
    const c = new Etcd3({ hosts: e });
    const st = await c.maintenance.status();
    c.close();
    ids.push(st.header.member_id);
    leader = st.leader;
  }
  return Math.max(0, ids.indexOf(leader));
}

const names = (items: { name: string }[] | undefined) => (items ?? []).map((i) => i.name);
const net = (name: string, vni: number) => ({ name, vni });
const port = (name: string, network = 'lan') => ({ name, kind: 'stream', network });

describe('cluster etcd store', () => {
  let etcd: EtcdCluster;
  let writer: Etcd3;
  const open: { close(): Promise<void> }[] = [];

  /** A connection and a store for `host` under `prefix`, closed in after(). */
  function storeFor(host: string, prefix: string, endpoints = etcd.endpoints, logger = silentLogger()) {
    const conn = new EtcdConnection({ endpoints, prefix, logger });
    const store = createEtcdStore({ conn, host, logger });
    open.push(store, conn);
    return store;
  }

  before(async () => {
    etcd = await startEtcd();
    writer = new Etcd3({ hosts: etcd.endpoints });
  });
  after(async () => {
    for (const o of open) await o.close();
    writer?.close();
    await etcd?.stop();
  });

  it('stores, replaces and forgets networks, ports, exports and links, loading them in the order first stored', async () => {
    const s = storeFor('h1', '/rt/');
    assert.deepEqual(await s.load(), { networks: [], ports: [], exports: [] });
    await s.putNetwork(net('lan', 10));
    await s.putNetwork(net('dmz', 20));
    await s.putPort(port('vm2'));
    await s.putPort(port('vm1'));
    await s.putExport({ name: 'disk0', backend: { path: '/img/a.raw' } });
    await s.putLink({ name: 'to-b', connect: 'tcp:10.0.0.2:7000' });
    await s.putNetwork({ name: 'lan', vni: 10, mtu: 9000 });
    let state = await s.load();
    assert.deepEqual(names(state.networks), ['lan', 'dmz']);
    assert.deepEqual(state.networks[0], { name: 'lan', vni: 10, mtu: 9000 });
    assert.deepEqual(names(state.ports), ['vm2', 'vm1']);
    assert.deepEqual(names(state.exports), ['disk0']);
    assert.deepEqual(names(state.links), ['to-b']);
    await s.deletePort('vm2');
    await s.deleteNetwork('dmz');
    await s.deleteLink('to-b');
    await s.deleteExport('disk0');
    await s.deletePort('never-was');
    state = await s.load();
    assert.deepEqual(state, { networks: [{ name: 'lan', vni: 10, mtu: 9000 }], ports: [port('vm1')], exports: [] });
    // A renumbered network frees its old VNI.
    await s.putNetwork(net('lan', 11));
    await s.putNetwork(net('other', 10));
  });

  it('shows two hosts the same networks but each only its own ports', async () => {
    const a = storeFor('a', '/two/');
    const b = storeFor('b', '/two/');
    await a.putNetwork(net('lan', 10));
    await a.putPort(port('vm-a'));
    await b.putPort(port('vm-b'));
    const [sa, sb] = [await a.load(), await b.load()];
    assert.deepEqual(names(sa.networks), ['lan']);
    assert.deepEqual(names(sb.networks), ['lan']);
    assert.deepEqual(names(sa.ports), ['vm-a']);
    assert.deepEqual(names(sb.ports), ['vm-b']);
  });

  it('refuses a VNI that another host gave to another network', async () => {
    const a = storeFor('a', '/vni/');
    const b = storeFor('b', '/vni/');
    await a.putNetwork(net('lan', 10));
    await assert.rejects(
      b.putNetwork(net('dmz', 10)),
      (err) => hasCode(err, 'ERR_VNI_IN_USE') && /"lan"/.test(`${err}`),
    );
    await a.deleteNetwork('lan');
    await b.putNetwork(net('dmz', 10));
  });

  it('lets only one of two hosts racing for one VNI under different names have it', async () => {
    const a = storeFor('a', '/race/');
    const b = storeFor('b', '/race/');
    for (let vni = 1; vni <= 10; vni++) {
      const results = await Promise.allSettled([a.putNetwork(net(`a${vni}`, vni)), b.putNetwork(net(`b${vni}`, vni))]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, `vni ${vni}: ${JSON.stringify(results)}`);
    }
    assert.equal((await a.load()).networks.length, 10);
  });

  it('imports a state larger than one etcd transaction may hold', async () => {
    const s = storeFor('big', '/big/');
    const networks = Array.from({ length: 120 }, (_, i) => net(`n${i}`, 1000 + i));
    const ports = Array.from({ length: 250 }, (_, i) => port(`p${i}`, `n${i % 120}`));
    await s.importState({ networks, ports, exports: [] });
    const state = await s.load();
    // Several transactions; the items of one share a revision and come back in name order.
    assert.deepEqual(names(state.networks).sort(), names(networks).sort());
    assert.deepEqual(names(state.ports).sort(), names(ports).sort());
  });

  it("watch() sees another host's network created and deleted, and a batch of changes as one call", async () => {
    const a = storeFor('a', '/w/');
    const b = storeFor('b', '/w/');
    const calls: StoredState[] = [];
    const stop = a.watch((s) => calls.push(s));
    try {
      await waitFor(() => calls.length === 1, 'the first state');
      assert.deepEqual(calls[0], { networks: [], ports: [], exports: [] });
      await b.putNetwork(net('lan', 10));
      await waitFor(() => names(calls.at(-1)?.networks).includes('lan'), 'the network of host b');
      await b.deleteNetwork('lan');
      await waitFor(() => names(calls.at(-1)?.networks).length === 0, 'the delete');
      // Twenty ports in one transaction: every call sees none or all of them.
      const before = calls.length;
      const ports = Array.from({ length: 20 }, (_, i) => port(`p${i}`));
      await a.importState({ networks: [], ports, exports: [] });
      await waitFor(() => calls.at(-1)?.ports.length === 20, 'the batch');
      assert.deepEqual(
        calls.slice(before).map((c) => c.ports.length),
        [20],
      );
      await b.putPort(port('not-mine'));
      await a.putPort(port('mine'));
      await waitFor(() => names(calls.at(-1)?.ports).includes('mine'), 'the own port');
      assert.ok(!calls.some((c) => names(c.ports).includes('not-mine')));
    } finally {
      stop();
    }
  });

  it('skips a corrupt value, reports its key once, and stays usable', async () => {
    const lines: { level: number; msg: string; key?: string }[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const s = storeFor('h1', '/bad/', etcd.endpoints, logger);
    await s.putNetwork(net('lan', 10));
    await writer.put('/bad/networks/junk').value('{not json');
    await writer.put('/bad/ports/h1/vm1').value('{"name":"vm2"}');
    await writer.put('/bad/ports/h1/vm3').value('[1,2]');
    const state = await s.load();
    assert.deepEqual(names(state.networks), ['lan']);
    assert.deepEqual(state.ports, []);
    await s.load();
    const calls: StoredState[] = [];
    const stop = s.watch((st) => calls.push(st));
    try {
      await waitFor(() => calls.length === 1, 'the first state');
      assert.deepEqual(names(calls[0]?.networks), ['lan']);
    } finally {
      stop();
    }
    assert.deepEqual(s.corrupt.map((c) => c.key).sort(), ['networks/junk', 'ports/h1/vm1', 'ports/h1/vm3']);
    const warned = lines.filter((l) => l.level === 40).map((l) => l.key);
    assert.deepEqual(warned.sort(), ['networks/junk', 'ports/h1/vm1', 'ports/h1/vm3'], 'each reported once');
    await s.putPort(port('vm1'));
    assert.deepEqual(names((await s.load()).ports), ['vm1']);
    assert.deepEqual(s.corrupt.map((c) => c.key).sort(), ['networks/junk', 'ports/h1/vm3']);
  });

  it('imports a host state, keeping networks the fabric already has, and refuses a VNI clash writing nothing', async () => {
    const first = storeFor('a', '/imp/');
    await first.putNetwork(net('lan', 10));
    const s = storeFor('b', '/imp/');
    await s.importState({
      networks: [net('lan', 10), net('dmz', 20)],
      ports: [port('vm1')],
      exports: [{ name: 'disk0' }],
      links: [{ name: 'to-a' }],
    });
    const state = await s.load();
    assert.deepEqual(names(state.networks), ['lan', 'dmz']);
    assert.deepEqual([names(state.ports), names(state.exports), names(state.links)], [['vm1'], ['disk0'], ['to-a']]);

    const c = storeFor('c', '/imp/');
    const clash = { networks: [net('new', 30), net('lan', 11)], ports: [port('vm9')], exports: [] };
    await assert.rejects(c.importState(clash), (err) => {
      assert.ok(hasCode(err, 'ERR_CLUSTER_CONFLICT'));
      assert.match(`${err}`, /network "lan" has VNI 11 on this host but VNI 10 in the fabric/);
      return true;
    });
    const renamed = { networks: [net('lan2', 20)], ports: [port('vm9')], exports: [] };
    await assert.rejects(
      c.importState(renamed),
      /VNI 20 is network "lan2" on this host but network "dmz" in the fabric/,
    );
    const after = await c.load();
    assert.deepEqual(names(after.networks), ['lan', 'dmz']);
    assert.deepEqual(after.ports, []);
  });
});

describe('cluster etcd store when etcd is away', () => {
  let etcd: EtcdCluster;
  let conn: EtcdConnection;
  let store: EtcdStore;

  before(async () => {
    etcd = await startEtcd();
    conn = new EtcdConnection({ endpoints: etcd.endpoints, logger: silentLogger() });
    store = createEtcdStore({ conn, host: 'h1', logger: silentLogger() });
  });
  after(async () => {
    await store?.close();
    await conn?.close();
    await etcd?.stop();
  });

  it('rejects writes and reads with ERR_CLUSTER_UNAVAILABLE, and works again once etcd is back', async () => {
    await store.putNetwork(net('lan', 10));
    await etcd.killAll();
    const t0 = Date.now();
    await assert.rejects(store.putNetwork(net('dmz', 20)), (err) => {
      assert.ok(hasCode(err, 'ERR_CLUSTER_UNAVAILABLE'), `${err}`);
      assert.equal((err as { status?: number }).status, 503);
      assert.match(`${err}`, /cannot store network "dmz": the etcd endpoints are unreachable/);
      return true;
    });
    await assert.rejects(store.putPort(port('vm1')), (err) => hasCode(err, 'ERR_CLUSTER_UNAVAILABLE'));
    await assert.rejects(store.load(), (err) => hasCode(err, 'ERR_CLUSTER_UNAVAILABLE'));
    console.log(`# three calls refused in ${Date.now() - t0} ms while etcd was away`);
    await etcd.startAll();
    await waitFor(() => conn.available, 'etcd back');
    await store.putPort(port('vm1'));
    assert.deepEqual(names((await store.load()).networks), ['lan']);
  });
});

describe('cluster etcd store on a 3-member cluster', () => {
  let etcd: EtcdCluster;
  let conn: EtcdConnection;
  let store: EtcdStore;

  before(async () => {
    etcd = await startEtcd({ members: 3 });
    conn = new EtcdConnection({ endpoints: etcd.endpoints, logger: silentLogger() });
    store = createEtcdStore({ conn, host: 'h1', logger: silentLogger() });
  });
  after(async () => {
    await store?.close();
    await conn?.close();
    await etcd?.stop();
  });

  it('keeps storing, loading and watching with one member (the leader) killed', async () => {
    const calls: StoredState[] = [];
    const stop = store.watch((s) => calls.push(s));
    try {
      await store.putNetwork(net('lan', 10));
      await waitFor(() => names(calls.at(-1)?.networks).includes('lan'), 'the network');
      // The leader: the harder case (a request in flight is lost and a new leader is elected).
      const leader = await leaderIndex(etcd.endpoints);
      await etcd.members[leader]?.kill();
      for (let i = 0; i < 10; i++) await store.putPort(port(`vm${i}`));
      assert.equal((await store.load()).ports.length, 10);
      await waitFor(() => calls.at(-1)?.ports.length === 10, 'the ports through the watch');
      assert.ok(conn.available);
    } finally {
      stop();
    }
  });
});
