/**
 * A real QEMU guest uses a vmlink NBD export as its disk: QEMU's NBD client
 * (-blockdev driver=nbd) in front of an NVMe device (built into the guest
 * kernel). Data the host wrote is read by the guest, and data the guest
 * writes and syncs is read back by the host, both checksummed.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileBackend } from '../../src/storage/backends/file.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { type RunningServer, startServer } from '../helpers/nbd-peer.js';
import { bootVm, type Vm, withConsoleOnFailure } from '../helpers/vm.js';

const SIZE = 64 * 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('QEMU guest with a vmlink NBD disk', { timeout: 240_000 }, () => {
  let dir = '';
  let srv: RunningServer;
  let vm: Vm | undefined;
  const hostData = randomBytes(1 << 20);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-guest-'));
    srv = await startServer(dir, 'guest', [
      { name: 'disk', backend: await FileBackend.open({ path: join(dir, 'disk.img'), size: SIZE }) },
    ]);
    const c = await NbdClient.connect({ address: srv.address, export: 'disk' });
    await c.write(0, hostData);
    await c.disconnect();
    await withConsoleOnFailure(
      () => [vm],
      async () => {
        vm = await bootVm({
          name: 'nbd-guest',
          netArgs: [
            ...['-blockdev', `driver=nbd,server.type=unix,server.path=${srv.socket},export=disk,node-name=nbd0`],
            ...['-device', 'nvme,serial=vmlink0,drive=nbd0'],
          ],
        });
        await vm.waitReady();
      },
    );
  });

  after(async () => {
    await vm?.close();
    await srv?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('sees the export as a disk of the export size holding what the host wrote', async () => {
    const size = await vm!.sh('cat /sys/block/nvme0n1/size');
    assert.equal(Number(size.trim()) * 512, SIZE);
    const out = await vm!.sh('dd if=/dev/nvme0n1 bs=65536 count=16 2>/dev/null | sha256sum');
    assert.equal(out.trim().split(/\s+/)[0], sha(hostData));
  });

  it('keeps what the guest writes and syncs, as the host reads it back', async () => {
    const guestSum = await vm!.sh(
      'dd if=/dev/urandom of=/tmp/g bs=65536 count=32 2>/dev/null && ' +
        'dd if=/tmp/g of=/dev/nvme0n1 bs=65536 seek=64 conv=fsync 2>/dev/null && sync && sha256sum /tmp/g',
      { timeoutMs: 120_000 },
    );
    const c = await NbdClient.connect({ address: srv.address, export: 'disk' });
    const back = await c.read(64 * 65536, 32 * 65536);
    await c.disconnect();
    assert.equal(sha(back), guestSum.trim().split(/\s+/)[0]);
  });
});
