/**
 * The NBD server against real clients: nbdinfo, nbdcopy (libnbd), qemu-img
 * and qemu-io, over every backend kind (memory, file, copy-on-write, remote
 * chained to a second vmlink server, remote in front of nbdkit's memory
 * plugin) plus a read-only export.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CowBackend } from '../../src/storage/backends/cow.js';
import { FileBackend } from '../../src/storage/backends/file.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { RemoteBackend } from '../../src/storage/backends/remote.js';
import { type RunningServer, run, runOk, sha256File, startServer } from '../helpers/nbd-peer.js';

const SIZE = 32 * 1024 * 1024;
let dir = '';
let main: RunningServer;
let second: RunningServer;
let image = '';
let nbdkit: ChildProcess | undefined;

/** nbdkit's memory plugin on a unix socket: a foreign server behind our remote backend (nbdkit 1.32 cannot announce readiness, so poll it). */
async function startNbdkit(sock: string): Promise<ChildProcess> {
  const p = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', sock, 'memory', String(SIZE)], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if ((await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`])).code === 0) return p;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nbdkit did not start');
}

/** A raw image: random data at 0 (8 MiB) and at 20 MiB (4 MiB), zeroes elsewhere. */
async function makeImage(path: string): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(SIZE);
  await fh.write(randomBytes(8 << 20), 0, 8 << 20, 0);
  await fh.write(randomBytes(4 << 20), 0, 4 << 20, 20 << 20);
  await fh.close();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-tools-'));
  image = join(dir, 'source.img');
  await makeImage(image);
  second = await startServer(dir, 'second', [{ name: 'backing', backend: new MemoryBackend({ size: SIZE }) }]);
  const kitSock = join(dir, 'nbdkit.sock');
  nbdkit = await startNbdkit(kitSock);
  const baseFile = join(dir, 'base.img');
  await makeImage(baseFile);
  main = await startServer(dir, 'main', [
    { name: 'mem', backend: new MemoryBackend({ size: SIZE }), description: 'memory' },
    { name: 'file', backend: await FileBackend.open({ path: join(dir, 'file.img'), size: SIZE }) },
    {
      name: 'cow',
      backend: await CowBackend.create({
        base: await FileBackend.open({ path: baseFile, readOnly: true }),
        overlay: new MemoryBackend({ size: SIZE }),
      }),
    },
    { name: 'remote', backend: await RemoteBackend.connect({ address: second.address, export: 'backing' }) },
    { name: 'nbdkit', backend: await RemoteBackend.connect({ address: { type: 'unix', path: kitSock } }) },
    { name: 'ro', backend: new MemoryBackend({ size: SIZE }), readOnly: true },
  ]);
});

after(async () => {
  await main?.close();
  await second?.close();
  nbdkit?.kill();
  await rm(dir, { recursive: true, force: true });
});

describe('NBD server with real clients', { timeout: 300_000 }, () => {
  it('lists every export with nbdinfo --list', async () => {
    const out = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${main.socket}`]);
    const names = (JSON.parse(out) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']);
    assert.deepEqual(names.sort(), ['cow', 'file', 'mem', 'nbdkit', 'remote', 'ro']);
  });

  for (const name of ['mem', 'file', 'cow', 'remote', 'nbdkit']) {
    describe(`${name} backend`, () => {
      it('advertises flush, fua, trim, zero and multi-conn to nbdinfo --can', async () => {
        for (const cap of ['flush', 'fua', 'trim', 'zero', 'multi-conn', 'cache']) {
          const r = await run('nbdinfo', ['--can', cap, main.uri(name)]);
          assert.equal(r.code, 0, `--can ${cap}: ${r.stderr}`);
        }
      });

      it('copies a random image in and out with nbdcopy, checksums equal', async () => {
        const back = join(dir, `${name}-nbdcopy.img`);
        await runOk('nbdcopy', [image, main.uri(name)]);
        await runOk('nbdcopy', [main.uri(name), back]);
        assert.equal(await sha256File(back), await sha256File(image));
      });

      it('maps the whole export with nbdinfo --map', async () => {
        const out = await runOk('nbdinfo', ['--map', '--json', main.uri(name)]);
        const ext = JSON.parse(out) as { offset: number; length: number; type: number }[];
        assert.equal(ext[0]?.offset, 0);
        assert.equal(
          ext.reduce((a, e) => a + e.length, 0),
          SIZE,
        );
      });

      it('round-trips an image through qemu-img convert and qemu-img compare', async () => {
        await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, main.uri(name)]);
        await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, main.uri(name)]);
      });

      it('reads back qemu-io write patterns, including concurrent aio writes and FUA', async () => {
        const out = await runOk('qemu-io', [
          '-f',
          'raw',
          '-c',
          'write -P 0xab 0 64k',
          '-c',
          'read -P 0xab 0 64k',
          '-c',
          'aio_write -P 0xcd 1M 64k',
          '-c',
          'aio_write -P 0xce 3M 128k',
          '-c',
          'aio_flush',
          '-c',
          'write -f -P 0x11 5M 4k',
          '-c',
          'write -z 1M 4k',
          '-c',
          'read -P 0 1M 4k',
          '-c',
          'read -P 0xcd 1028k 60k',
          '-c',
          'read -P 0xce 3M 128k',
          '-c',
          'read -P 0x11 5M 4k',
          main.uri(name),
        ]);
        assert.doesNotMatch(out, /Pattern verification failed|error/i, out);
      });
    });
  }

  describe('read-only export', () => {
    it('reports read-only and no trim or zero to nbdinfo --can', async () => {
      assert.equal((await run('nbdinfo', ['--is', 'read-only', main.uri('ro')])).code, 0);
      assert.equal((await run('nbdinfo', ['--can', 'trim', main.uri('ro')])).code, 2);
      assert.equal((await run('nbdinfo', ['--can', 'zero', main.uri('ro')])).code, 2);
    });

    it('refuses qemu-io write access with a permission error and still serves reads', async () => {
      const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', main.uri('ro')]);
      assert.match(w.stdout + w.stderr, /write failed|Operation not permitted|Permission denied|read-only/i);
      const r = await runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0 0 64k', main.uri('ro')]);
      assert.doesNotMatch(r, /Pattern verification failed/);
    });
  });

  describe('file export holes', () => {
    it('shows holes punched by qemu-io discard and zero writes in nbdinfo --map, and data around them', async () => {
      const uri = main.uri('file');
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 32M', uri]);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'discard 4M 4M', '-c', 'write -z -u 16M 2M', uri]);
      const ext = JSON.parse(await runOk('nbdinfo', ['--map', '--json', uri])) as {
        offset: number;
        length: number;
        type: number;
      }[];
      const at = (off: number) => ext.find((e) => e.offset <= off && off < e.offset + e.length);
      assert.equal(at(0)?.type, 0, 'data at 0');
      assert.deepEqual(at(4 << 20), { offset: 4 << 20, length: 4 << 20, type: 3, description: 'hole,zero' });
      assert.equal(at(16 << 20)?.type, 3, 'zeroes written with unmap allowed are a hole');
      assert.equal(at(9 << 20)?.type, 0, 'data after the hole');
      const r = await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0 4M 4M', '-c', 'read -P 0x42 8M 1M', uri]);
      assert.doesNotMatch(r, /Pattern verification failed/);
    });
  });

  it('answers an unknown export name with an error that names it', async () => {
    const r = await run('nbdinfo', [main.uri('nope')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nope/);
  });
});
