/**
 * Large segments from a TAP with offloads reach a VM on a stream port cut
 * into frames with correct checksums: a namespace behind a vnet_hdr TAP port
 * (TSO on) serves a file over HTTP to a real VM on a stream port (QEMU's
 * stream netdev takes no offloads). The guest's kernel verifies every
 * checksum and the file's sha256 must match; a capture of the VM port,
 * decoded by tshark with checksum validation on, must show only MTU-sized
 * frames with good IPv4 and TCP checksums.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { TestDaemon } from '../helpers/daemon.js';
import { useVmFabric } from '../helpers/e2e.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import type { Vm } from '../helpers/vm.js';

const execFileP = promisify(execFile);

/** `vmlink port show NAME --json`, the parts read here. */
async function portCounters(d: TestDaemon, name: string): Promise<PortJson> {
  return (await d.json<{ port: PortJson }>(['port', 'show', name])).port;
}

interface PortJson {
  counters: {
    tx_frames: number;
    offload: { rx_gso: number; tx_gso: number; tx_segmented: number; tx_csum: number };
    drops: Record<string, number>;
  };
}

describe('large segments from a TAP with offloads to a VM', { timeout: 300_000 }, () => {
  let ns: Netns | undefined;
  let httpd: ChildProcess | undefined;
  const ifname = uniqueIfname('vlo');
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'vm', network: 'lab', kind: 'stream', listen: `unix:${dir}/vm.sock` },
        { name: 'ns', network: 'lab', kind: 'tap', ifname, vnet_hdr: true },
      ],
    },
    prepare: async () => {
      ns = await Netns.create('offload');
      await ns.adopt(ifname, '10.0.9.1/24');
      for (const f of ['tx', 'sg', 'tso', 'gso']) await ns.exec('ethtool', '-K', ifname, f, 'on');
    },
    vms: [{ port: 'vm', ip: '10.0.9.2/24' }],
    teardown: async () => {
      httpd?.kill();
      await ns?.delete();
    },
  });

  test('the TAP really offers TSO: the kernel accepted the offloads vmlink asked for', async () => {
    const { stdout } = await ns!.exec('ethtool', '-k', ifname);
    assert.match(stdout, /tcp-segmentation-offload: on/);
    const { port } = await fab.daemon.json<{ port: { transport: Record<string, unknown> } }>(['port', 'show', 'ns']);
    assert.match(String(port.transport['offloads']), /csum,tso4,tso6/);
  });

  test('a file served from the namespace reaches the VM intact, in segments with good checksums', async () => {
    await fab.diagnose(async () => {
      const www = join(fab.daemon.dir, 'www');
      await mkdir(www, { recursive: true });
      const blob = randomBytes(4 << 20);
      await writeFile(join(www, 'blob'), blob);
      const want = createHash('sha256').update(blob).digest('hex');
      httpd = ns!.spawn('busybox', 'httpd', '-f', '-p', '8080', '-h', www);
      const [vm] = fab.vms as [Vm];
      const ping = await vm.run('ping -c 1 -W 2 10.0.9.1 || ping -c 1 -W 2 10.0.9.1', { timeoutMs: 30_000 });
      assert.equal(ping.code, 0, ping.output);

      const pcap = join(fab.daemon.dir, 'vm.pcap');
      const capture = fab.daemon.cli(['capture', 'vm', '-w', pcap, '-c', '400'], 240_000);
      const before = await portCounters(fab.daemon, 'vm');
      const got = await vm.sh(
        'rm -f /tmp/blob; timeout 240 wget -q -O /tmp/blob http://10.0.9.1:8080/blob && sha256sum /tmp/blob',
        {
          timeoutMs: 300_000,
        },
      );
      assert.equal(got.trim().split(/\s+/)[0], want);
      // The capture may have attached late (a slow CLI start): fetch again until it has its frames.
      let captured = false;
      void capture.then(() => {
        captured = true;
      });
      for (let i = 0; i < 5 && !captured; i++)
        await vm.sh('timeout 60 wget -q -O /dev/null http://10.0.9.1:8080/blob', { timeoutMs: 90_000 });
      const cap = await capture;
      assert.equal(cap.code, 0, cap.stderr);

      const vmPort = await portCounters(fab.daemon, 'vm');
      const nsPort = await portCounters(fab.daemon, 'ns');
      const cut = vmPort.counters.offload.tx_segmented - before.counters.offload.tx_segmented;
      assert.ok(cut > 0, `no large segment was cut for the VM: ${JSON.stringify(vmPort.counters.offload)}`);
      assert.ok(nsPort.counters.offload.rx_gso >= cut, JSON.stringify(nsPort.counters.offload));
      assert.equal(nsPort.counters.drops['offload'], 0);

      // tshark validates the checksums itself; every data frame toward the VM must be Good (status 1) and fit the MTU.
      const { stdout } = await execFileP('tshark', [
        ...['-r', pcap, '-o', 'tcp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE'],
        ...['-Y', 'ip.src == 10.0.9.1 && tcp.len > 0', '-T', 'fields'],
        ...['-e', 'frame.len', '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status'],
      ]);
      const rows = stdout.trim().split('\n').filter(Boolean);
      assert.ok(rows.length > 100, `only ${rows.length} data frames captured`);
      for (const row of rows) {
        const [len, ipStatus, tcpStatus] = row.split('\t');
        assert.ok(Number(len) <= 1514, `frame of ${len} bytes toward the VM: ${row}`);
        assert.equal(`${ipStatus}/${tcpStatus}`, '1/1', `checksum status (ip/tcp, 1 = good) of ${row}`);
      }
    });
  });
});
