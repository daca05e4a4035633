/**
 * What an export may use, through the real daemon, API and CLI: files only
 * under `storage.roots` (default `<state_dir>/exports`; symlinks and `..`
 * resolved), memory exports within `storage.memory_limit` together, no
 * copy-on-write export that reads itself, no file written by two exports;
 * a plain TCP listener warned about; an allowed export still served.
 */
import assert from 'node:assert/strict';
import { link, mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiError, ControlClient, type ExportBody, type ExportView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { runOk } from '../helpers/nbd-peer.js';

const MiB = 1024 * 1024;

describe('exports confined to storage.roots and storage.memory_limit', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let client: ControlClient;
  const root = () => join(d.stateDir, 'exports');
  const nbdSock = () => d.path('nbd.sock');
  const own = () => `unix:${nbdSock()}`;

  /** Adds through the API and returns the refusal. */
  const refused = async (body: Record<string, unknown>): Promise<ApiError> => {
    const err = await client.addExport(body as unknown as ExportBody).then(
      () => assert.fail(`export "${String(body['name'])}" was added`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ApiError, String(err));
    return err;
  };
  const exportsNow = async (): Promise<ExportView[]> =>
    (await d.json<{ exports: ExportView[] }>(['export', 'list'])).exports;

  before(async () => {
    d = await startDaemon({
      hostId: 'roots',
      extra: (dir) => ({
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`, 'tcp:127.0.0.1:0'], memory_limit: '8M' },
        exports: [
          // Outside the default root: refused at start, shown down, the daemon stays up.
          { name: 'cfg-out', backend: { type: 'file', path: '/etc/hostname' }, read_only: true },
          // x reads y and y reads x through this daemon's own NBD socket: y closes the loop.
          {
            name: 'x',
            backend: {
              type: 'cow',
              base: { type: 'remote', address: `unix:${join(dir, 'nbd.sock')}`, export: 'y' },
              overlay: { type: 'memory', size: '1M' },
            },
          },
          {
            name: 'y',
            backend: {
              type: 'cow',
              base: { type: 'remote', address: `unix:${join(dir, 'nbd.sock')}`, export: 'x' },
              overlay: { type: 'memory', size: '1M' },
            },
          },
        ],
      }),
    });
    client = new ControlClient({ socketPath: d.control });
  });

  after(async () => {
    await client?.close();
    await d?.cleanup();
  });

  test('the default root <state_dir>/exports exists, private, and a file export in it is served', async () => {
    const st = await stat(root());
    assert.ok(st.isDirectory());
    assert.equal((st.mode & 0o777).toString(8), '700');
    const add = await d.cli([
      'export',
      'add',
      'ok',
      '--backend',
      'file',
      '--path',
      join(root(), 'ok.img'),
      '--size',
      '2M',
    ]);
    assert.equal(add.code, 0, add.stderr);
    const size = await runOk('nbdinfo', ['--size', `nbd+unix:///ok?socket=${nbdSock()}`]);
    assert.equal(Number(size.trim()), 2 * MiB);
  });

  test('a host file outside the roots is refused with 403, naming the path, the roots and storage.roots', async () => {
    for (const path of ['/etc/shadow', '/etc/passwd']) {
      const err = await refused({ name: 'steal', backend: { type: 'file', path } });
      assert.equal(err.status, 403);
      assert.equal(err.code, 'ERR_EXPORT_PATH_OUTSIDE_ROOTS');
      assert.ok(err.message.includes(path), err.message);
      assert.ok(err.message.includes(root()), err.message);
      assert.match(err.message, /storage\.roots/);
      assert.match(err.message, /backend\.path/);
    }
    const cli = await d.cli(['export', 'add', 'steal', '--backend', 'file', '--path', '/etc/shadow']);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /\/etc\/shadow is outside the directories exports may use/);
    assert.equal(
      (await exportsNow()).find((e) => e.name === 'steal'),
      undefined,
    );
  });

  test('a symlink in the root to a host file, and a path with .. out of the root, are refused', async () => {
    await symlink('/etc/passwd', join(root(), 'innocent.img'));
    const viaLink = await refused({ name: 'steal', backend: { type: 'file', path: join(root(), 'innocent.img') } });
    assert.equal(viaLink.code, 'ERR_EXPORT_PATH_OUTSIDE_ROOTS');
    assert.match(viaLink.message, /\(resolved: \/etc\/passwd\)/);
    const dotdot = await refused({
      name: 'steal',
      backend: { type: 'file', path: join(root(), '..', '..', 'made.img'), size: '1M' },
    });
    assert.equal(dotdot.code, 'ERR_EXPORT_PATH_OUTSIDE_ROOTS');
    await assert.rejects(stat(join(d.dir, 'made.img')), /ENOENT/);
    // A cow export's overlay and bitmap are checked too.
    const cow = await refused({
      name: 'steal',
      backend: {
        type: 'cow',
        base: { type: 'file', path: join(root(), 'ok.img') },
        overlay: { type: 'memory', size: '2M' },
        bitmap_path: '/etc/vmlink-bitmap',
      },
    });
    assert.equal(cow.code, 'ERR_EXPORT_PATH_OUTSIDE_ROOTS');
    assert.match(cow.message, /backend\.bitmap_path/);
  });

  test('a config export outside the roots is shown down with the reason; the daemon serves the rest', async () => {
    const e = (await exportsNow()).find((x) => x.name === 'cfg-out');
    assert.equal(e?.state, 'down');
    assert.match(e?.reason ?? '', /\/etc\/hostname is outside the directories exports may use/);
  });

  test('memory exports are counted together against storage.memory_limit; a deleted one gives its bytes back', async () => {
    // x holds 1M (its overlay); y was refused and holds nothing.
    assert.equal((await d.cli(['export', 'add', 'm6', '--backend', 'memory', '--size', '6M'])).code, 0);
    for (const size of ['2M', '1P']) {
      const err = await refused({ name: 'more', backend: { type: 'memory', size } });
      assert.equal(err.status, 422);
      assert.equal(err.code, 'ERR_EXPORT_MEMORY_LIMIT');
      assert.match(err.message, /storage\.memory_limit of 8388608 bytes/);
    }
    const cli = await d.cli(['export', 'add', 'more', '--backend', 'memory', '--size', '2M']);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /exceed storage\.memory_limit/);
    await client.deleteExport('m6');
    await client.addExport({ name: 'more', backend: { type: 'memory', size: '2M' } } as unknown as ExportBody);
    await client.deleteExport('more');
  });

  test('a cow export whose base is its own overlay file, or that reads itself, is refused', async () => {
    const img = join(root(), 'same.img');
    const same = await refused({
      name: 'selfish',
      backend: {
        type: 'cow',
        base: { type: 'file', path: img, size: '1M' },
        overlay: { type: 'file', path: img, size: '1M' },
      },
    });
    assert.equal(same.status, 422);
    assert.equal(same.code, 'ERR_EXPORT_COW_LOOP');
    assert.match(same.message, /backend\.base\.path and backend\.overlay\.path are the same file/);
    const itself = await refused({
      name: 'selfish',
      backend: {
        type: 'cow',
        base: { type: 'remote', address: own(), export: 'selfish' },
        overlay: { type: 'memory', size: '1M' },
      },
    });
    assert.equal(itself.code, 'ERR_EXPORT_COW_LOOP');
    assert.match(itself.message, /that is the export itself/);
  });

  test('a chain of remote backends through this daemon back to an export is refused (config export y)', async () => {
    const y = (await exportsNow()).find((e) => e.name === 'y');
    assert.equal(y?.state, 'down');
    assert.match(y?.reason ?? '', /read through this daemon's exports back to itself \("y" -> "x" -> "y"\)/);
  });

  test('two writable exports of one file are refused (by path, symlink or hard link); read-only sharing is allowed', async () => {
    const img = join(root(), 'shared.img');
    await client.addExport({ name: 'w1', backend: { type: 'file', path: img, size: '1M' } } as unknown as ExportBody);
    await symlink(img, join(root(), 'shared-link.img'));
    await link(img, join(root(), 'shared-hard.img'));
    for (const path of [img, join(root(), 'shared-link.img'), join(root(), 'shared-hard.img')]) {
      const err = await refused({ name: 'w2', backend: { type: 'file', path } });
      assert.equal(err.status, 409);
      assert.equal(err.code, 'ERR_EXPORT_FILE_IN_USE');
      assert.match(err.message, /is already written by export "w1"/);
    }
    // A cow overlay is written too.
    const overlay = await refused({
      name: 'w2',
      backend: { type: 'cow', base: { type: 'memory', size: '1M' }, overlay: { type: 'file', path: img } },
    });
    assert.equal(overlay.code, 'ERR_EXPORT_FILE_IN_USE');
    for (const name of ['r1', 'r2']) {
      await client.addExport({ name, backend: { type: 'file', path: img }, read_only: true } as unknown as ExportBody);
    }
    // As the base of a cow export (read-only) too.
    await client.addExport({
      name: 'c1',
      backend: {
        type: 'cow',
        base: { type: 'file', path: img },
        overlay: { type: 'file', path: join(root(), 'c1-overlay.img'), size: '1M' },
      },
    } as unknown as ExportBody);
    // Once w1 is gone, another writer may have the file.
    await client.deleteExport('w1');
    await client.addExport({ name: 'w2', backend: { type: 'file', path: img } } as unknown as ExportBody);
  });

  test('the plain TCP NBD listener was warned about at start, naming the exports open to anyone', async () => {
    assert.match(d.log, /NBD OVER PLAIN TCP on tcp:127\.0\.0\.1:\d+ \(no storage\.tls\)/);
    // Only the exports admitted: x (down, retrying), not cfg-out or y (refused).
    assert.match(d.log, /exports \\"x\\" have no allowed_clients/);
  });
});

describe('configured storage.roots', { timeout: 60_000 }, () => {
  let d: TestDaemon;

  before(async () => {
    d = await startDaemon({
      hostId: 'roots2',
      extra: (dir) => ({ storage: { listen: [`unix:${join(dir, 'nbd.sock')}`], roots: [join(dir, 'images')] } }),
    });
    await mkdir(d.path('images'));
    await writeFile(d.path('outside.img'), Buffer.alloc(MiB));
  });

  after(async () => {
    await d?.cleanup();
  });

  test('a file under a configured root is served; the state dir is no longer a root; no TCP warning', async () => {
    const add = await d.cli([
      'export',
      'add',
      'img',
      '--backend',
      'file',
      '--path',
      d.path('images/a.img'),
      '--size',
      '1M',
    ]);
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await runOk('nbdinfo', ['--size', `nbd+unix:///img?socket=${d.path('nbd.sock')}`])).trim(), `${MiB}`);
    const out = await d.cli(['export', 'add', 'out', '--backend', 'file', '--path', d.path('outside.img')]);
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`outside the directories exports may use \\[${d.path('images')}\\]`));
    const inState = await d.cli([
      'export',
      'add',
      'st',
      '--backend',
      'file',
      '--path',
      join(d.stateDir, 'exports', 's.img'),
      '--size',
      '1M',
    ]);
    assert.equal(inState.code, 1);
    assert.doesNotMatch(d.log, /PLAIN TCP/);
  });
});
