import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { CowBackend } from '../../src/storage/backends/cow.js';
import { FileBackend } from '../../src/storage/backends/file.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { RemoteBackend } from '../../src/storage/backends/remote.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { STATE_HOLE, STATE_ZERO } from '../../src/storage/nbd/constants.js';
import { createNbdServer, type NbdServer } from '../../src/storage/nbd/server.js';
import { backendCompliance, pattern } from '../helpers/nbd-compliance.js';

let dir = '';
let n = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-backends-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
const file = (): string => join(dir, `f${n++}.img`);

describe('memory backend', () => {
  backendCompliance({
    writable: async (size) => new MemoryBackend({ size }),
    readOnly: async (size) => new MemoryBackend({ size, readOnly: true }),
  });

  it('reports untouched and trimmed chunks as holes', async () => {
    const b = new MemoryBackend({ size: 1 << 20 });
    await b.write(65536, Buffer.alloc(65536, 1), false);
    assert.deepEqual(await b.extents(0, 1 << 20), [
      { length: 65536, flags: STATE_HOLE | STATE_ZERO },
      { length: 65536, flags: 0 },
      { length: (1 << 20) - 131072, flags: STATE_HOLE | STATE_ZERO },
    ]);
    await b.trim(65536, 65536, false);
    assert.deepEqual(await b.extents(0, 1 << 20), [{ length: 1 << 20, flags: STATE_HOLE | STATE_ZERO }]);
    assert.equal(b.allocated, 0);
  });

  it('releases every chunk when closed', async () => {
    const b = new MemoryBackend({ size: 8 << 20 });
    await b.write(0, Buffer.alloc(4 << 20, 7), false);
    assert.equal(b.allocated, 4 << 20);
    await b.close();
    assert.equal(b.allocated, 0);
  });
});

