/**
 * ClusterAgent against a real etcd: several agents in one process, each with
 * its own connection (as separate hosts would have), a recording sink and a
 * fake MAC source standing in for the switch.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ClusterAgent, type ClusterAgentOptions } from '../../src/cluster/agent.js';
import { EtcdConnection } from '../../src/cluster/etcd.js';
import type { LocationSink, MacEvent, MacSource } from '../../src/cluster/locations.js';
import type { HostView } from '../../src/cluster/membership.js';
import { silentLogger } from '../../src/log.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';

const PREFIX = `/vmlink-agent-${process.pid}/`;
const MAC1 = '52:54:00:00:00:01';

class RecSink implements LocationSink {
  readonly at = new Map<string, { host: string; seq: number }>();
  install(network: string, mac: string, host: string, seq: number): void {
    this.at.set(`${network}/${mac}`, { host, seq });
  }
  withdraw(network: string, mac: string, host: string): void {
    if (this.at.get(`${network}/${mac}`)?.host === host) this.at.delete(`${network}/${mac}`);
  }
}

class FakeMacs implements MacSource {
  readonly #fns = new Set<(ev: MacEvent) => void>();
  readonly macs = new Map<string, { network: string; mac: string; port: string }>();
  onMacEvent(fn: (ev: MacEvent) => void): () => void {
    this.#fns.add(fn);
    return () => this.#fns.delete(fn);
  }
  localMacs() {
    return [...this.macs.values()];
  }
  emit(type: MacEvent['type'], network: string, mac: string, port: string): void {
    if (type === 'forgotten') this.macs.delete(`${network}/${mac}`);
    else this.macs.set(`${network}/${mac}`, { network, mac, port });
    for (const fn of this.#fns) fn({ type, network, mac, port, local: true });
  }
}

interface Host {
  id: string;
  conn: EtcdConnection;
  agent: ClusterAgent;
  sink: RecSink;
  macs: FakeMacs;
  views: HostView[][];
}

/** Polls `ok` (an error counts as not yet: etcd3's circuit breaker refuses calls for a while after an outage). */
async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (
    !(await Promise.resolve()
      .then(ok)
      .catch(() => false))
  ) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('cluster agent', () => {
  let etcd: EtcdCluster;
  let raw: EtcdConnection;
  const hosts: Host[] = [];

  const connect = () => new EtcdConnection({ endpoints: etcd.endpoints, prefix: PREFIX, logger: silentLogger() });

  async function host(id: string, opts: Partial<ClusterAgentOptions> = {}, macs = new FakeMacs()): Promise<Host> {
    const conn = connect();
    const sink = new RecSink();
    const views: HostView[][] = [];
    const agent = new ClusterAgent({
      conn,
      host: id,
      logger: silentLogger(),
      sink,
      macs,
      member: {
        overlay: `tcp:127.0.0.1:${7000 + hosts.length}`,
        reachable: true,
        relay: false,
        issuer: false,
        joined: new Date().toISOString(),
      },
      hostsChanged: (v) => views.push(v),
      ...opts,
    });
    const h = { id, conn, agent, sink, macs, views };
    hosts.push(h);
    await agent.start();
    await agent.ready();
    return h;
  }

  const revision = async () => Number((await raw.kv.get('none').exec()).header.revision);
  const stored = async (key: string) => {
    const v = await raw.kv.get(key).string();
    return v === null ? null : (JSON.parse(v) as { host: string; port: string; seq: number });
  };

  before(async () => {
    etcd = await startEtcd();
    raw = connect();
  });

  after(async () => {
    for (const h of hosts) {
      await h.agent.close().catch(() => {});
      await h.conn.close();
    }
    await raw?.close();
    await etcd?.stop();
  });

  let a: Host;
  let b: Host;
  let c: Host;

  test('every agent sees every host up with its record, networks and links', async () => {
    a = await host('a');
    b = await host('b');
    c = await host('c');
    a.agent.setNetworks(['lan']);
    a.agent.setLinks([{ name: 'to-b', peer: 'b', state: 'up' }]);
    for (const h of [a, b, c]) {
      await until(`${h.id} sees a, b, c up`, () => {
        const v = h.agent.hosts();
        return v.length === 3 && v.every((x) => x.state === 'up') && v[0]?.links.length === 1;
      });
      const [va] = h.agent.hosts();
      assert.equal(va?.id, 'a');
      assert.deepEqual(va?.networks, ['lan']);
      assert.deepEqual(va?.links, [{ name: 'to-b', peer: 'b', state: 'up' }]);
      assert.equal(va?.member?.overlay, 'tcp:127.0.0.1:7000');
      assert.ok((va?.leaseAgeMs ?? -1) >= 0);
      await until(`${h.id} was told of the hosts`, () => (h.views.at(-1)?.length ?? 0) === 3);
    }
  });

  test('rewrites the alive record only when the networks or links change', async () => {
    const r0 = await revision();
    a.agent.setNetworks(['lan']);
    a.agent.setLinks([{ name: 'to-b', peer: 'b', state: 'up' }]);
    a.agent.setNetworks(['lan', 'dmz']);
    await until('b sees dmz at a', () => b.agent.hosts()[0]?.networks.includes('dmz') === true);
    assert.equal(await revision(), r0 + 1);
  });

  test('a MAC learned at A is installed at B and C with seq 1, in one etcd write', async () => {
    const r0 = await revision();
    a.macs.emit('learned', 'lan', MAC1, 'vm1');
    for (const h of [b, c]) await until(`${h.id} installs the MAC`, () => h.sink.at.get(`lan/${MAC1}`)?.host === 'a');
    assert.deepEqual(b.sink.at.get(`lan/${MAC1}`), { host: 'a', seq: 1 });
    assert.deepEqual(c.sink.at.get(`lan/${MAC1}`), { host: 'a', seq: 1 });
    assert.equal(a.sink.at.has(`lan/${MAC1}`), false);
    assert.deepEqual(await stored(`locations/lan/${MAC1}`), { host: 'a', port: 'vm1', seq: 1 });
    assert.equal(await revision(), r0 + 1);
  });

  test('a MAC moved to B gets seq 2 and A and C point at B', async () => {
    const r0 = await revision();
    b.macs.emit('moved', 'lan', MAC1, 'vm1-dst');
    for (const h of [a, c]) await until(`${h.id} points at b`, () => h.sink.at.get(`lan/${MAC1}`)?.host === 'b');
    assert.deepEqual(a.sink.at.get(`lan/${MAC1}`), { host: 'b', seq: 2 });
    assert.deepEqual(c.sink.at.get(`lan/${MAC1}`), { host: 'b', seq: 2 });
    assert.deepEqual(await stored(`locations/lan/${MAC1}`), { host: 'b', port: 'vm1-dst', seq: 2 });
    assert.equal(await revision(), r0 + 1);
    await until('a no longer publishes the MAC', () => a.agent.stats().local === 0);
  });

  test('a MAC aged out at its owner is withdrawn everywhere', async () => {
    const mac = '52:54:00:00:00:02';
    c.macs.emit('learned', 'lan', mac, 'vm2');
    await until('a installs it', () => a.sink.at.has(`lan/${mac}`));
    c.macs.emit('forgotten', 'lan', mac, 'vm2');
    for (const h of [a, b]) await until(`${h.id} withdraws it`, () => !h.sink.at.has(`lan/${mac}`));
    assert.equal(await stored(`locations/lan/${mac}`), null);
  });

  test('a corrupt value under locations/ is skipped and reported by key; the next value is taken', async () => {
    const bad = 'locations/lan/52:54:00:00:00:0b';
    await raw.kv.put(bad).value('{not json');
    await raw.kv.put('locations/lan/52:54:00:00:00:0c').value(JSON.stringify({ host: 'x', port: 'p', seq: 'one' }));
    await raw.kv.put('locations/lan/52:54:00:00:00:0d').value(JSON.stringify({ host: 'x', port: 'p', seq: 4 }));
    await until('b installs the good one', () => b.sink.at.get('lan/52:54:00:00:00:0d')?.seq === 4);
    assert.deepEqual(b.agent.corruptKeys(), [bad, 'locations/lan/52:54:00:00:00:0c']);
    assert.equal(b.sink.at.has('lan/52:54:00:00:00:0b'), false);
    await raw.kv.delete().prefix('locations/lan/52:54:00:00:00:0');
  });

  test('a MAC flapping between hosts is frozen: the hosts stop claiming it', async () => {
    const d = await host('d', { damping: { moves: 3, windowMs: 60_000, holdMs: 60_000 } });
    const e = await host('e', { damping: { moves: 3, windowMs: 60_000, holdMs: 60_000 } });
    const mac = '52:54:00:00:00:0f';
    const key = `locations/lan/${mac}`;
    for (let i = 0; i < 6; i++) {
      const [h, other] = i % 2 === 0 ? [d, e] : [e, d];
      h.macs.emit('moved', 'lan', mac, `p${i}`);
      await until(`move ${i} is stored or the MAC frozen`, async () => {
        return (await stored(key))?.host === h.id || h.agent.stats().frozen > 0;
      });
      if (h.agent.stats().frozen > 0) break;
      await until(`${other.id} follows move ${i}`, () => other.sink.at.get(`lan/${mac}`)?.host === h.id);
    }
    await until('both froze it', () => d.agent.stats().frozen === 1 && e.agent.stats().frozen === 1);
    const before = await stored(key);
    const loser = before?.host === 'd' ? e : d;
    loser.macs.emit('moved', 'lan', mac, 'again');
    loser.macs.emit('learned', 'lan', '52:54:00:00:00:10', 'marker');
    await until('the marker is published', async () => (await stored('locations/lan/52:54:00:00:00:10')) !== null);
    await until('the frozen MAC is dropped locally', () => loser.agent.stats().local === 1);
    assert.deepEqual(await stored(key), before);
  });

  test('a host that stops renewing is down everywhere after its TTL, its MACs withdrawn; it rejoins', async () => {
    const macs = new FakeMacs();
    const k = await host('k', { ttlSec: 2 }, macs);
    const mac = '52:54:00:00:00:0a';
    macs.emit('learned', 'lan', mac, 'vmk');
    await until('a installs k’s MAC', () => a.sink.at.get(`lan/${mac}`)?.host === 'k');
    // As SIGKILL would: no revoke, the connection simply goes.
    await k.agent.close({ revoke: false });
    await k.conn.close();
    for (const h of [a, b, c]) {
      await until(`${h.id} sees k down`, () => h.agent.hosts().find((x) => x.id === 'k')?.state === 'down');
      await until(`${h.id} withdraws k’s MAC`, () => !h.sink.at.has(`lan/${mac}`));
    }
    const down = a.agent.hosts().find((x) => x.id === 'k');
    assert.equal(down?.leaseAgeMs, null);
    assert.ok(down?.since);
    await host('k', { ttlSec: 2 }, macs);
    await until('a sees k up again', () => a.agent.hosts().find((x) => x.id === 'k')?.state === 'up');
    await until('a installs k’s MAC again', () => a.sink.at.get(`lan/${mac}`)?.host === 'k');
  });

  test('an etcd outage longer than the TTL: afterwards the host is up everywhere with its records and MACs', async () => {
    const macs = new FakeMacs();
    const o = await host('o', { ttlSec: 2 }, macs);
    const mac = '52:54:00:00:00:0e';
    macs.emit('learned', 'lan', mac, 'vmo');
    await until('a installs o’s MAC', () => a.sink.at.get(`lan/${mac}`)?.host === 'o');
    await etcd.killAll();
    await new Promise((r) => setTimeout(r, 5000)); // the outage must outlast the TTL: no event marks its length
    await etcd.startAll();
    await until('o is registered', () => o.agent.registered, 60_000);
    const current = async (key: string) => (await raw.kv.get(key).exec()).kvs[0]?.lease;
    await until('alive/o is bound to o’s lease', async () => (await current('alive/o')) === o.agent.leaseId, 60_000);
    await until(
      'o’s MAC is bound to o’s lease',
      async () => (await current(`locations/lan/${mac}`)) === o.agent.leaseId,
    );
    for (const h of [a, b]) {
      await until(`${h.id} sees o up`, () => h.agent.hosts().find((x) => x.id === 'o')?.state === 'up', 60_000);
      await until(`${h.id} has o’s MAC`, () => h.sink.at.get(`lan/${mac}`)?.host === 'o', 60_000);
    }
    assert.deepEqual(await stored(`locations/lan/${mac}`), { host: 'o', port: 'vmo', seq: 1 });
  });

  test('a host whose lease is lost registers again and writes its records and MACs under the new lease', async () => {
    const macs = new FakeMacs();
    const r = await host('r', { ttlSec: 2 }, macs);
    const mac = '52:54:00:00:00:1e';
    macs.emit('learned', 'lan', mac, 'vmr');
    await until('a installs r’s MAC', () => a.sink.at.get(`lan/${mac}`)?.host === 'r');
    const lease0 = r.agent.leaseId as string;
    // etcd ends the lease (as when it expired while the host could not reach etcd): its keys go with it.
    await raw.kv.leaseClient.leaseRevoke({ ID: lease0 });
    await until('r has a new lease', () => r.agent.leaseId !== undefined && r.agent.leaseId !== lease0);
    const current = async (key: string) => (await raw.kv.get(key).exec()).kvs[0]?.lease;
    await until('alive/r is back under the new lease', async () => (await current('alive/r')) === r.agent.leaseId);
    await until(
      'r’s MAC is back under the new lease',
      async () => (await current(`locations/lan/${mac}`)) === r.agent.leaseId,
    );
    await until('b sees r up', () => b.agent.hosts().find((x) => x.id === 'r')?.state === 'up');
    await until('b has r’s MAC', () => b.sink.at.get(`lan/${mac}`)?.host === 'r');
  });
});
