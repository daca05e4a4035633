/**
 * The overlay of a real daemon, as an operator meets it through `vmlink`:
 * the cap on networks (limits.networks), a link listener whose address is
 * busy at start (the daemon runs on, the reason shows, it comes up once the
 * address is free), and the REASON column of `vmlink link list`.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { LinkView, ListenerView, StatusView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';

describe('a daemon whose overlay.listen address is busy at start, with limits.networks of 3', {
  timeout: 120_000,
}, () => {
  let d: TestDaemon;
  let squatter: Server;
  let port: number;
  const list = (x: TestDaemon) => x.json<{ links: LinkView[]; listener: ListenerView }>(['link', 'list']);

  before(async () => {
    // Someone else holds the port before the daemon starts.
    squatter = createServer(() => undefined);
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    port = (squatter.address() as { port: number }).port;
    d = await startDaemon({
      hostId: 'a',
      networks: [{ name: 'lab', vni: 100 }],
      extra: () => ({
        limits: { networks: 3 },
        overlay: { listen: `tcp:127.0.0.1:${port}`, plain: true, reconnect: { min_ms: 50, max_ms: 200 } },
        links: [{ name: 'nowhere', connect: 'tcp:127.0.0.1:1' }],
      }),
    });
  });

  after(async () => {
    await d?.cleanup();
    squatter?.close();
  });

  test('the daemon runs; status and link list show the listener down with the reason', async () => {
    const s = await d.json<StatusView>(['status']);
    assert.equal(s.overlay?.listener.state, 'down');
    assert.match(
      s.overlay?.listener.reason ?? '',
      /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE.*retrying in \d+ ms/,
    );
    const l = await list(d);
    assert.equal(l.listener.state, 'down');
    const table = await d.cli(['link', 'list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^link listener: down: cannot listen on 127\.0\.0\.1:\d+/);
    assert.match((await d.cli(['status'])).stdout, /link listener\s+down: cannot listen/);
    assert.match(d.log, /overlay listener down/);
  });

  test('a link that cannot connect shows why in the REASON column and in last_error', async () => {
    const table = await d.cli(['link', 'list']);
    assert.match(table.stdout, /NAME\s+STATE\s+PEER.*\sREASON\n/);
    assert.match(table.stdout, /nowhere\s+connecting\s.*connection refused: nothing listens there/);
    const v = (await list(d)).links.find((x) => x.name === 'nowhere') as LinkView;
    assert.match(v.last_error ?? '', /ECONNREFUSED/);
  });

  test('once the address is free the listener comes up, without a restart', async () => {
    await new Promise<void>((r) => squatter.close(() => r()));
    await untilAsync('listener up', async () => (await list(d)).listener.state === 'up');
    const l = (await list(d)).listener;
    assert.equal(l.address, `127.0.0.1:${port}`);
    // It accepts connections now.
    await new Promise<void>((resolve, reject) => {
      const s = createServer().listen(port, '127.0.0.1');
      s.once('listening', () => s.close(() => reject(new Error('the port is still free'))));
      s.once('error', () => resolve());
    });
  });

  test('a network over limits.networks is refused with ERR_NETWORK_LIMIT, the cap and what to do', async () => {
    for (const [name, vni] of [
      ['two', '200'],
      ['three', '300'],
    ] as const)
      assert.equal((await d.cli(['network', 'create', name, '--vni', vni])).code, 0);
    const r = await d.cli(['network', 'create', 'four', '--vni', '400']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /already has 3 networks, the most limits\.networks allows \(3\); delete a network first, or raise limits\.networks/,
    );
    const { ControlClient } = await import('../../src/api/client.js');
    const c = new ControlClient({ socketPath: d.control });
    try {
      await assert.rejects(c.createNetwork({ name: 'four', vni: 400 }), { code: 'ERR_NETWORK_LIMIT' });
    } finally {
      await c.close();
    }
    // Deleting one makes room again.
    assert.equal((await d.cli(['network', 'delete', 'three'])).code, 0);
    assert.equal((await d.cli(['network', 'create', 'four', '--vni', '400'])).code, 0);
  });
});

describe('limits.networks in the config', { timeout: 60_000 }, () => {
  test('a config declaring more networks than limits.networks is refused at start with the count and the cap', async () => {
    await assert.rejects(
      startDaemon({
        hostId: 'c',
        networks: [
          { name: 'n1', vni: 1 },
          { name: 'n2', vni: 2 },
        ],
        extra: () => ({ limits: { networks: 1 } }),
      }),
      /2 networks are declared, more than limits\.networks allows \(1\)/,
    );
  });
});
