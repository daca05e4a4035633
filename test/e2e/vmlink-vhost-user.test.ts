/**
 * vhost-user ports with real QEMU guests (TCG): two VMs whose virtio-net
 * rings live in memory shared with vmlink ping each other and move 10 MiB
 * with matching sha256; a vhost-user VM reaches a VM on a stream port; and a
 * VM whose connection drops reconnects (QEMU's reconnect=) and works again.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useVmFabric } from '../helpers/e2e.js';
import { pingUntilReply, transfer } from '../helpers/guest-net.js';
import type { Vm } from '../helpers/vm.js';

const MEM_MB = 160;

describe('vhost-user ports with real VMs', { timeout: 600_000 }, () => {
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'va', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/va.sock`, memory_mb: MEM_MB },
        { name: 'vb', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vb.sock`, memory_mb: MEM_MB },
        { name: 'st', network: 'lab', kind: 'stream', listen: `unix:${dir}/st.sock` },
      ],
    },
    vms: [
      { port: 'va', ip: '10.0.7.1/24', memMb: MEM_MB },
      { port: 'vb', ip: '10.0.7.2/24', memMb: MEM_MB },
      { port: 'st', ip: '10.0.7.3/24', memMb: MEM_MB },
    ],
  });

  test('qemu-args gives a shared memfd backend, the chardev with reconnect and vectors=0', async () => {
    const { args } = await fab.daemon.qemuArgs('va');
    const text = args.join(' ');
    assert.match(text, new RegExp(`-object memory-backend-memfd,id=mem-va,size=${MEM_MB}M,share=on`));
    assert.match(text, /-numa node,memdev=mem-va/);
    assert.match(text, /-chardev socket,id=chr-va,path=\S+\/va\.sock,reconnect=1/);
    assert.match(text, /-netdev vhost-user,id=va,chardev=chr-va/);
    assert.match(text, /-device virtio-net-pci,netdev=va,mac=\S+,vectors=0,rx_queue_size=1024,tx_queue_size=1024/);
  });

  test('two VMs on vhost-user ports ping each other', async () => {
    await fab.diagnose(async () => {
      const [a, b] = fab.vms as [Vm, Vm];
      const r = await pingUntilReply(a, b, 10);
      assert.equal(r.code, 0, r.output);
      const back = await pingUntilReply(b, a, 5);
      assert.equal(back.code, 0, back.output);
    });
  });

  test('moves 10 MiB between the two vhost-user VMs with the same sha256 on both ends', async () => {
    await fab.diagnose(async () => {
      const [a, b] = fab.vms as [Vm, Vm];
      const t = await transfer(a, b, 10);
      assert.equal(t.bytes, 10 * 1024 * 1024);
      assert.equal(t.received, t.sent);
    });
  });

  test('a vhost-user VM reaches a VM on a stream port, and 10 MiB arrive intact', async () => {
    await fab.diagnose(async () => {
      const [a, , s] = fab.vms as [Vm, Vm, Vm];
      const r = await pingUntilReply(a, s, 10);
      assert.equal(r.code, 0, r.output);
      const t = await transfer(s, a, 10);
      assert.equal(t.received, t.sent);
    });
  });

  test('the ports report attached front-ends with EVENT_IDX and mergeable buffers', async () => {
    const { port } = await fab.daemon.json<{ port: { state: string; transport: Record<string, unknown> } }>([
      'port',
      'show',
      'va',
    ]);
    assert.equal(port.state, 'up');
    const t = JSON.stringify(port);
    assert.match(t, /"attached":true/);
    assert.match(t, /"event_idx":true/);
    assert.match(t, /"mrg_rxbuf":true/);
  });

  test('after the daemon restarts, QEMU reconnects and traffic resumes', async () => {
    await fab.diagnose(async () => {
      const [a, b] = fab.vms as [Vm, Vm];
      await fab.daemon.stop();
      await fab.daemon.start();
      // QEMU re-dials every second (reconnect=1) and replays the set-up of the running guest.
      let r = await pingUntilReply(a, b, 30);
      assert.equal(r.code, 0, r.output);
      r = await pingUntilReply(b, a, 5);
      assert.equal(r.code, 0, r.output);
    });
  });
});
