/**
 * The daemon as a fabric member, through its real interfaces (the `vmlink`
 * command and the daemon processes) with a real etcd on loopback: init,
 * token and join; refusals (a second init, a token on a single host, a used
 * or forged token); a network made on one host appears on the other; the
 * fabric's link; a corrupt value in etcd reported by key; changes refused
 * with ERR_CLUSTER_UNAVAILABLE while etcd is away and picked up after; a
 * member restarted during an outage comes back from its cached state; two
 * hosts racing reservations over one link never pass its capacity.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { ApiError, type ClusterView, ControlClient, type LinkView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';
import { freeTcpPort } from '../helpers/host-net.js';
import { untilAsync } from '../helpers/overlay-rig.js';

describe('a daemon as a member of a fabric on etcd', { timeout: 300_000 }, () => {
  let etcd: EtcdCluster;
  let a: TestDaemon;
  let b: TestDaemon;
  let kv: Etcd3;

  const ok = async (d: TestDaemon, args: string[]): Promise<string> => {
    const r = await d.cli(args, 60_000);
    assert.equal(r.code, 0, `vmlink ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const status = (d: TestDaemon) => d.json<ClusterView>(['cluster', 'status']);
  const networks = async (d: TestDaemon) =>
    (await d.json<{ networks: { name: string }[] }>(['network', 'list'])).networks.map((n) => n.name);
  const links = async (d: TestDaemon) => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  before(async () => {
    etcd = await startEtcd();
    kv = new Etcd3({ hosts: etcd.endpoints });
    const [pa, pb] = [await freeTcpPort(), await freeTcpPort()];
    // a's link toward b is shaped to 10 Mbit/s, and so is b's side of it: one capacity seen from both ends.
    a = await startDaemon({
      hostId: 'a',
      extra: () => ({
        overlay: { listen: `tcp:127.0.0.1:${pa}`, plain: true, peer_qos: { b: { capacity: '10mbit' } } },
      }),
    });
    b = await startDaemon({
      hostId: 'b',
      extra: () => ({
        overlay: { listen: `tcp:127.0.0.1:${pb}`, plain: true, peer_qos: { a: { capacity: '10mbit' } } },
      }),
    });
  });

  after(async () => {
    kv?.close();
    await a?.cleanup();
    await b?.cleanup();
    await etcd?.stop();
  });

  test('a single host answers cluster status as single and refuses to make a token', async () => {
    const s = await status(a);
    assert.equal(s.mode, 'single');
    const r = await a.cli(['cluster', 'token']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not a member of a fabric/);
  });

  test('bad arguments are usage errors that say what to give', async () => {
    const r = await a.cli(['cluster', 'init', '--etcd', 'localhost']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not an etcd client URL/);
    const t = await a.cli(['cluster', 'join', 'hello']);
    assert.equal(t.code, 1);
    assert.match(t.stderr, /not a vmlink join token/);
  });

  test('init moves the host into etcd with what it had; join brings the other host in with one token', async () => {
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
    await ok(a, ['cluster', 'init', '--etcd', etcd.endpoints.join(',')]);
    assert.equal((await kv.get('/vmlink/networks/lab').string()) !== null, true);
    assert.ok(await kv.get('/vmlink/ports/a/vm1').string());
    const again = await a.cli(['cluster', 'init', '--etcd', etcd.endpoints.join(',')]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already a member/);
    const token = (await ok(a, ['cluster', 'token'])).trim();
    assert.match(token, /^vmlink1\./);
    await ok(b, ['cluster', 'join', token]);
    const reused = await b.cli(['cluster', 'join', token]);
    assert.equal(reused.code, 1);
    await untilAsync('b has network lab', async () => (await networks(b)).includes('lab'));
    await untilAsync('both hosts up on both', async () => {
      const [sa, sb] = [await status(a), await status(b)];
      return [sa, sb].every((s) => s.hosts.filter((h) => h.state === 'up').length === 2);
    });
    const s = await status(b);
    assert.equal(s.mode, 'member');
    assert.equal(s.etcd?.available, true);
    assert.deepEqual(s.hosts.map((h) => h.id).sort(), ['a', 'b']);
  });

  test('a port on the second host makes the fabric link, with no link added by hand', async () => {
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
    // The smaller id dials: a's link to b is the fabric's; b accepted it.
    await untilAsync('a link between a and b is up', async () =>
      (await links(a)).some((l) => l.peer === 'b' && l.state === 'up' && l.source === 'cluster'),
    );
    const l = (await links(b)).find((x) => x.peer === 'a');
    assert.equal(l?.state, 'up');
    for (const d of [a, b]) assert.ok(!(await links(d)).some((x) => x.source === 'api'), 'no hand link');
  });

  test('another fabric under the same prefix cannot be started', async () => {
    const c = await startDaemon({ hostId: 'c', extra: () => ({ overlay: { plain: true } }) });
    try {
      const r = await c.cli(['cluster', 'init', '--etcd', etcd.endpoints.join(',')]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /a fabric already exists/);
    } finally {
      await c.cleanup();
    }
  });

  test('a corrupt value in etcd is reported by its key and skipped; the daemon stays up', async () => {
    await kv.put('/vmlink/networks/broken').value('{not json');
    await ok(a, ['network', 'create', 'after-broken', '--vni', '101']);
    await untilAsync('b has after-broken', async () => (await networks(b)).includes('after-broken'));
    const s = await status(b);
    assert.ok(
      s.corrupt.some((c) => c.key === 'networks/broken'),
      JSON.stringify(s.corrupt),
    );
    await kv.delete().key('/vmlink/networks/broken');
  });

  test('two hosts racing reservations over their link never pass its capacity', async () => {
    const ports: [TestDaemon, string][] = [];
    for (let i = 0; i < 4; i++) {
      for (const [d, h] of [
        [a, 'a'],
        [b, 'b'],
      ] as const) {
        const name = `q${h}${i}`;
        await ok(d, [
          'port',
          'add',
          name,
          '--kind',
          'stream',
          '--network',
          'lab',
          '--listen',
          `unix:${d.path(`${name}.sock`)}`,
        ]);
        ports.push([d, name]);
      }
    }
    // 8 ports each ask for 3 Mbit/s on the 10 Mbit/s link at once: exactly 3 fit.
    const results = await Promise.all(ports.map(([d, p]) => d.cli(['qos', 'request', p, '--min', '3mbit'])));
    const granted = results.filter((r) => r.code === 0).length;
    assert.equal(granted, 3, results.map((r) => r.stderr).join('\n'));
    for (const r of results.filter((x) => x.code !== 0)) assert.match(r.stderr, /capacity|reserv/);
    const rec = JSON.parse((await kv.get('/vmlink/admission/a~b').string()) ?? '{}') as {
      reservations?: Record<string, number>;
    };
    const sum = Object.values(rec.reservations ?? {}).reduce((x, y) => x + y, 0);
    assert.ok(sum <= 10_000_000, `reserved ${sum} bit/s on a 10 Mbit/s link`);
  });

  test('with etcd away, changes are refused with ERR_CLUSTER_UNAVAILABLE; a change made after it returns reaches the other host', async () => {
    await etcd.killAll();
    try {
      await untilAsync('b sees etcd away', async () => (await status(b)).etcd?.available === false);
      const r = await b.cli(['network', 'create', 'nope', '--vni', '102']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /etcd endpoints are unreachable/);
      assert.ok(!(await networks(b)).includes('nope'), 'a refused network stays out');
      // Through the API: the code and the status a client matches.
      const client = new ControlClient({ socketPath: b.control });
      try {
        await assert.rejects(client.createNetwork({ name: 'nope2', vni: 104 }), (err: unknown) => {
          assert.ok(err instanceof ApiError);
          assert.equal(err.code, 'ERR_CLUSTER_UNAVAILABLE');
          assert.equal(err.status, 503);
          return true;
        });
      } finally {
        await client.close();
      }
      // A member restarted while etcd is away comes back from its cached state.
      await a.stop();
      await a.start();
      assert.ok((await networks(a)).includes('lab'));
      assert.equal((await status(a)).mode, 'member');
    } finally {
      await etcd.startAll();
    }
    await untilAsync('a back on etcd', async () => (await status(a)).etcd?.available === true, 60_000);
    await ok(a, ['network', 'create', 'later', '--vni', '103']);
    await untilAsync('b picked up "later"', async () => (await networks(b)).includes('later'), 60_000);
  });

  test('a host stopped gracefully is down at once on the other', async () => {
    await b.stop();
    await untilAsync('a sees b down', async () =>
      (await status(a)).hosts.some((h) => h.id === 'b' && h.state === 'down'),
    );
    await b.start();
    await untilAsync('a sees b up again', async () =>
      (await status(a)).hosts.some((h) => h.id === 'b' && h.state === 'up'),
    );
  });
});
