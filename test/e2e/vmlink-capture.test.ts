/**
 * `vmlink capture PORT -w FILE.pcap -c N` while two real VMs ping: tshark
 * decodes the file and finds ICMP echo requests and replies between them.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { useVmFabric } from '../helpers/e2e.js';
import { addr, pingUntilReply } from '../helpers/guest-net.js';
import type { Vm } from '../helpers/vm.js';

const execFileP = promisify(execFile);

describe('vmlink capture with real VMs', { timeout: 300_000 }, () => {
  let a: Vm;
  let b: Vm;
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'a', network: 'lab', kind: 'stream', listen: `unix:${dir}/a.sock` },
        { name: 'b', network: 'lab', kind: 'stream', listen: `unix:${dir}/b.sock` },
      ],
    },
    vms: [
      { port: 'a', ip: '10.0.3.1/24' },
      { port: 'b', ip: '10.0.3.2/24' },
    ],
  });
  before(() => {
    [a, b] = fab.vms as [Vm, Vm];
  });

  test('a capture taken during a ping decodes in tshark as ICMP echo request and reply', async () => {
    await fab.diagnose(async () => {
      const warm = await pingUntilReply(a, b);
      assert.equal(warm.code, 0, warm.output);
      const file = join(fab.daemon.dir, 'a.pcap');
      const count = 8;
      // A steady ping in the background of guest a; the capture takes the next `count` frames.
      await a.sh(`ping -c 120 ${addr(b)} >/dev/null 2>&1 &`);
      try {
        const cap = await fab.daemon.cli(['capture', 'a', '-w', file, '-c', String(count)], 120_000);
        assert.equal(cap.code, 0, cap.stderr);
      } finally {
        await a.run('killall ping');
      }
      assert.ok((await stat(file)).size > 24, 'pcap has no records');

      const all = await execFileP('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number']);
      assert.equal(all.stdout.trim().split('\n').length, count, `frames in ${file}:\n${all.stdout}`);
      const icmp = await execFileP('tshark', [
        ...['-r', file, '-Y', 'icmp', '-T', 'fields'],
        ...['-e', 'icmp.type', '-e', 'ip.src', '-e', 'ip.dst'],
      ]);
      const rows = new Set(icmp.stdout.trim().split('\n'));
      assert.ok(rows.has(`8\t${addr(a)}\t${addr(b)}`), `no echo request a -> b in:\n${icmp.stdout}`);
      assert.ok(rows.has(`0\t${addr(b)}\t${addr(a)}`), `no echo reply b -> a in:\n${icmp.stdout}`);
    });
  });
});
