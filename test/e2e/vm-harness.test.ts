/**
 * Proves the VM harness without vmlink: two guests joined directly by QEMU's
 * socket netdev (one listens, the other connects) ping each other and move
 * 10 MiB over TCP, checksummed on both ends.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ping, transfer } from '../helpers/guest-net.js';
import { bootVm, freeTcpPort, type Vm, waitTcpListening, withConsoleOnFailure } from '../helpers/vm.js';

describe('VM harness (two guests linked directly by QEMU)', () => {
  let a: Vm | undefined;
  let b: Vm | undefined;
  const vms = () => [a, b];

  before(async () => {
    const port = await freeTcpPort();
    await withConsoleOnFailure(vms, async () => {
      a = await bootVm({
        name: 'harness-a',
        ip: '10.0.0.1/24',
        netArgs: [
          ...['-netdev', `socket,id=n0,listen=127.0.0.1:${port}`],
          ...['-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01'],
        ],
      });
      // QEMU's connect side gives up at once if nobody listens yet.
      await waitTcpListening(port);
      b = await bootVm({
        name: 'harness-b',
        ip: '10.0.0.2/24',
        netArgs: [
          ...['-netdev', `socket,id=n0,connect=127.0.0.1:${port}`],
          ...['-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02'],
        ],
      });
      await Promise.all([a.waitReady(), b.waitReady()]);
    });
  });

  after(async () => {
    await Promise.all(vms().map((v) => v?.close()));
  });

  test('runs a command in the guest and reports its output and exit status', async () => {
    await withConsoleOnFailure(vms, async () => {
      const vm = a!;
      const ok = await vm.run('echo hello; uname -r');
      assert.equal(ok.code, 0);
      assert.match(ok.output, /^hello\n\d+\.\d+/);
      const bad = await vm.run('false');
      assert.equal(bad.code, 1);
      const exitCode = await vm.run('sh -c "exit 7"');
      assert.equal(exitCode.code, 7);
    });
  });

  test('interrupts a command that outlives its timeout and keeps the shell usable', async () => {
    await withConsoleOnFailure(vms, async () => {
      const vm = a!;
      await assert.rejects(vm.run('sleep 600', { timeoutMs: 1000 }), /timed out after 1000 ms/);
      const after = await vm.run('echo still-here');
      assert.equal(after.code, 0);
      assert.equal(after.output, 'still-here\n');
    });
  });

  test('keeps the shell alive when a background job or an orphan exits while it waits for input', async () => {
    await withConsoleOnFailure(vms, async () => {
      const vm = a!;
      const done = vm.waitForConsole(/bg-done\n[\s\S]*orphan-done\n|orphan-done\n[\s\S]*bg-done\n/);
      // The first is the shell's own child; the second is re-parented to PID 1 when its parent exits.
      await vm.sh("(sleep 1; echo bg-done >/dev/ttyS0) & sh -c '(sleep 1; echo orphan-done >/dev/ttyS0) &'");
      await done;
      const r = await vm.run('echo alive');
      assert.equal(r.output, 'alive\n');
      assert.ok(vm.running);
    });
  });

  test('configures eth0 from the kernel command line', async () => {
    await withConsoleOnFailure(vms, async () => {
      const out = await b!.sh('ip -o -4 addr show dev eth0; cat /sys/class/net/eth0/address');
      assert.match(out, /inet 10\.0\.0\.2\/24/);
      assert.match(out, /52:54:00:00:00:02/);
    });
  });

  test('two guests ping each other', async () => {
    await withConsoleOnFailure(vms, async () => {
      const ab = await ping(a!, b!);
      assert.equal(ab.code, 0, ab.output);
      assert.match(ab.output, /3 packets transmitted, 3 packets received/);
      const ba = await ping(b!, a!);
      assert.equal(ba.code, 0, ba.output);
    });
  });

  test('moves 10 MiB over TCP with identical sha256 on both ends', async () => {
    await withConsoleOnFailure(vms, async () => {
      const r = await transfer(a!, b!, 10);
      assert.equal(r.bytes, 10 * 1024 * 1024);
      assert.match(r.sent, /^[0-9a-f]{64}$/);
      assert.equal(r.received, r.sent);
    });
  });
});
