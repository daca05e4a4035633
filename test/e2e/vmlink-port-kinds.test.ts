/**
 * Every QEMU port kind interoperates: one VM on each of stream (unix),
 * stream (tcp), socket (tcp) and dgram (udp), all on one network, and every
 * VM pings every other one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useVmFabric } from '../helpers/e2e.js';
import { pingUntilReply } from '../helpers/guest-net.js';
import { freeTcpPort, freeUdpPort } from '../helpers/vm.js';

describe('vmlink port kinds with real VMs', { timeout: 300_000 }, () => {
  const fab = useVmFabric({
    daemon: async () => {
      const [streamTcp, socketTcp, udpVmlink, udpQemu] = [
        await freeTcpPort(),
        await freeTcpPort(),
        await freeUdpPort(),
        await freeUdpPort(),
      ];
      return {
        networks: [{ name: 'lab', vni: 100 }],
        ports: (dir: string) => [
          { name: 'stream-unix', network: 'lab', kind: 'stream', listen: `unix:${dir}/stream.sock` },
          { name: 'stream-tcp', network: 'lab', kind: 'stream', listen: `tcp:127.0.0.1:${streamTcp}` },
          { name: 'socket-tcp', network: 'lab', kind: 'socket', listen: `tcp:127.0.0.1:${socketTcp}` },
          {
            name: 'dgram-udp',
            network: 'lab',
            kind: 'dgram',
            local: `udp:127.0.0.1:${udpVmlink}`,
            remote: `udp:127.0.0.1:${udpQemu}`,
          },
        ],
      };
    },
    vms: [
      { port: 'stream-unix', ip: '10.0.1.1/24' },
      { port: 'stream-tcp', ip: '10.0.1.2/24' },
      { port: 'socket-tcp', ip: '10.0.1.3/24' },
      { port: 'dgram-udp', ip: '10.0.1.4/24' },
    ],
  });

  test('a VM on each port kind reaches a VM on every other kind', async () => {
    await fab.diagnose(async () => {
      // Each source pings its peers one after another; the sources run in parallel.
      const rows = await Promise.all(
        fab.vms.map(async (from) => {
          const row: string[] = [];
          for (const to of fab.vms) {
            if (to === from) continue;
            const r = await pingUntilReply(from, to, 5);
            row.push(`${from.name} -> ${to.name}: ${r.code === 0 ? 'ok' : `FAILED\n${r.output}`}`);
          }
          return row;
        }),
      );
      const lines = rows.flat();
      assert.equal(lines.length, 12);
      const failed = lines.filter((l) => !l.endsWith(': ok'));
      assert.deepEqual(failed, [], lines.join('\n'));
    });
  });

  test('every port is up and has learned its VM', async () => {
    const { ports } = await fab.daemon.json<{ ports: { name: string; state: string; macs: number }[] }>([
      'port',
      'list',
    ]);
    assert.deepEqual(ports.map((p) => `${p.name}:${p.state}:${p.macs}`).sort(), [
      'dgram-udp:up:1',
      'socket-tcp:up:1',
      'stream-tcp:up:1',
      'stream-unix:up:1',
    ]);
  });
});
