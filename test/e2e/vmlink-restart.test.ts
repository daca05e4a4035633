/**
 * Surviving a daemon crash: the VMs listen (QEMU `-netdev stream,server=on`)
 * and vmlink dials them (`connect` ports). The daemon is SIGKILLed and
 * started again with the same config; it re-dials and the guests talk again
 * without being touched.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { useVmFabric } from '../helpers/e2e.js';
import { ping, pingUntilReply } from '../helpers/guest-net.js';
import { freeTcpPort, type Vm } from '../helpers/vm.js';

describe('vmlink daemon restart under running VMs', { timeout: 300_000 }, () => {
  let a: Vm;
  let b: Vm;
  const fab = useVmFabric({
    daemon: async () => {
      const tcp = await freeTcpPort();
      const reconnect = { min_ms: 50, max_ms: 500 };
      return {
        networks: [{ name: 'lab', vni: 100 }],
        ports: (dir: string) => [
          { name: 'a', network: 'lab', kind: 'stream', connect: `unix:${dir}/a.sock`, reconnect },
          { name: 'b', network: 'lab', kind: 'stream', connect: `tcp:127.0.0.1:${tcp}`, reconnect },
        ],
      };
    },
    vms: [
      { port: 'a', ip: '10.0.2.1/24' },
      { port: 'b', ip: '10.0.2.2/24' },
    ],
  });
  before(() => {
    [a, b] = fab.vms as [Vm, Vm];
  });

  test('the VMs reach each other through the ports vmlink dialled', async () => {
    await fab.diagnose(async () => {
      // vmlink re-dials until QEMU listens: the first rounds may find the port not yet up.
      const r = await pingUntilReply(a, b, 20);
      assert.equal(r.code, 0, r.output);
    });
  });

  test('connectivity returns after the daemon is SIGKILLed and restarted, with the same QEMU processes', async () => {
    await fab.diagnose(async () => {
      const pids = fab.vms.map((v) => v.pid);
      const oldPid = fab.daemon.pid;
      await fab.daemon.kill('SIGKILL');

      // Nothing forwards while the daemon is gone: this proves the traffic went through it.
      const down = await ping(a, b, { count: 2, waitSec: 1 });
      assert.notEqual(down.code, 0, `ping succeeded with the daemon dead:\n${down.output}`);

      await fab.daemon.start();
      assert.notEqual(fab.daemon.pid, oldPid);
      const r = await pingUntilReply(a, b, 20);
      assert.equal(r.code, 0, r.output);
      const steady = await ping(b, a, { count: 3 });
      assert.match(steady.output, /3 packets transmitted, 3 packets received/);

      assert.deepEqual(
        fab.vms.map((v) => v.pid),
        pids,
      );
      assert.ok(
        fab.vms.every((v) => v.running),
        'a QEMU process exited',
      );
      const { ports } = await fab.daemon.json<{ ports: { name: string; state: string }[] }>(['port', 'list']);
      assert.deepEqual(ports.map((p) => `${p.name}:${p.state}`).sort(), ['a:up', 'b:up']);
    });
  });
});
