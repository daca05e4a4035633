/**
 * Location-transparent block devices across hosts: two vmlink daemons in two
 * network namespaces joined by a veth pair. Daemon B serves a file export on
 * TCP (allowed for A's address only); daemon A serves a remote export that
 * points at B over the veth. qemu-img writes through A and reads through B.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ExportView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { run, runOk } from '../helpers/nbd-peer.js';
import { ip, Netns, uniqueIfname } from '../helpers/netns.js';

const MiB = 1024 * 1024;
const A_IP = '10.77.0.1';
const B_IP = '10.77.0.2';

describe('NBD export chained across two network namespaces', { timeout: 120_000 }, () => {
  let nsA: Netns | undefined;
  let nsB: Netns | undefined;
  let a: TestDaemon | undefined;
  let b: TestDaemon | undefined;
  const uri = (d: TestDaemon, name: string) => `nbd+unix:///${name}?socket=${d.path('nbd.sock')}`;

  before(async () => {
    nsA = await Netns.create('nbdA');
    nsB = await Netns.create('nbdB');
    const va = uniqueIfname('vna');
    const vb = uniqueIfname('vnb');
    await ip('link', 'add', va, 'type', 'veth', 'peer', 'name', vb);
    await nsA.adopt(va, `${A_IP}/24`);
    await nsB.adopt(vb, `${B_IP}/24`);
    b = await startDaemon({
      hostId: 'b',
      wrap: ['ip', 'netns', 'exec', nsB.name],
      extra: (dir) => ({
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`, `tcp:${B_IP}:10809`], roots: [dir] },
        exports: [
          {
            name: 'disk',
            backend: { type: 'file', path: join(dir, 'disk.img'), size: '16M' },
            allowed_clients: [`${A_IP}/32`],
          },
        ],
      }),
    });
    a = await startDaemon({
      hostId: 'a',
      wrap: ['ip', 'netns', 'exec', nsA.name],
      extra: (dir) => ({ storage: { listen: [`unix:${join(dir, 'nbd.sock')}`] } }),
    });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await nsA?.delete();
    await nsB?.delete();
  });

  test('daemon A serves a remote export backed by daemon B over the veth', async () => {
    const d = a as TestDaemon;
    const r = await d.cli([
      'export',
      'add',
      'via-b',
      '--backend',
      'remote',
      '--address',
      `tcp:${B_IP}:10809`,
      '--export',
      'disk',
    ]);
    assert.equal(r.code, 0, `${r.stderr}\n${d.log}`);
    const e = (await d.json<{ export: ExportView }>(['export', 'show', 'via-b'])).export;
    assert.equal(e.state, 'up');
    assert.equal(e.size, 16 * MiB);
    assert.deepEqual(e.backend, { type: 'remote', address: `tcp:${B_IP}:10809`, export: 'disk' });
  });

  test('qemu-img writes an image through A and reads the same bytes through B', async () => {
    const src = (a as TestDaemon).path('random.raw');
    await writeFile(src, randomBytes(16 * MiB));
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri(a as TestDaemon, 'via-b')]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri(b as TestDaemon, 'disk')]);
    assert.deepEqual(await readFile((b as TestDaemon).path('disk.img')), await readFile(src));
    const onB = (await (b as TestDaemon).json<{ export: ExportView }>(['export', 'show', 'disk'])).export;
    assert.ok(onB.counters.bytes_written >= 16 * MiB, JSON.stringify(onB.counters));
  });

  test("B refuses a TCP client that is not in the export's allowed_clients", async () => {
    // From B's own namespace the client address is B_IP, not A_IP.
    const r = await run('ip', ['netns', 'exec', (nsB as Netns).name, 'nbdinfo', `nbd://${B_IP}:10809/disk`]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /server replied with error/);
  });
});
