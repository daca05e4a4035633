/**
 * The fabric on etcd with real VMs: four hosts in network namespaces, a
 * 3-member etcd cluster in three of them, daemons started with no cluster
 * section and no links. The fabric is made through the CLI (`cluster init`,
 * `token`, `join`); a network created on one host, ports on the others; the
 * links come from the fabric (h1 relay and h2 listen, h3 and h4 dial out and
 * meet through h1). Then: a MAC moves between hosts, etcd loses a member and
 * then all of them, a host is killed and comes back. The rig is
 * test/helpers/cluster-rig.ts.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import type { ClusterView, LinkView } from '../../src/api/client.js';
import { ClusterRig, JOIN_PORT, lanAddr } from '../helpers/cluster-rig.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { attachVms } from '../helpers/e2e.js';
import { ping, pingUntilReply, transfer } from '../helpers/guest-net.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import type { Vm } from '../helpers/vm.js';

/** CPU seconds (user + system) a process has used, from /proc/PID/stat. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** The pid of the node process of a daemon started under `ip netns exec` (it execs: same pid). */
const pidOf = (d: TestDaemon): number => d.pid as number;

describe('a fabric of four hosts on etcd with real VMs', { timeout: 900_000 }, () => {
  const rig = new ClusterRig();
  const { status, links, diagnose } = rig;
  let v2: Vm;
  let v3: Vm;
  let v4: Vm;

  before(() => rig.start());
  after(() => rig.stop());

  const ok = async (d: TestDaemon, args: string[]): Promise<string> => {
    const r = await d.cli(args, 120_000);
    assert.equal(r.code, 0, `vmlink ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  const upHosts = async (d: TestDaemon): Promise<string[]> =>
    (await status(d)).hosts
      .filter((h) => h.state === 'up')
      .map((h) => h.id)
      .sort();

  test('cluster init, token and join through the CLI make one fabric; a used token is refused', async () => {
    await diagnose(async () => {
      const etcd = (rig.etcd?.endpoints ?? []).join(',');
      await ok(rig.d(1), ['cluster', 'init', '--etcd', etcd, '--join-listen', `tcp:${lanAddr(1)}:${JOIN_PORT}`]);
      for (const n of [2, 3, 4]) {
        const token = (await ok(rig.d(1), ['cluster', 'token'])).trim();
        await ok(rig.d(n), ['cluster', 'join', token]);
        if (n === 2) {
          const again = await rig.d(3).cli(['cluster', 'join', token]);
          assert.notEqual(again.code, 0, 'a used token joined another host');
          assert.match(again.stderr, /already used/);
        }
      }
      for (const n of [1, 2, 3, 4])
        await untilAsync(`h${n} sees four hosts up`, async () => (await upHosts(rig.d(n))).length === 4, 60_000);
      const c = await status(rig.d(3));
      assert.equal(c.mode, 'member');
      const h3 = c.hosts.find((h) => h.id === 'h3');
      assert.equal(h3?.reachable, false);
      assert.equal(c.hosts.find((h) => h.id === 'h2')?.address, `tcp:${lanAddr(2)}:7400`);
    });
  });

  test('a network created on one host, ports on the others: links come from the fabric, none by hand', async () => {
    await diagnose(async () => {
      await ok(rig.d(1), ['network', 'create', 'lab', '--vni', '100']);
      for (const n of [2, 3, 4]) {
        const d = rig.d(n);
        await untilAsync(`h${n} has network lab`, async () => {
          const r = await d.json<{ networks: { name: string }[] }>(['network', 'list']);
          return r.networks.some((x) => x.name === 'lab');
        });
        await ok(d, [
          'port',
          'add',
          `vm-h${n}`,
          '--kind',
          'stream',
          '--network',
          'lab',
          '--listen',
          `unix:${d.path('vm.sock')}`,
        ]);
      }
      const peers = async (n: number) =>
        (await links(rig.d(n)))
          .filter((l) => l.state === 'up')
          .map((l) => l.peer)
          .sort();
      // h2 listens and has a port: h3 and h4 dial it. They only dial out, so they meet through the
      // hub h1 (which relays and has no port of its own: no link between h1 and h2 is needed).
      await untilAsync('h3 linked to h1 and h2', async () => (await peers(3)).join() === 'h1,h2', 60_000);
      await untilAsync('h4 linked to h1 and h2', async () => (await peers(4)).join() === 'h1,h2', 60_000);
      await untilAsync('h2 linked to h3 and h4', async () => (await peers(2)).join() === 'h3,h4', 60_000);
      await untilAsync('h1 linked to h3 and h4', async () => (await peers(1)).join() === 'h3,h4', 60_000);
      for (const n of [1, 2, 3, 4])
        for (const l of await links(rig.d(n))) assert.notEqual(l.source, 'api', `a hand link on h${n}: ${l.name}`);
    });
  });

  test('VMs on three hosts ping each other and move 10 MiB with the same sha256', async () => {
    rig.vms = await diagnose(async () => [
      ...(await attachVms(rig.d(2), [{ port: 'vm-h2', name: 'vm2', ip: '10.0.0.2/24' }])),
      ...(await attachVms(rig.d(3), [{ port: 'vm-h3', name: 'vm3', ip: '10.0.0.3/24' }])),
      ...(await attachVms(rig.d(4), [{ port: 'vm-h4', name: 'vm4', ip: '10.0.0.4/24' }])),
    ]);
    [v2, v3, v4] = rig.vms as [Vm, Vm, Vm];
    await diagnose(async () => {
      for (const [from, to] of [
        [v2, v3],
        [v3, v4],
        [v4, v2],
      ] as [Vm, Vm][]) {
        const warm = await pingUntilReply(from, to);
        assert.equal(warm.code, 0, warm.output);
        const r = await ping(from, to, { count: 3 });
        assert.match(r.output, /3 packets transmitted, 3 packets received/);
      }
      // h3 -> h4: two dial-out hosts, through the hub.
      const r = await transfer(v3, v4, 10);
      assert.equal(r.bytes, 10 * 1024 * 1024);
      assert.equal(r.received, r.sent);
      const r2 = await transfer(v2, v3, 10);
      assert.equal(r2.received, r2.sent);
    });
  });

  test("every host knows a VM's MAC from the control plane: the first frames to it are not flooded", async () => {
    await diagnose(async () => {
      const mac = (await rig.d(4).qemuArgs('vm-h4')).mac;
      for (const n of [1, 2, 3])
        await untilAsync(`h${n} has h4's MAC from the fabric`, async () => {
          const { entries } = await rig
            .d(n)
            .json<{ entries: { mac: string; host?: string; seq?: number }[] }>(['fdb', 'show']);
          const e = entries.find((x) => x.mac === mac);
          return e?.host === 'h4' && e.seq === 1;
        });
      // h2 sends to h4's VM: every frame goes on the link to h4, none on the links to h1 and h3.
      const tx = async () =>
        Object.fromEntries((await links(rig.d(2))).map((l) => [l.peer as string, l.tx_frames])) as Record<
          string,
          number
        >;
      const before = await tx();
      const r = await ping(v2, v4, { count: 10, waitSec: 1 });
      assert.match(r.output, /10 packets transmitted, 10 packets received/);
      const after = await tx();
      assert.ok((after['h4'] ?? 0) - (before['h4'] ?? 0) >= 10, JSON.stringify({ before, after }));
      // ARP was cached by the warm-up: nothing of the exchange needed a flood toward h1 and h3.
      assert.ok((after['h1'] ?? 0) - (before['h1'] ?? 0) < 10, JSON.stringify({ before, after }));
      assert.ok((after['h3'] ?? 0) - (before['h3'] ?? 0) < 10, JSON.stringify({ before, after }));
    });
  });

  test('a MAC that moves to another host (gratuitous ARP from a new port) converges at a higher sequence number', async () => {
    await diagnose(async () => {
      const mac = (await rig.d(4).qemuArgs('vm-h4')).mac;
      const fabricEntry = async (n: number) => {
        const { entries } = await rig
          .d(n)
          .json<{ entries: { mac: string; host?: string; seq?: number }[] }>(['fdb', 'show']);
        return entries.find((x) => x.mac === mac);
      };
      const before = (await fabricEntry(3))?.seq ?? 0;
      assert.ok(before >= 1, 'h3 knew the MAC at h4 before the move');
      // The VM "moves" as a live migration does it: its source on h4 is stopped (connected, silent), it
      // appears on h2 (a port with the same MAC whose guest announces itself), then the source is released.
      v4.pause();
      const d2 = rig.d(2);
      await ok(d2, [
        'port',
        'add',
        'moved',
        '--kind',
        'stream',
        '--network',
        'lab',
        '--mac',
        mac,
        '--listen',
        `unix:${d2.path('moved.sock')}`,
      ]);
      const [moved] = await attachVms(d2, [{ port: 'moved', name: 'moved', ip: '10.0.0.4/24' }]);
      rig.vms.push(moved as Vm);
      await (moved as Vm).sh('arping -U -c 2 -I eth0 10.0.0.4');
      // h1 has no port of its own: it needs no path to h2 and installs nothing.
      for (const n of [2, 3, 4])
        await untilAsync(`h${n} points ${mac} at h2 with a higher sequence number`, async () => {
          const e = await fabricEntry(n);
          return e?.host === 'h2' && (e.seq ?? 0) > before;
        });
      await v4.close();
      rig.vms = rig.vms.filter((v) => v !== v4);
      // The released source withdraws nothing: the MAC is no longer its own.
      await new Promise((r) => setTimeout(r, 3000));
      for (const n of [2, 3]) assert.equal((await fabricEntry(n))?.host, 'h2');
      const r = await pingUntilReply(v3, moved as Vm);
      assert.equal(r.code, 0, r.output);
    });
  });

  test('etcd losing one member changes nothing; losing all keeps VMs pinging, refuses changes, costs no CPU, and resyncs', async () => {
    await diagnose(async () => {
      const etcd = rig.etcd as NonNullable<typeof rig.etcd>;
      await etcd.members[2]?.kill();
      await ok(rig.d(2), ['network', 'create', 'one-down', '--vni', '201']);
      await untilAsync('h3 sees one-down', async () =>
        (await rig.d(3).json<{ networks: { name: string }[] }>(['network', 'list'])).networks.some(
          (x) => x.name === 'one-down',
        ),
      );
      await etcd.killAll();
      try {
        await whileEtcdAway();
      } finally {
        await etcd.startAll();
      }
      await untilAsync('h2 back on etcd', async () => (await status(rig.d(2))).etcd?.available === true, 60_000);
      await ok(rig.d(2), ['network', 'create', 'after', '--vni', '203']);
      for (const n of [1, 3, 4])
        await untilAsync(
          `h${n} picked up the network made after the outage`,
          async () =>
            (await rig.d(n).json<{ networks: { name: string }[] }>(['network', 'list'])).networks.some(
              (x) => x.name === 'after',
            ),
          60_000,
        );
    });
  });

  /** With every etcd member gone: VMs keep pinging, a change is refused, no daemon spins. */
  async function whileEtcdAway(): Promise<void> {
    const pids = rig.daemons.map(pidOf);
    const cpu0 = await Promise.all(pids.map(cpuSeconds));
    const t0 = Date.now();
    const r = await ping(v2, v3, { count: 10, waitSec: 1 });
    assert.match(r.output, /10 packets transmitted, 10 packets received/);
    const refused = await rig.d(2).cli(['network', 'create', 'nope', '--vni', '202']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /etcd endpoints are unreachable/);
    await new Promise((res) => setTimeout(res, Math.max(0, 15_000 - (Date.now() - t0))));
    const cpu1 = await Promise.all(pids.map(cpuSeconds));
    const wall = (Date.now() - t0) / 1000;
    for (let i = 0; i < pids.length; i++) {
      const share = ((cpu1[i] as number) - (cpu0[i] as number)) / wall;
      // A spin would hold a core (share near 1); the pings and keepalives cost a few per cent.
      assert.ok(share < 0.3, `daemon h${i + 1} used ${(share * 100).toFixed(1)}% of a core with etcd away`);
    }
    const st = await status(rig.d(3));
    assert.equal(st.etcd?.available, false);
  }

  test('a host killed with SIGKILL is marked down after its lease, its MACs withdrawn; it rejoins on restart', async () => {
    await diagnose(async () => {
      const d3 = rig.d(3);
      const mac = (await d3.qemuArgs('vm-h3')).mac;
      await d3.kill('SIGKILL');
      await untilAsync(
        'h2 marks h3 down',
        async () => (await status(rig.d(2))).hosts.some((h) => h.id === 'h3' && h.state === 'down'),
        60_000,
      );
      await untilAsync("h2 withdrew h3's MAC", async () => {
        const { entries } = await rig.d(2).json<{ entries: { mac: string; host?: string }[] }>(['fdb', 'show']);
        return !entries.some((e) => e.mac === mac && e.host === 'h3');
      });
      assert.ok(!(await links(rig.d(2))).some((l) => l.peer === 'h3' && l.state === 'up'));
      await d3.start();
      await untilAsync('h3 up again everywhere', async () => (await upHosts(rig.d(2))).includes('h3'), 60_000);
      const c: ClusterView = await status(d3);
      assert.equal(c.mode, 'member');
      await untilAsync(
        'h3 linked again',
        async () => (await links(d3)).filter((l: LinkView) => l.state === 'up').length >= 2,
        60_000,
      );
    });
  });
});