describe('file backend', () => {
  it('refuses an image that opens outside `within` (directly or through a symlink), and opens one inside', async () => {
    const root = join(dir, 'root');
    const outside = join(dir, 'outside.img');
    await mkdir(root);
    await writeFile(outside, Buffer.alloc(4096));
    await symlink(outside, join(root, 'link.img'));
    for (const path of [outside, join(root, 'link.img')]) {
      await assert.rejects(FileBackend.open({ path, within: [root] }), (err: unknown) => {
        assert.equal((err as { code?: string }).code, 'ERR_FILE_OUTSIDE_ROOTS');
        assert.match(String(err), /outside\.img, outside the directories exports may use/);
        return true;
      });
    }
    const ok = await FileBackend.open({ path: join(root, 'in.img'), size: 4096, within: [root] });
    assert.equal(ok.size, 4096);
    await ok.close();
  });

  backendCompliance({
    writable: async (size) => FileBackend.open({ path: file(), size }),
    readOnly: async (size) => {
      const p = file();
      await (await FileBackend.open({ path: p, size })).close();
      return FileBackend.open({ path: p, readOnly: true });
    },
  });

  it('frees the blocks of a trimmed tail (the file becomes sparse there)', async () => {
    const p = file();
    const b = await FileBackend.open({ path: p, size: 8 << 20 });
    await b.write(0, pattern(8 << 20, 1), true);
    const full = (await stat(p)).blocks;
    await b.trim(4 << 20, 4 << 20, true);
    assert.ok((await stat(p)).blocks < full, 'blocks were freed');
    assert.equal((await stat(p)).size, 8 << 20);
    assert.deepEqual(await b.read(0, 4 << 20), pattern(8 << 20, 1).subarray(0, 4 << 20));
    await b.close();
  });

  it('punches a hole for TRIM anywhere, and block status reports holes and data', async () => {
    const p = file();
    const b = await FileBackend.open({ path: p, size: 8 << 20 });
    assert.deepEqual(await b.extents(0, 8 << 20), [{ length: 8 << 20, flags: STATE_HOLE | STATE_ZERO }]);
    await b.write(0, pattern(8 << 20, 2), true);
    const full = (await stat(p)).blocks;
    await b.trim(2 << 20, 1 << 20, true);
    assert.ok((await stat(p)).blocks < full, 'blocks were freed in the middle of the file');
    assert.equal((await stat(p)).size, 8 << 20);
    assert.deepEqual(await b.extents(0, 8 << 20), [
      { length: 2 << 20, flags: 0 },
      { length: 1 << 20, flags: STATE_HOLE | STATE_ZERO },
      { length: 5 << 20, flags: 0 },
    ]);
    assert.deepEqual(await b.extents(2 << 20, 4096), [{ length: 4096, flags: STATE_HOLE | STATE_ZERO }]);
    assert.deepEqual(
      await b.read((2 << 20) - 4, 8),
      Buffer.concat([pattern(8 << 20, 2).subarray((2 << 20) - 4, 2 << 20), Buffer.alloc(4)]),
    );
    await b.close();
  });

  it('zeroes by punching, or in place with NO_HOLE, and honours FAST_ZERO', async () => {
    const b = await FileBackend.open({ path: file(), size: 1 << 20 });
    await b.write(0, Buffer.alloc(1 << 20, 0x33), false);
    await b.writeZeroes(65536, 65536, { noHole: false, fastZero: true, fua: false });
    await b.writeZeroes(262144, 65536, { noHole: true, fastZero: true, fua: true });
    const ext = await b.extents(0, 1 << 20);
    assert.deepEqual(ext[1], { length: 65536, flags: STATE_HOLE | STATE_ZERO }, JSON.stringify(ext));
    const r = await b.read(0, 1 << 20);
    const expect = Buffer.alloc(1 << 20, 0x33);
    expect.fill(0, 65536, 131072);
    expect.fill(0, 262144, 327680);
    assert.deepEqual(r, expect);
    await b.close();
  });

  it('lands every one of many small writes issued in one turn (one batch) and reads them back', async () => {
    const b = await FileBackend.open({ path: file(), size: 1 << 20 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => b.write(i * 8192, Buffer.alloc(4096, i + 1), i % 7 === 0)));
    const r = await b.read(0, 1 << 20);
    for (let i = 0; i < 100; i++) assert.deepEqual(r.subarray(i * 8192, i * 8192 + 4096), Buffer.alloc(4096, i + 1));
    await b.close();
  });

  it('names the path and says how to create it when the image is missing', async () => {
    await assert.rejects(FileBackend.open({ path: join(dir, 'missing.img') }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_FILE_BACKEND');
      assert.match(err.message, /missing\.img.*give a size/);
      return true;
    });
  });
});

describe('copy-on-write backend over memory', () => {
  backendCompliance({
    writable: async (size) =>
      CowBackend.create({
        base: new MemoryBackend({ size, readOnly: true }),
        overlay: new MemoryBackend({ size }),
        blockSize: 4096,
      }),
  });

  it('reads the base until a block is written, and never writes the base', async () => {
    const base = new MemoryBackend({ size: 1 << 20 });
    await base.write(0, pattern(1 << 20, 9), false);
    const cow = await CowBackend.create({ base, overlay: new MemoryBackend({ size: 1 << 20 }) });
    assert.deepEqual(await cow.read(1000, 5000), pattern(1 << 20, 9).subarray(1000, 6000));
    await cow.write(70_000, Buffer.alloc(10, 0xee), false);
    const expect = Buffer.from(pattern(1 << 20, 9));
    expect.fill(0xee, 70_000, 70_010);
    assert.deepEqual(await cow.read(0, 1 << 20), expect);
    assert.deepEqual(await base.read(0, 1 << 20), pattern(1 << 20, 9), 'base unchanged');
    assert.equal(cow.allocatedBlocks, 1);
  });

  it('keeps every one of many concurrent first writes into one block', async () => {
    const base = new MemoryBackend({ size: 65536 });
    await base.write(0, Buffer.alloc(65536, 0x11), false);
    const cow = await CowBackend.create({ base, overlay: new MemoryBackend({ size: 65536 }) });
    await Promise.all(Array.from({ length: 32 }, (_, i) => cow.write(i * 1024, Buffer.alloc(512, i + 1), false)));
    const r = await cow.read(0, 65536);
    for (let i = 0; i < 32; i++) {
      assert.deepEqual(r.subarray(i * 1024, i * 1024 + 512), Buffer.alloc(512, i + 1), `write ${i}`);
      assert.deepEqual(r.subarray(i * 1024 + 512, i * 1024 + 1024), Buffer.alloc(512, 0x11), `base after ${i}`);
    }
  });
});

