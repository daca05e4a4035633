/**
 * A QEMU VM whose virtio-blk disk is served by the vmlink daemon: the export
 * is added with `vmlink export add`, the VM is started with the arguments of
 * `vmlink disk-args`, the guest writes a file to the disk, powers off, and a
 * second boot reads it back with the same checksum (and so does the host).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { diagnoseOnFailure } from '../helpers/e2e.js';
import { bootVm, type Vm } from '../helpers/vm.js';

const SIZE_MIB = 32;
/** Where the guest writes: 2 MiB of random data at 4 MiB into the disk. */
const SEEK_BLOCKS = 64;
const BLOCKS = 32;
const BS = 65536;

const sumOf = (out: string): string => out.trim().split(/\s+/)[0] ?? '';

describe('VM with a virtio-blk disk served by the vmlink daemon', { timeout: 300_000 }, () => {
  let daemon: TestDaemon | undefined;
  let vm: Vm | undefined;
  let diskArgs: string[] = [];
  let written = '';
  const diagnose = <T>(fn: () => Promise<T>) =>
    diagnoseOnFailure(
      () => [vm],
      () => daemon,
      fn,
    );
  const boot = (name: string) =>
    diagnose(async () => {
      vm = await bootVm({ name, netArgs: diskArgs, memMb: 160 });
      await vm.waitReady();
      return vm;
    });

  before(async () => {
    daemon = await startDaemon({
      hostId: 'vmdisk',
      extra: (dir) => ({ storage: { listen: [`unix:${join(dir, 'nbd.sock')}`], roots: [dir] } }),
    });
    const add = await daemon.cli([
      'export',
      'add',
      'vm-disk',
      '--backend',
      'file',
      '--path',
      daemon.path('vm-disk.img'),
      '--size',
      `${SIZE_MIB}M`,
    ]);
    assert.equal(add.code, 0, add.stderr);
    diskArgs = (await daemon.json<{ args: string[] }>(['disk-args', 'vm-disk'])).args;
  });

  after(async () => {
    await vm?.close();
    await daemon?.cleanup();
  });

  test('the guest sees the export as /dev/vda and writes a file to it', async () => {
    const v = await boot('disk1');
    const sectors = await v.sh('cat /sys/block/vda/size');
    assert.equal(Number(sectors.trim()) * 512, SIZE_MIB * 1024 * 1024);
    const out = await v.sh(
      `dd if=/dev/urandom of=/tmp/data bs=${BS} count=${BLOCKS} 2>/dev/null && ` +
        `dd if=/tmp/data of=/dev/vda bs=${BS} seek=${SEEK_BLOCKS} conv=fsync 2>/dev/null && sync && sha256sum /tmp/data`,
      { timeoutMs: 120_000 },
    );
    written = sumOf(out);
    assert.match(written, /^[0-9a-f]{64}$/);
    const show = await daemon!.json<{ export: { clients: number; counters: { bytes_written: number } } }>([
      'export',
      'show',
      'vm-disk',
    ]);
    assert.equal(show.export.clients, 1);
    assert.ok(show.export.counters.bytes_written >= BLOCKS * BS);
  });

  test('after a power-off, a second boot reads the same bytes back from the disk', async () => {
    assert.ok(written, 'the first test wrote the data');
    const first = vm as Vm;
    // The shell dies with the guest: do not wait for the command's end marker.
    void first.run('poweroff -f').catch(() => undefined);
    assert.equal(await first.exited(), 0);
    vm = undefined;
    const v = await boot('disk2');
    const out = await v.sh(`dd if=/dev/vda bs=${BS} skip=${SEEK_BLOCKS} count=${BLOCKS} 2>/dev/null | sha256sum`, {
      timeoutMs: 120_000,
    });
    assert.equal(sumOf(out), written);
  });

  test('the image file on the host holds what the guest wrote', async () => {
    const fh = await open(daemon!.path('vm-disk.img'), 'r');
    try {
      const buf = Buffer.alloc(BLOCKS * BS);
      await fh.read(buf, 0, buf.length, SEEK_BLOCKS * BS);
      assert.equal(createHash('sha256').update(buf).digest('hex'), written);
    } finally {
      await fh.close();
    }
  });
});
