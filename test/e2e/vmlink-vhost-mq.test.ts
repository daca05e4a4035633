/**
 * A multiqueue vhost-user NIC with a real guest: two vCPUs, `queues=2`, so
 * Linux's virtio-net driver enables both queue pairs; traffic to and from a
 * VM on a single-queue vhost-user port flows intact.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useVmFabric } from '../helpers/e2e.js';
import { pingUntilReply, transfer } from '../helpers/guest-net.js';
import { bootVms, type Vm } from '../helpers/vm.js';

const MEM_MB = 160;

describe('multiqueue vhost-user with a real guest', { timeout: 600_000 }, () => {
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'mq', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/mq.sock`, memory_mb: MEM_MB, queues: 2 },
        { name: 'one', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/one.sock`, memory_mb: MEM_MB },
      ],
    },
    vms: async (daemon) => {
      const mq = await daemon.qemuArgs('mq');
      const one = await daemon.qemuArgs('one');
      return bootVms([
        { name: 'mq', ip: '10.0.9.1/24', memMb: MEM_MB, netArgs: [...mq.args, '-smp', '2'] },
        { name: 'one', ip: '10.0.9.2/24', memMb: MEM_MB, netArgs: one.args },
      ]);
    },
  });

  test('the guest enables both queue pairs, pings and moves 10 MiB both ways intact', async () => {
    await fab.diagnose(async () => {
      const [mq, one] = fab.vms as [Vm, Vm];
      assert.equal((await pingUntilReply(mq, one, 10)).code, 0);
      const t1 = await transfer(mq, one, 10);
      assert.equal(t1.received, t1.sent);
      const t2 = await transfer(one, mq, 10);
      assert.equal(t2.received, t2.sent);
      const { port } = await fab.daemon.json<{ port: unknown }>(['port', 'show', 'mq']);
      const rings = JSON.stringify(port);
      for (const i of [0, 1, 2, 3]) assert.match(rings, new RegExp(`"index":${i},"num":\\d+,"ready":true`), rings);
    });
  });
});
