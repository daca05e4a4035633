/**
 * Desired state, reconciled: the same networks, ports, exports and links
 * reached three ways (through the control API, through a config reload, and
 * after a kill -9 and restart of each daemon) give the same running state,
 * as `vmlink ... list --json` shows it. And a reload that is bad changes nothing.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { ControlClient } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';

type Doc = Record<string, unknown>;

/** What every daemon here has besides its items: plain links (no listener) and storage defaults. */
const base = (d: TestDaemon): Doc => ({
  host: { id: 'e2e', control: d.control, state_dir: d.stateDir },
  overlay: { plain: true },
});

/** The state every path converges to. Port sockets live in the daemon's own dir. */
function target(d: TestDaemon): Record<'networks' | 'ports' | 'exports' | 'links', Doc[]> {
  return {
    networks: [
      { name: 'lan', vni: 10 },
      { name: 'dev', vni: 20, mtu: 9000 },
    ],
    ports: [
      {
        name: 'vm1',
        kind: 'stream',
        network: 'lan',
        listen: `unix:${d.path('vm1.sock')}`,
        allowed_macs: ['52:54:00:00:00:01'],
      },
      {
        name: 'vm2',
        kind: 'stream',
        trunk: { vlans: { 100: 'lan', 200: 'dev' } },
        listen: `unix:${d.path('vm2.sock')}`,
      },
    ],
    exports: [{ name: 'disk', backend: { type: 'memory', size: 1048576 }, read_only: true }],
    // Nobody listens on port 9 of loopback: the link keeps dialling, which is its running state.
    links: [{ name: 'peer', connect: 'tcp:127.0.0.1:9' }],
  };
}

/** What runs, as the CLI lists it, without what depends on the path taken (source, socket dir, counters, timing). */
async function running(d: TestDaemon): Promise<unknown> {
  const dirless = (s: unknown) => String(s).replaceAll(d.dir, '<dir>');
  const { networks } = await d.json<{ networks: { name: string; vni: number; mtu: number; ports: string[] }[] }>([
    'network',
    'list',
  ]);
  const { ports } = await d.json<{ ports: Record<string, unknown>[] }>(['port', 'list']);
  const { exports } = await d.json<{ exports: Record<string, unknown>[] }>(['export', 'list']);
  const { links } = await d.json<{ links: Record<string, unknown>[] }>(['link', 'list']);
  const byName = (a: { name: unknown }, b: { name: unknown }) => String(a.name).localeCompare(String(b.name));
  return {
    networks: networks.map((n) => ({ name: n.name, vni: n.vni, mtu: n.mtu, ports: [...n.ports].sort() })).sort(byName),
    ports: ports
      .map((p) => ({
        name: p.name,
        kind: p.kind,
        network: p.network,
        trunk: p.trunk,
        state: p.state,
        transport: dirless(JSON.stringify(p['transport'])),
      }))
      .sort(byName),
    exports: exports.map((e) => ({ name: e.name, size: e['size'], read_only: e['read_only'] })).sort(byName),
    links: links.map((l) => ({ name: l.name, address: l['address'] })).sort(byName),
  };
}

async function writeConfig(d: TestDaemon, doc: Doc): Promise<void> {
  await writeFile(d.configPath, stringify(doc));
}

