import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createEmbeddedStore, JOURNAL_FILE, STATE_FILE } from '../../src/control/embedded-store.js';
import { hasCode } from '../../src/errors.js';

const root = await mkdtemp(join(tmpdir(), 'vmlink-store-'));
after(() => rm(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `s${n++}`, 'state');

const NET = { name: 'lan', vni: 10 };
const PORT = { name: 'vm1', kind: 'stream', network: 'lan', listen: 'unix:/tmp/vm1.sock' };

describe('embedded state store', () => {
  test('loads an empty state when the directory does not exist yet, without creating anything', async () => {
    const dir = freshDir();
    const store = createEmbeddedStore({ dir });
    assert.deepEqual(await store.load(), { networks: [], ports: [], exports: [] });
    await assert.rejects(stat(dir), { code: 'ENOENT' });
    await store.close();
  });

  test('creates the directory with mode 0700 and keeps puts and deletes across a new store instance', async () => {
    const dir = freshDir();
    const a = createEmbeddedStore({ dir });
    await a.load();
    await a.putNetwork(NET);
    await a.putNetwork({ name: 'dmz', vni: 20, mtu: 9000 });
    await a.putPort(PORT);
    await a.deleteNetwork('dmz');
    await a.close();
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, STATE_FILE))).mode & 0o777, 0o600);

    const b = createEmbeddedStore({ dir });
    assert.deepEqual(await b.load(), { networks: [NET], ports: [PORT], exports: [] });
    await b.close();
  });

  test('journals changes while open and leaves only a versioned snapshot after close', async () => {
    const dir = freshDir();
    const s = createEmbeddedStore({ dir });
    await s.putPort(PORT);
    assert.deepEqual(await readdir(dir), [JOURNAL_FILE]);
    await s.close();
    assert.deepEqual(await readdir(dir), [STATE_FILE]);
    assert.deepEqual(JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')), {
      version: 2,
      seq: 1,
      networks: [],
      ports: [PORT],
      exports: [],
    });
  });

  test('replaces an item of the same name in place and keeps the order of the others', async () => {
    const dir = freshDir();
    const s = createEmbeddedStore({ dir });
    await s.putNetwork({ name: 'a', vni: 1 });
    await s.putNetwork({ name: 'b', vni: 2 });
    await s.putNetwork({ name: 'a', vni: 3 });
    await s.deletePort('not-stored');
    assert.deepEqual((await s.load()).networks, [
      { name: 'a', vni: 3 },
      { name: 'b', vni: 2 },
    ]);
    await s.close();
  });

  test('applies concurrent changes one after the other, none lost', async () => {
    const dir = freshDir();
    const s = createEmbeddedStore({ dir });
    await Promise.all(Array.from({ length: 20 }, (_, i) => s.putPort({ ...PORT, name: `p${i}` })));
    await s.close();
    const again = await createEmbeddedStore({ dir }).load();
    assert.deepEqual(
      again.ports.map((p) => p.name),
      Array.from({ length: 20 }, (_, i) => `p${i}`),
    );
  });

  test('does not keep a reference to the caller’s object', async () => {
    const s = createEmbeddedStore({ dir: freshDir() });
    const item = { name: 'lan', vni: 10 };
    await s.putNetwork(item);
    item.vni = 99;
    assert.deepEqual((await s.load()).networks, [{ name: 'lan', vni: 10 }]);
    await s.close();
  });

  test('refuses a corrupt file with ERR_STATE_CORRUPT naming the file, and leaves the file as it was', async () => {
    const dir = freshDir();
    await createEmbeddedStore({ dir }).putNetwork(NET);
    const file = join(dir, STATE_FILE);
    await writeFile(file, '{"version": 1, "networks": [');
    const s = createEmbeddedStore({ dir });
    await assert.rejects(s.load(), (err: Error) => {
      assert.ok(hasCode(err, 'ERR_STATE_CORRUPT'));
      assert.match(err.message, new RegExp(file));
      assert.match(err.message, /move it away/);
      return true;
    });
    await assert.rejects(s.putNetwork(NET), (err) => hasCode(err, 'ERR_STATE_CORRUPT'));
    assert.equal(await readFile(file, 'utf8'), '{"version": 1, "networks": [');
  });

  test('refuses a file of another version or shape with ERR_STATE_CORRUPT', async () => {
    for (const text of [
      '[]',
      '{"version":3,"seq":0,"networks":[],"ports":[]}',
      '{"version":2,"networks":[],"ports":[]}',
      '{"version":1,"networks":{},"ports":[]}',
    ]) {
      const dir = freshDir();
      await createEmbeddedStore({ dir }).putNetwork(NET);
      await writeFile(join(dir, STATE_FILE), text);
      await assert.rejects(createEmbeddedStore({ dir }).load(), (err) => hasCode(err, 'ERR_STATE_CORRUPT'), text);
    }
    const dir = freshDir();
    await createEmbeddedStore({ dir }).putNetwork(NET);
    await writeFile(join(dir, STATE_FILE), '{"version":1,"networks":[{"vni":1}],"ports":[]}');
    await assert.rejects(createEmbeddedStore({ dir }).load(), /networks\[0\] is not an object with a "name"/);
  });

  test('reports a write it cannot make with ERR_STATE_IO, keeps its state, and accepts later writes', async () => {
    const dir = freshDir();
    await mkdir(dir, { recursive: true });
    const s = createEmbeddedStore({ dir });
    await s.load();
    // Root ignores permissions: block the journal's name with a directory instead.
    const journal = join(dir, JOURNAL_FILE);
    await mkdir(journal);
    await assert.rejects(s.putNetwork({ name: 'b', vni: 2 }), (err) => hasCode(err, 'ERR_STATE_IO'));
    await rm(journal, { recursive: true });
    await s.putNetwork(NET);
    await s.putPort(PORT);
    await s.close();
    assert.deepEqual(await createEmbeddedStore({ dir }).load(), { networks: [NET], ports: [PORT], exports: [] });
  });

  test('keeps exports across a new store instance, and loads a file written before exports existed', async () => {
    const dir = freshDir();
    const EXP = { name: 'disk', backend: { type: 'memory', size: '64M' } };
    const a = createEmbeddedStore({ dir });
    await a.putExport(EXP);
    await a.putExport({ name: 'gone', backend: { type: 'memory', size: 1024 } });
    await a.deleteExport('gone');
    await a.close();
    assert.deepEqual(await createEmbeddedStore({ dir }).load(), { networks: [], ports: [], exports: [EXP] });

    await writeFile(join(dir, STATE_FILE), JSON.stringify({ version: 1, networks: [NET], ports: [PORT] }));
    const old = createEmbeddedStore({ dir });
    assert.deepEqual(await old.load(), { networks: [NET], ports: [PORT], exports: [] });
    await old.putExport(EXP);
    await old.close();
    assert.deepEqual(JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')).exports, [EXP]);
  });

  test('rejects changes after close', async () => {
    const s = createEmbeddedStore({ dir: freshDir() });
    await s.close();
    await s.close();
    await assert.rejects(s.putNetwork(NET), (err) => hasCode(err, 'ERR_STATE_IO'));
  });
});
