/**
 * Surviving a daemon crash: the VMs listen (QEMU `-netdev stream,server=on`)
 * and vmlink dials them (`connect` ports). The daemon is SIGKILLed and
 * started again with the same config; it re-dials and the guests talk again
 * without being touched.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { attachVms, diagnoseOnFailure } from '../helpers/e2e.js';
import { ping, pingUntilReply } from '../helpers/guest-net.js';
import { freeTcpPort, type Vm } from '../helpers/vm.js';

describe('vmlink daemon restart under running VMs', { timeout: 300_000 }, () => {
  let daemon: TestDaemon | undefined;
  let vms: Vm[] = [];
  let a: Vm;
  let b: Vm;
  const diagnose = <T>(fn: () => Promise<T>) =>
    diagnoseOnFailure(
      () => vms,
      () => daemon,
      fn,
    );

  before(async () => {
    const tcp = await freeTcpPort();
    const reconnect = { min_ms: 50, max_ms: 500 };
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'a', network: 'lab', kind: 'stream', connect: `unix:${dir}/a.sock`, reconnect },
        { name: 'b', network: 'lab', kind: 'stream', connect: `tcp:127.0.0.1:${tcp}`, reconnect },
      ],
    });
    vms = await diagnose(() =>
      attachVms(daemon!, [
        { port: 'a', ip: '10.0.2.1/24' },
        { port: 'b', ip: '10.0.2.2/24' },
      ]),
    );
    [a, b] = vms as [Vm, Vm];
  });

  after(async () => {
    await Promise.all(vms.map((v) => v.close()));
    await daemon?.cleanup();
  });

  test('the VMs reach each other through the ports vmlink dialled', async () => {
    await diagnose(async () => {
      // vmlink re-dials until QEMU listens: the first rounds may find the port not yet up.
      const r = await pingUntilReply(a, b, 20);
      assert.equal(r.code, 0, r.output);
    });
  });

  test('connectivity returns after the daemon is SIGKILLed and restarted, with the same QEMU processes', async () => {
    await diagnose(async () => {
      const pids = vms.map((v) => v.pid);
      const oldPid = daemon!.pid;
      await daemon!.kill('SIGKILL');

      // Nothing forwards while the daemon is gone: this proves the traffic went through it.
      const down = await ping(a, b, { count: 2, waitSec: 1 });
      assert.notEqual(down.code, 0, `ping succeeded with the daemon dead:\n${down.output}`);

      await daemon!.start();
      assert.notEqual(daemon!.pid, oldPid);
      const r = await pingUntilReply(a, b, 20);
      assert.equal(r.code, 0, r.output);
      const steady = await ping(b, a, { count: 3 });
      assert.match(steady.output, /3 packets transmitted, 3 packets received/);

      assert.deepEqual(
        vms.map((v) => v.pid),
        pids,
      );
      assert.ok(
        vms.every((v) => v.running),
        'a QEMU process exited',
      );
      const { ports } = await daemon!.json<{ ports: { name: string; state: string }[] }>(['port', 'list']);
      assert.deepEqual(ports.map((p) => `${p.name}:${p.state}`).sort(), ['a:up', 'b:up']);
    });
  });
});
