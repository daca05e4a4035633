/**
 * Durability across a crash: data written and flushed (or written with FUA)
 * through the standalone server survives SIGKILL and a restart, for the file
 * backend and for a copy-on-write export whose overlay and bitmap are files.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { CMD_FLAG } from '../../src/storage/nbd/constants.js';
import { type ChildServer, exited, runOk, spawnServer } from '../helpers/nbd-peer.js';

const SIZE = 16 * 1024 * 1024;

describe('NBD durability across SIGKILL', { timeout: 120_000 }, () => {
  let dir = '';
  const children: ChildServer[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-crash-'));
    const base = randomBytes(SIZE);
    await writeFile(join(dir, 'base.img'), base);
  });
  after(async () => {
    for (const c of children) c.proc.kill('SIGKILL');
    await Promise.all(children.map((c) => exited(c.proc)));
    await rm(dir, { recursive: true, force: true });
  });

  const config = () => ({
    listen: [`unix:${join(dir, 'crash.sock')}`],
    exports: [
      { name: 'file', backend: { kind: 'file', path: join(dir, 'disk.img'), size: SIZE } },
      {
        name: 'cow',
        backend: {
          kind: 'cow',
          base: { kind: 'file', path: join(dir, 'base.img'), readOnly: true },
          overlay: { kind: 'file', path: join(dir, 'overlay.img'), size: SIZE },
          bitmapPath: join(dir, 'overlay.bitmap'),
        },
      },
    ],
  });

  const start = async () => {
    const c = await spawnServer(config());
    children.push(c);
    return c;
  };

  it('reads back flushed and FUA writes after the server is killed and restarted', async () => {
    const first = await start();
    const address = first.addresses[0]!;
    const flushed = randomBytes(1 << 20);
    const fua = randomBytes(100_000);
    for (const name of ['file', 'cow']) {
      const c = await NbdClient.connect({ address, export: name });
      await c.write(3 << 20, flushed);
      await c.flush();
      await c.write(9_000_001, fua, CMD_FLAG.FUA);
      c.destroy();
    }
    first.proc.kill('SIGKILL');
    await exited(first.proc);

    const second = await start();
    for (const name of ['file', 'cow']) {
      const c = await NbdClient.connect({ address: second.addresses[0]!, export: name });
      assert.deepEqual(await c.read(3 << 20, 1 << 20), flushed, `${name}: flushed write`);
      assert.deepEqual(await c.read(9_000_001, 100_000), fua, `${name}: FUA write`);
      await c.disconnect();
    }
    // A real client agrees: nbdinfo sees the export at its full size after the restart.
    const out = await runOk('nbdinfo', ['--size', `nbd+unix:///file?socket=${join(dir, 'crash.sock')}`]);
    assert.equal(Number(out.trim()), SIZE);
    second.proc.kill('SIGTERM');
    await exited(second.proc);
    assert.equal(second.proc.exitCode, 0, `graceful stop: ${second.stderr()}`);
  });
});
