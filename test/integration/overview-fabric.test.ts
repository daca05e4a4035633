/**
 * `GET /v1/overview` of a fabric: two daemons (child processes) joined
 * through a real etcd on loopback, each with an HTTP endpoint it publishes in
 * its member record. Either daemon shows both hosts' ports; a host whose
 * endpoint does not answer (nothing listens, or the daemon is stopped) is
 * `unreachable` with the reason while the rest still answers; garbage from a
 * host's endpoint (not JSON, not an overview, an endless body) is refused,
 * logged, and the daemon stays up.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Etcd3, type Lease } from 'etcd3';
import { ControlClient, type OverviewView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';
import { freeTcpPort } from '../helpers/host-net.js';
import { untilAsync } from '../helpers/overlay-rig.js';

describe('the overview of a fabric of two daemons', { timeout: 300_000 }, () => {
  let etcd: EtcdCluster;
  let a: TestDaemon;
  let b: TestDaemon;
  let kv: Etcd3;
  let ca: ControlClient;
  let cb: ControlClient;
  const leases: Lease[] = [];
  const servers: Server[] = [];

  const ok = async (d: TestDaemon, args: string[]): Promise<string> => {
    const r = await d.cli(args, 60_000);
    assert.equal(r.code, 0, `vmlink ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const portsOf = (o: OverviewView) => o.ports.map((p) => `${p.host}/${p.name}`).sort();
  const host = (o: OverviewView, id: string) => o.hosts.find((h) => h.id === id);

  /** Puts a member and a leased alive record for host `id` that publishes `http`, as a daemon would. */
  const fakeHost = async (id: string, http: string): Promise<void> => {
    const lease = kv.lease(60);
    leases.push(lease);
    await kv
      .put(`/vmlink/members/${id}`)
      .value(
        JSON.stringify({
          id,
          overlay: null,
          reachable: false,
          relay: false,
          issuer: false,
          http,
          joined: new Date().toISOString(),
        }),
      )
      .exec();
    await lease
      .put(`/vmlink/alive/${id}`)
      .value(JSON.stringify({ id, since: new Date().toISOString(), networks: [], links: [] }))
      .exec();
  };

  /** An HTTP server on loopback that answers every request with `answer`; returns its base URL. */
  const fakeEndpoint = async (answer: (res: ServerResponse) => void): Promise<string> => {
    const s = createServer((_req, res) => answer(res));
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
  };

  before(async () => {
    etcd = await startEtcd();
    kv = new Etcd3({ hosts: etcd.endpoints });
    const [pa, pb] = [await freeTcpPort(), await freeTcpPort()];
    const extra = (port: number) => () => ({
      overlay: { listen: `tcp:127.0.0.1:${port}`, plain: true },
      http: { listen: 'tcp:127.0.0.1:0' },
    });
    a = await startDaemon({ hostId: 'a', extra: extra(pa) });
    b = await startDaemon({ hostId: 'b', extra: extra(pb) });
    ca = new ControlClient({ socketPath: a.control });
    cb = new ControlClient({ socketPath: b.control });
    await ok(a, ['network', 'create', 'lab', '--vni', '100']);
    await ok(a, [
      'port',
      'add',
      'vm1',
      '--kind',
      'stream',
      '--network',
      'lab',
      '--listen',
      `unix:${a.path('vm1.sock')}`,
    ]);
    // A free join port: the default (7401) may be taken by another fabric on this machine.
    const join = await freeTcpPort();
    await ok(a, ['cluster', 'init', '--etcd', etcd.endpoints.join(','), '--join-listen', `tcp:127.0.0.1:${join}`]);
    const token = (await ok(a, ['cluster', 'token'])).trim();
    await ok(b, ['cluster', 'join', token]);
    await untilAsync('b has network lab', async () => (await cb.listNetworks()).some((n) => n.name === 'lab'));
    await ok(b, [
      'port',
      'add',
      'vm2',
      '--kind',
      'stream',
      '--network',
      'lab',
      '--listen',
      `unix:${b.path('vm2.sock')}`,
    ]);
    await untilAsync('both hosts up on both', async () => {
      const [sa, sb] = [await ca.cluster(), await cb.cluster()];
      return [sa, sb].every((s) => s.hosts.filter((h) => h.state === 'up').length === 2);
    });
  });

  after(async () => {
    for (const l of leases) await l.revoke().catch(() => undefined);
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    await ca?.close();
    await cb?.close();
    kv?.close();
    await a?.cleanup();
    await b?.cleanup();
    await etcd?.stop();
  });

  test('each member publishes its HTTP endpoint in its member record', async () => {
    const s = await ca.cluster();
    for (const [d, id] of [
      [a, 'a'],
      [b, 'b'],
    ] as const) {
      const bound = (await new ControlClient({ socketPath: d.control }).status()).http?.listen[0] ?? '';
      assert.match(bound, /^tcp:127\.0\.0\.1:\d+$/);
      assert.equal(s.hosts.find((h) => h.id === id)?.http, `http://${bound.slice(4)}`);
    }
  });

  test("either daemon's overview is the fabric's by default and shows both hosts' ports", async () => {
    for (const c of [ca, cb]) {
      await untilAsync('both ports and the network on both hosts', async () => {
        const o = await c.overview();
        return (
          portsOf(o).join() === 'a/vm1,b/vm2' &&
          o.networks
            .find((n) => n.name === 'lab')
            ?.hosts.sort()
            .join() === 'a,b'
        );
      });
      const o = await c.overview();
      assert.equal(o.scope, 'fabric');
      assert.deepEqual(o.hosts.map((h) => [h.id, h.state]).sort(), [
        ['a', 'up'],
        ['b', 'up'],
      ]);
      assert.equal(o.hosts.filter((h) => h.local).length, 1);
      assert.equal(host(o, o.host)?.local, true);
      for (const h of o.hosts) assert.ok((h.at ?? 0) > 0, `${h.id} has the time of its numbers`);
      // The fabric's link, seen from both sides.
      await untilAsync('the link from both sides', async () => {
        const x = await c.overview();
        return ['a', 'b'].every((id) => x.links.some((l) => l.host === id && l.state === 'up'));
      });
    }
    const local = await ca.overview('host');
    assert.equal(local.scope, 'host');
    assert.deepEqual(portsOf(local), ['a/vm1']);
  });

  test('the counters of the other host are those of its own port view', async () => {
    const o = await ca.overview();
    const [v] = (await cb.listPorts()).filter((p) => p.name === 'vm2');
    const p = o.ports.find((x) => x.host === 'b' && x.name === 'vm2');
    assert.equal(p?.kind, 'stream');
    assert.equal(p?.network, 'lab');
    assert.equal(p?.rx_frames, v?.counters.rx_frames);
    assert.deepEqual(p?.drops, v?.counters.drops);
  });

  test('a host whose endpoint nothing listens on is unreachable with the reason; the rest answers', async () => {
    const closed = await freeTcpPort();
    await fakeHost('c', `http://127.0.0.1:${closed}`);
    await untilAsync('c unreachable', async () => host(await ca.overview(), 'c')?.state === 'unreachable');
    const o = await ca.overview();
    assert.match(host(o, 'c')?.reason ?? '', /no answer from http:\/\/127\.0\.0\.1:\d+: .*(ECONNREFUSED|refused)/);
    assert.equal(host(o, 'b')?.state, 'up');
    assert.deepEqual(portsOf(o), ['a/vm1', 'b/vm2']);
    assert.ok(!o.ports.some((p) => p.host === 'c'));
  });

  test('garbage from a host is refused, logged, and the daemon stays up', async () => {
    let mode: 'text' | 'wrong' | 'endless' = 'text';
    const url = await fakeEndpoint((res) => {
      if (mode === 'text') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"at": 1, "host": "g", "ports": [tru');
      } else if (mode === 'wrong') {
        const body = { at: 1, host: 'g', networks: [], links: [], exports: [], ports: [{ name: 'x', kind: 7 }] };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      } else {
        // An endless body: the daemon must stop reading at its limit.
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(1024 * 1024, 0x20);
        const more = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', more);
        };
        res.write('[');
        more();
      }
    });
    await fakeHost('g', url);
    const reason = async () => host(await ca.overview(), 'g')?.reason ?? '';
    await untilAsync('bad JSON refused', async () => /not JSON/.test(await reason()));
    mode = 'wrong';
    await untilAsync('a wrong shape refused', async () =>
      /not an overview: a port lacks name, kind or state/.test(await reason()),
    );
    mode = 'endless';
    await untilAsync('an endless body refused', async () => /sent more than 16777216 bytes/.test(await reason()));
    const o = await ca.overview();
    assert.equal(host(o, 'g')?.state, 'unreachable');
    assert.deepEqual(portsOf(o), ['a/vm1', 'b/vm2'], 'nothing of g is shown');
    assert.match(a.log, /overview of host \\?"g\\?" unavailable: .*not JSON/);
    assert.equal((await ca.status()).host.id, 'a', 'the daemon answers');
  });

  test("a hand link's peer outside the fabric is a host of the overview, said not to be a member", async () => {
    const px = await freeTcpPort();
    const x = await startDaemon({
      hostId: 'x',
      extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${px}`, plain: true } }),
    });
    try {
      await ca.addLink({ name: 'out', connect: `tcp:127.0.0.1:${px}` });
      await untilAsync('x up through the link', async () => host(await ca.overview(), 'x')?.state === 'up');
      const o = await ca.overview();
      assert.equal(host(o, 'x')?.local, false);
      assert.match(host(o, 'x')?.reason ?? '', /not a member of the fabric: the peer of link "out" of host "a"/);
      assert.ok(o.links.some((l) => l.host === 'a' && l.name === 'out' && l.peer === 'x'));
      await ca.deleteLink('out');
    } finally {
      await x.cleanup();
    }
  });

  test('a stopped daemon is unreachable within the timeout, and back once it runs again', async () => {
    const pid = b.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      await untilAsync('b unreachable', async () => host(await ca.overview(), 'b')?.state === 'unreachable');
      const o = await ca.overview();
      assert.match(host(o, 'b')?.reason ?? '', /no answer from http:\/\/127\.0\.0\.1:\d+/);
      assert.deepEqual(portsOf(o), ['a/vm1']);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await untilAsync('b back', async () => host(await ca.overview(), 'b')?.state === 'up');
  });
});