describe('copy-on-write backend over files with a persistent bitmap', () => {
  backendCompliance({
    writable: async (size) => {
      const basePath = file();
      await (await FileBackend.open({ path: basePath, size })).close();
      return CowBackend.create({
        base: await FileBackend.open({ path: basePath, readOnly: true }),
        overlay: await FileBackend.open({ path: file(), size }),
        bitmapPath: `${file()}.bitmap`,
      });
    },
  });

  it('reopens with the same content after a flush', async () => {
    const basePath = file();
    const overlayPath = file();
    const bitmapPath = `${overlayPath}.bitmap`;
    const base = await FileBackend.open({ path: basePath, size: 1 << 20 });
    await base.write(0, pattern(1 << 20, 4), true);
    await base.close();
    const open = async () =>
      CowBackend.create({
        base: await FileBackend.open({ path: basePath, readOnly: true }),
        overlay: await FileBackend.open({ path: overlayPath, size: 1 << 20 }),
        bitmapPath,
      });
    const a = await open();
    await a.write(100_000, Buffer.alloc(3000, 0x77), false);
    await a.flush();
    await a.close();
    const b = await open();
    const expect = Buffer.from(pattern(1 << 20, 4));
    expect.fill(0x77, 100_000, 103_000);
    assert.deepEqual(await b.read(0, 1 << 20), expect);
    await b.close();
  });
});

describe('remote backend (NBD client to a second server)', () => {
  const servers: NbdServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.destroy()));
  });
  const remote = async (size: number, readOnly = false) => {
    const exports = new ExportRegistry();
    exports.add({ name: 'r', backend: new MemoryBackend({ size }), readOnly });
    const srv = createNbdServer({
      logger: silentLogger(),
      exports,
      listen: [{ type: 'tcp', host: '127.0.0.1', port: 0 }],
    });
    await srv.open();
    servers.push(srv);
    return RemoteBackend.connect({ address: srv.addresses()[0]!, export: 'r' });
  };
  backendCompliance({ writable: (size) => remote(size), readOnly: (size) => remote(size, true) });

  it('re-dials a restarted remote, retries the request, and fails the next flush once if unflushed writes may be lost', async () => {
    const store = new MemoryBackend({ size: 1 << 20 });
    const start = async () => {
      const exports = new ExportRegistry();
      exports.add({ name: 'r', backend: store });
      const srv = createNbdServer({
        logger: silentLogger(),
        exports,
        listen: [{ type: 'unix', path: join(dir, 'restart.sock') }],
      });
      await srv.open();
      servers.push(srv);
      return srv;
    };
    const first = await start();
    const b = await RemoteBackend.connect({ address: first.addresses()[0]!, export: 'r' });
    await b.write(0, Buffer.from('flushed'), false);
    await b.flush();
    await b.write(100, Buffer.from('maybe'), false);
    await first.destroy();
    await start();
    assert.equal((await b.read(0, 7)).toString(), 'flushed');
    await assert.rejects(b.flush(), (err: Error & { code?: string }) => err.code === 'ERR_NBD_REMOTE_LOST');
    await b.flush();
    await b.close();
  });

  it('passes the remote holes through as extents', async () => {
    const b = await remote(1 << 20);
    await b.write(0, Buffer.alloc(65536, 1), false);
    assert.deepEqual(await b.extents(0, 1 << 20), [
      { length: 65536, flags: 0 },
      { length: (1 << 20) - 65536, flags: STATE_HOLE | STATE_ZERO },
    ]);
    await b.close();
  });
});