describe('reconcile', { timeout: 240_000 }, () => {
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.cleanup();
  });

  test('desired state set through the API, through a config reload and after kill -9 restarts converges to the same running state', async () => {
    // Through the API: an item made and deleted again, then the target.
    const a = await startDaemon({ extra: () => ({ overlay: { plain: true } }) });
    daemons.push(a);
    const client = new ControlClient({ socketPath: a.control });
    try {
      const t = target(a);
      await client.createNetwork({ name: 'old', vni: 99 });
      await client.addPort({ name: 'gone', kind: 'stream', network: 'old', listen: `unix:${a.path('gone.sock')}` });
      for (const n of t.networks) await client.createNetwork(n as never);
      for (const p of t.ports) await client.addPort(p as never);
      for (const e of t.exports) await client.addExport(e as never);
      for (const l of t.links) await client.addLink(l as never);
      await client.deletePort('gone');
      await client.deleteNetwork('old');
    } finally {
      await client.close();
    }
    const viaApi = await running(a);

    // Through a reload: the daemon starts on another config: an extra network and port, vm1 with other
    // MACs, network lan with another MTU (vm2, unchanged but on lan, must move to the new lan).
    const b = await startDaemon({
      networks: [
        { name: 'lan', vni: 10, mtu: 1400 },
        { name: 'dev', vni: 20, mtu: 9000 },
        { name: 'old', vni: 99 },
      ],
      ports: (dir) => [
        { name: 'vm1', kind: 'stream', network: 'lan', listen: `unix:${dir}/vm1.sock` },
        { name: 'vm2', kind: 'stream', trunk: { vlans: { 100: 'lan', 200: 'dev' } }, listen: `unix:${dir}/vm2.sock` },
        { name: 'gone', kind: 'stream', network: 'old', listen: `unix:${dir}/gone.sock` },
      ],
      extra: () => ({ overlay: { plain: true } }),
    });
    daemons.push(b);
    await writeConfig(b, { ...base(b), ...target(b) });
    const report = await b.json<{ created: string[]; removed: string[]; failed: unknown[] }>(['reload']);
    assert.deepEqual(report.failed, []);
    assert.deepEqual(
      [...report.removed].sort(),
      ['networks/lan', 'networks/old', 'ports/gone', 'ports/vm1', 'ports/vm2'],
      'vm2 goes with the lan it is on',
    );
    assert.deepEqual(
      [...report.created].sort(),
      ['exports/disk', 'links/peer', 'networks/lan', 'ports/vm1', 'ports/vm2'],
      'lan (its MTU) and vm1 (its allowed_macs) changed: removed and created again; vm2 came back on the new lan',
    );
    const viaReload = await running(b);
    assert.deepEqual(viaReload, viaApi);

    // A second reload of the same file changes nothing.
    const again = await b.json<{ created: string[]; removed: string[] }>(['reload']);
    assert.deepEqual([again.created, again.removed], [[], []]);

    // kill -9 and restart: the API daemon rebuilds from its store, the reloaded one from its (new) config file.
    for (const d of [a, b]) {
      assert.equal(await d.kill('SIGKILL'), null);
      await d.start();
      assert.deepEqual(await running(d), viaApi);
    }
  });

  test('a bad config, a change only a restart applies, or an API port losing its network is refused on reload with nothing changed', async () => {
    const d = await startDaemon({
      networks: [{ name: 'lan', vni: 10 }],
      extra: () => ({ overlay: { plain: true } }),
    });
    daemons.push(d);
    const added = await d.cli(['network', 'create', 'api-net', '--vni', '30']);
    assert.equal(added.code, 0, added.stderr);
    const port = await d.cli([
      'port',
      'add',
      'p',
      '--kind',
      'stream',
      '--network',
      'lan',
      '--listen',
      `unix:${d.path('p.sock')}`,
    ]);
    assert.equal(port.code, 0, port.stderr);
    const before = await running(d);

    await writeFile(d.configPath, 'host: [not, a, map\n');
    let r = await d.cli(['reload']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERR_CONFIG_INVALID|vmlink\.yaml/);

    await writeConfig(d, {
      ...base(d),
      networks: [
        { name: 'lan', vni: 10 },
        { name: 'x', vni: 10 },
      ],
    });
    r = await d.cli(['reload']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /vni/);

    await writeConfig(d, {
      ...base(d),
      host: { ...(base(d)['host'] as Doc), aging_sec: 60 },
      networks: [{ name: 'lan', vni: 10 }],
    });
    r = await d.cli(['reload']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /host\.aging_sec changed, and only a restart of the daemon applies that/);

    await writeConfig(d, { ...base(d), networks: [{ name: 'other', vni: 11 }] });
    r = await d.cli(['reload']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /port "p" \(added through the API\) would no longer fit: .*network "lan" does not exist/);

    assert.deepEqual(await running(d), before, 'every refused reload left the running state as it was');
    assert.equal((await d.json<{ host: { pid: number } }>(['status'])).host.pid, d.pid, 'the daemon stayed up');
  });

  test('SIGHUP reloads the config file', async () => {
    const d = await startDaemon({ networks: [{ name: 'lan', vni: 10 }], extra: () => ({ overlay: { plain: true } }) });
    daemons.push(d);
    await writeConfig(d, {
      ...base(d),
      networks: [
        { name: 'lan', vni: 10 },
        { name: 'dev', vni: 20 },
      ],
    });
    process.kill(d.pid as number, 'SIGHUP');
    await untilAsync('network "dev" after SIGHUP', async () => {
      const { networks } = await d.json<{ networks: { name: string; source: string }[] }>(['network', 'list']);
      return networks.some((n) => n.name === 'dev' && n.source === 'config');
    });
    assert.match(d.log, /config reloaded: 1 created, 0 removed, 0 failed/);
  });
});
