import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { clusterSchema } from '../../src/config/cluster-schema.js';
import { ConfigError } from '../../src/config/errors.js';
import { configSchema } from '../../src/config/schema.js';
import { advertisedAddress } from '../../src/daemon/cluster-fabric.js';
import { clusterFile, loadClusterSettings, saveClusterSettings } from '../../src/daemon/cluster-settings.js';

const settings = (raw: Record<string, unknown>) => clusterSchema.parse({ etcd: ['http://192.0.2.10:2379'], ...raw });
const config = (overlay: Record<string, unknown> | undefined, stateDir = '/var/lib/vmlink') =>
  configSchema.parse({ host: { id: 'a', state_dir: stateDir }, ...(overlay ? { overlay } : {}) });

describe('the address a member advertises for its links', () => {
  test('is cluster.address when given', () => {
    const c = config({ listen: 'tcp:0.0.0.0:7400', plain: true });
    assert.equal(
      advertisedAddress(settings({ address: 'tcp:198.51.100.1:7400' }), c, '192.0.2.1'),
      'tcp:198.51.100.1:7400',
    );
  });

  test('is overlay.listen when it names an address', () => {
    const c = config({ listen: 'tcp:192.0.2.5:7400', plain: true });
    assert.equal(advertisedAddress(settings({}), c, '192.0.2.1'), 'tcp:192.0.2.5:7400');
  });

  test('is the local address toward etcd with the listen port when the listener is a wildcard', () => {
    const c = config({ listen: 'tcp:0.0.0.0:7400', plain: true });
    assert.equal(advertisedAddress(settings({}), c, '192.0.2.1'), 'tcp:192.0.2.1:7400');
    assert.equal(advertisedAddress(settings({}), c, undefined), undefined);
  });

  test('is none for a host without a listener or one that says it cannot be reached', () => {
    assert.equal(advertisedAddress(settings({}), config({ plain: true }), '192.0.2.1'), undefined);
    const c = config({ listen: 'tcp:192.0.2.5:7400', plain: true });
    assert.equal(advertisedAddress(settings({ reachable: false }), c, '192.0.2.1'), undefined);
  });
});

describe('cluster settings in the state directory', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('are absent for a single host, and round-trip as init and join write them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-cs-'));
    dirs.push(dir);
    const c = config({ plain: true }, dir);
    assert.equal(await loadClusterSettings(c), undefined);
    const s = settings({ address: 'tcp:192.0.2.1:7400', join_listen: 'tcp:192.0.2.1:7401' });
    await saveClusterSettings(dir, s);
    assert.deepEqual(await loadClusterSettings(c), s);
  });

  test('a damaged file stops with an error that names it and says how to leave the fabric', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-cs-'));
    dirs.push(dir);
    await writeFile(clusterFile(dir), '{"etcd": "not a list"');
    await assert.rejects(loadClusterSettings(config({ plain: true }, dir)), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /cluster\.json/);
      assert.match(err.message, /remove it to leave the fabric/);
      return true;
    });
  });

  test("the config's cluster section wins over the file", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-cs-'));
    dirs.push(dir);
    await saveClusterSettings(dir, settings({ prefix: '/other/' }));
    const c = configSchema.parse({
      host: { id: 'a', state_dir: dir },
      cluster: { etcd: ['http://192.0.2.11:2379'] },
    });
    assert.deepEqual((await loadClusterSettings(c))?.etcd, ['http://192.0.2.11:2379']);
  });

  test('bad values are refused with what to give', () => {
    const r = clusterSchema.safeParse({ etcd: ['localhost:2379'], prefix: 'vmlink' });
    assert.equal(r.success, false);
    const text = JSON.stringify(r.error?.issues.map((i) => i.message));
    assert.match(text, /client URLs such as http:/);
    assert.match(text, /starts and ends with/);
  });
});
