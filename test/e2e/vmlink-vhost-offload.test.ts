/**
 * Offloads on vhost-user ports with real QEMU guests (TCG): QEMU's
 * virtio-net-pci negotiates checksum and TSO offloads with vmlink, so the
 * guests' kernels send and receive large TCP segments. Between two such VMs
 * the segments pass whole (counters: received as large segments on one
 * port, given whole to the other, none cut), and 10 MiB arrive with the same
 * sha256. A namespace behind a vnet_hdr TAP port exchanges TCP with a VM,
 * large segments passing whole both ways.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestDaemon } from '../helpers/daemon.js';
import { useVmFabric } from '../helpers/e2e.js';
import { transfer } from '../helpers/guest-net.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import type { Vm } from '../helpers/vm.js';

const MEM_MB = 160;

interface PortJson {
  counters: { offload: { rx_gso: number; tx_gso: number; tx_segmented: number; tx_csum: number } };
  transport: { offloads?: string; offload_frames?: Record<string, number> };
}

async function portJson(d: TestDaemon, name: string): Promise<PortJson> {
  return (await d.json<{ port: PortJson }>(['port', 'show', name])).port;
}

/** Counter deltas of `port` between two readings. */
function delta(a: PortJson, b: PortJson): { rx_gso: number; tx_gso: number; tx_segmented: number } {
  return {
    rx_gso: b.counters.offload.rx_gso - a.counters.offload.rx_gso,
    tx_gso: b.counters.offload.tx_gso - a.counters.offload.tx_gso,
    tx_segmented: b.counters.offload.tx_segmented - a.counters.offload.tx_segmented,
  };
}

describe('vhost-user offloads with real VMs', { timeout: 600_000 }, () => {
  let ns: Netns | undefined;
  let httpd: ChildProcess | undefined;
  const ifname = uniqueIfname('vho');
  const fab = useVmFabric({
    daemon: {
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'va', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/va.sock`, memory_mb: MEM_MB },
        { name: 'vb', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vb.sock`, memory_mb: MEM_MB },
        { name: 'ns', network: 'lab', kind: 'tap', ifname, vnet_hdr: true },
      ],
    },
    prepare: async () => {
      ns = await Netns.create('vhoff');
      await ns.adopt(ifname, '10.0.6.3/24');
      for (const f of ['tx', 'sg', 'tso', 'gso']) await ns.exec('ethtool', '-K', ifname, f, 'on');
    },
    vms: [
      { port: 'va', ip: '10.0.6.1/24', memMb: MEM_MB },
      { port: 'vb', ip: '10.0.6.2/24', memMb: MEM_MB },
    ],
    teardown: async () => {
      httpd?.kill();
      await ns?.delete();
    },
  });

  test('QEMU negotiates checksum and TSO offloads both ways on both ports', async () => {
    for (const p of ['va', 'vb']) {
      const { transport } = await portJson(fab.daemon, p);
      assert.match(String(transport.offloads), /csum,tso4,tso6.*guest_csum,guest_tso4,guest_tso6/, p);
    }
  });

  test('two VMs move 10 MiB with the same sha256, large segments carried whole', async (t) => {
    await fab.diagnose(async () => {
      const [a, b] = fab.vms as [Vm, Vm];
      const before = await Promise.all([portJson(fab.daemon, 'va'), portJson(fab.daemon, 'vb')]);
      const tr = await transfer(a, b, 10);
      assert.equal(tr.bytes, 10 * 1024 * 1024);
      assert.equal(tr.received, tr.sent);
      const now = await Promise.all([portJson(fab.daemon, 'va'), portJson(fab.daemon, 'vb')]);
      const fromA = delta(before[0], now[0]);
      const toB = delta(before[1], now[1]);
      t.diagnostic(`va ${JSON.stringify(fromA)} vb ${JSON.stringify(toB)}`);
      assert.ok(fromA.rx_gso > 0, `the serving VM sent no large segment: ${JSON.stringify(fromA)}`);
      assert.ok(toB.tx_gso >= fromA.rx_gso, `large segments were not given whole: ${JSON.stringify(toB)}`);
      assert.equal(toB.tx_segmented, 0, 'nothing was cut for the receiving VM');
      assert.ok((now[1].transport.offload_frames?.rx_gso ?? 0) > 0, JSON.stringify(now[1].transport));
      // 10 MiB in 64 KiB-ish segments: far fewer large segments than the 7000+ MTU frames they stand for.
      assert.ok(fromA.rx_gso < 7000, JSON.stringify(fromA));
    });
  });

  test('a VM and a namespace on a vnet_hdr TAP exchange TCP with large segments passed whole both ways', async (t) => {
    await fab.diagnose(async () => {
      const [a] = fab.vms as [Vm];
      const www = join(fab.daemon.dir, 'www');
      await mkdir(www, { recursive: true });
      const blob = randomBytes(4 << 20);
      await writeFile(join(www, 'blob'), blob);
      const want = createHash('sha256').update(blob).digest('hex');
      httpd = ns!.spawn('busybox', 'httpd', '-f', '-p', '8080', '-h', www);
      const ping = await a.run('ping -c 1 -W 2 10.0.6.3 || ping -c 1 -W 2 10.0.6.3', { timeoutMs: 30_000 });
      assert.equal(ping.code, 0, ping.output);

      // namespace -> VM
      let before = await Promise.all([portJson(fab.daemon, 'ns'), portJson(fab.daemon, 'va')]);
      const got = await a.sh(
        'rm -f /tmp/blob; timeout 240 wget -q -O /tmp/blob http://10.0.6.3:8080/blob && sha256sum /tmp/blob',
        { timeoutMs: 300_000 },
      );
      assert.equal(got.trim().split(/\s+/)[0], want);
      let now = await Promise.all([portJson(fab.daemon, 'ns'), portJson(fab.daemon, 'va')]);
      const fromTap = delta(before[0], now[0]);
      const toVm = delta(before[1], now[1]);
      t.diagnostic(`tap->vm: ns ${JSON.stringify(fromTap)} va ${JSON.stringify(toVm)}`);
      assert.ok(fromTap.rx_gso > 0, `the TAP gave no large segment: ${JSON.stringify(fromTap)}`);
      assert.ok(toVm.tx_gso > 0 && toVm.tx_segmented === 0, `toward the VM: ${JSON.stringify(toVm)}`);

      // VM -> namespace: the VM serves, the namespace fetches.
      await a.sh('mkdir -p /www && dd if=/dev/urandom of=/www/up bs=1048576 count=4 2>/dev/null', {
        timeoutMs: 120_000,
      });
      const sent = (await a.sh('sha256sum /www/up')).trim().split(/\s+/)[0];
      await a.sh('killall httpd 2>/dev/null; httpd -p 80 -h /www');
      before = now;
      const r = await ns!.exec('sh', '-c', 'busybox wget -q -O - http://10.0.6.1/up | sha256sum');
      assert.equal(r.stdout.trim().split(/\s+/)[0], sent);
      now = await Promise.all([portJson(fab.daemon, 'ns'), portJson(fab.daemon, 'va')]);
      const fromVm = delta(before[1], now[1]);
      const toTap = delta(before[0], now[0]);
      t.diagnostic(`vm->tap: va ${JSON.stringify(fromVm)} ns ${JSON.stringify(toTap)}`);
      assert.ok(fromVm.rx_gso > 0, `the VM sent no large segment: ${JSON.stringify(fromVm)}`);
      assert.ok(toTap.tx_gso > 0 && toTap.tx_segmented === 0, `toward the TAP: ${JSON.stringify(toTap)}`);
      await a.run('killall httpd');
    });
  });
});
