/**
 * QEMU's own VDE backend (`-netdev vde,sock=DIR`, libvdeplug inside QEMU)
 * joins a vmlink vde port as it would join vde_switch: a VM on it and a VM
 * on a stream port ping each other and move a checksummed file.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useVmFabric } from '../helpers/e2e.js';
import { pingUntilReply, transfer } from '../helpers/guest-net.js';
import type { Vm } from '../helpers/vm.js';

describe('a QEMU VM on -netdev vde', { timeout: 300_000 }, () => {
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'vde', network: 'lab', kind: 'vde', dir: `${dir}/vde` },
        { name: 'stream', network: 'lab', kind: 'stream', listen: `unix:${dir}/stream.sock` },
      ],
    },
    vms: [
      { port: 'vde', ip: '10.0.8.1/24' },
      { port: 'stream', ip: '10.0.8.2/24' },
    ],
  });

  test('qemu-args gives QEMU its vde backend on the port directory', async () => {
    const q = await fab.daemon.qemuArgs('vde');
    assert.match(q.args[1] ?? '', /^vde,id=vde,sock=\/.*\/vde$/);
  });

  test('the VM on the vde port and the VM on the stream port ping both ways and move a file intact', async () => {
    await fab.diagnose(async () => {
      const [a, b] = fab.vms as [Vm, Vm];
      assert.equal((await pingUntilReply(a, b)).code, 0);
      assert.equal((await pingUntilReply(b, a)).code, 0);
      const t = await transfer(a, b, 2);
      assert.equal(t.bytes, 2 << 20);
      assert.equal(t.received, t.sent);
    });
    const { port } = await fab.daemon.json<{ port: { state: string; macs: number } }>(['port', 'show', 'vde']);
    assert.equal(port.state, 'up');
    assert.equal(port.macs, 1);
  });
});
