/**
 * Three vmlink daemons in three network namespaces on one LAN segment
 * (veths to a bridge), joined by TLS links in a star: the hub relays, the
 * two spokes only dial out. A real VM on each host. VMs on different hosts
 * ping each other and move 10 MiB with matching sha256; a host with a
 * certificate from another CA is refused; a cut link (veth down) recovers.
 * The rig is test/helpers/overlay-star.ts.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkView } from '../../src/api/client.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { ping, pingUntilReply, transfer } from '../helpers/guest-net.js';
import type { Netns } from '../helpers/netns.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { LINK_PORT, lanAddr, OverlayStar } from '../helpers/overlay-star.js';
import type { Vm } from '../helpers/vm.js';

describe('overlay across three hosts with real VMs', { timeout: 600_000 }, () => {
  const star = new OverlayStar();
  const { hosts, ifs, links, diagnose } = star;
  let hub: TestDaemon;
  let s2: TestDaemon;
  let s3: TestDaemon;
  let v1: Vm;
  let v2: Vm;
  let v3: Vm;

  before(async () => {
    await star.start();
    [hub, s2, s3] = [star.hub, star.s2, star.s3];
    [v1, v2, v3] = star.vms as [Vm, Vm, Vm];
  });

  after(() => star.stop());

  test('the hub lists both spokes as TLS links with their networks and an RTT', async () => {
    await diagnose(async () => {
      await untilAsync('RTT measured on both hub links', async () => {
        const l = (await links(hub)).filter((x) => x.transport === 'tls');
        return l.length === 2 && l.every((x) => x.rtt_ms !== undefined);
      });
      const l = (await links(hub)).filter((x) => x.transport === 'tls');
      assert.deepEqual(l.map((x) => x.peer).sort(), ['h2', 'h3']);
      for (const x of l) {
        assert.equal(x.state, 'up');
        assert.equal(x.transport, 'tls');
        assert.equal(x.mode, 'accept');
        assert.deepEqual(x.networks, ['lab']);
        assert.ok(x.rtt_ms !== undefined && x.rtt_ms >= 0, JSON.stringify(x));
      }
    });
  });

  test('VMs on different hosts ping each other, spoke to spoke through the hub', async () => {
    await diagnose(async () => {
      for (const [from, to] of [
        [v1, v2],
        [v2, v3],
        [v3, v1],
      ] as [Vm, Vm][]) {
        const warm = await pingUntilReply(from, to);
        assert.equal(warm.code, 0, warm.output);
        const r = await ping(from, to, { count: 3 });
        assert.match(r.output, /3 packets transmitted, 3 packets received/);
      }
    });
  });

  test("a spoke learned the other spoke's VM behind its link to the hub", async () => {
    const { entries } = await s2.json<{ entries: { mac: string; port: string }[] }>(['fdb', 'show']);
    const ports = new Set(entries.map((e) => e.port));
    assert.ok(ports.has('link/hub/lab'), JSON.stringify(entries));
    assert.ok(ports.has('vm-h2'), JSON.stringify(entries));
  });

  test('a capture of a TLS link shows TLS records and no plaintext Ethernet', async () => {
    await diagnose(async () => {
      const file = join(star.pki, 'link.pcap');
      const cap = (hosts[0] as Netns).spawn(
        'tshark',
        '-q',
        '-i',
        ifs[0] as string,
        '-f',
        `tcp port ${LINK_PORT}`,
        '-a',
        'duration:6',
        '-w',
        file,
      );
      const done = new Promise((r) => cap.once('close', r));
      await new Promise((r) => setTimeout(r, 1500)); // tshark needs a moment before it captures
      await ping(v2, v1, { count: 3 });
      await done;
      const { stdout: payload } = await (hosts[0] as Netns).exec(
        'tshark',
        '-r',
        file,
        '-T',
        'fields',
        '-e',
        'tcp.payload',
      );
      const { stdout: tlsRecs } = await (hosts[0] as Netns).exec(
        'tshark',
        '-r',
        file,
        '-Y',
        'tls.app_data',
        '-T',
        'fields',
        '-e',
        'frame.number',
      );
      assert.ok(tlsRecs.trim().split('\n').length >= 6, `TLS application data records: ${tlsRecs}`);
      const hex = payload.replace(/[\s:]/g, '');
      assert.ok(hex.length > 1000, 'the capture saw the link traffic');
      for (const port of ['vm-h1', 'vm-h2']) {
        const mac = (await (port === 'vm-h1' ? hub : s2).qemuArgs(port)).mac.replaceAll(':', '');
        assert.ok(!hex.includes(mac), `plaintext MAC ${mac} of ${port} on the wire`);
      }
    });
  });

  test('moves 10 MiB between VMs on two spokes with the same sha256; a direct link forms under the load', async () => {
    await diagnose(async () => {
      // The hub's link to h3 as it was before the transfer: its whole-life counters include writes of
      // keepalives alone (no frame), so aggregation is judged on what the transfer added.
      const toH3Before = (await links(hub)).find((x) => x.peer === 'h3') as LinkView;
      const r = await transfer(v2, v3, 10);
      assert.equal(r.bytes, 10 * 1024 * 1024);
      assert.equal(r.received, r.sent);
      // The traffic started on the relay (the hub counted it), which then asked h2 to link to h3.
      const l = await links(hub);
      const fromH2 = l.find((x) => x.peer === 'h2') as LinkView;
      assert.ok((fromH2.relayed_to['h3'] ?? 0) > 0, JSON.stringify(fromH2));
      const toH3 = l.find((x) => x.peer === 'h3') as LinkView;
      // Relayed frames were aggregated: during the transfer the link wrote fewer times than it sent frames.
      const frames = toH3.tx_frames - toH3Before.tx_frames;
      const writes = toH3.tx_writes - toH3Before.tx_writes;
      assert.ok(
        frames > 0 && writes < frames,
        `no aggregation: ${writes} writes for ${frames} frames; before ${JSON.stringify(toH3Before)}, after ${JSON.stringify(toH3)}`,
      );
      await untilAsync('direct link h2 -> h3 up', async () =>
        (await links(s2)).some((x) => x.name === 'direct-h3' && x.state === 'up'),
      );
      await untilAsync('the hub knows', async () => {
        const h = await links(hub);
        return (h.find((x) => x.peer === 'h2')?.direct_peers ?? []).includes('h3');
      });
      const d = (await links(s2)).find((x) => x.name === 'direct-h3') as LinkView;
      assert.equal(d.source, 'direct');
      assert.equal(d.peer, 'h3');
      assert.ok((await links(s3)).some((x) => x.peer === 'h2' && x.mode === 'accept' && x.state === 'up'));
    });
  });

  test('spoke-to-spoke traffic then takes the direct link, not the hub', async () => {
    await diagnose(async () => {
      const relayed = async () => (await links(hub)).find((x) => x.peer === 'h2')?.relayed_to['h3'] ?? -1;
      const direct = async () => (await links(s2)).find((x) => x.name === 'direct-h3')?.tx_frames ?? -1;
      const warm = await pingUntilReply(v2, v3);
      assert.equal(warm.code, 0, warm.output);
      const [r0, d0] = [await relayed(), await direct()];
      const r = await ping(v2, v3, { count: 5 });
      assert.match(r.output, /5 packets transmitted, 5 packets received/);
      assert.equal(await relayed(), r0, 'the hub relayed nothing between h2 and h3');
      assert.ok((await direct()) >= d0 + 5);
    });
  });

  test('when the direct path is cut (a blackhole route), traffic falls back to the relay', async () => {
    await diagnose(async () => {
      const ns3 = hosts[2] as Netns;
      await ns3.ip('route', 'add', 'blackhole', `${lanAddr(2)}/32`);
      try {
        await untilAsync(
          'h2 dropped the direct link',
          async () => !(await links(s2)).some((x) => x.name === 'direct-h3'),
        );
        await untilAsync('the hub relays again', async () =>
          (await links(hub)).every((x) => x.direct_peers.length === 0),
        );
        const relayed0 = (await links(hub)).find((x) => x.peer === 'h2')?.relayed_to['h3'] ?? 0;
        const back = await pingUntilReply(v2, v3);
        assert.equal(back.code, 0, back.output);
        const r = await ping(v2, v3, { count: 3 });
        assert.match(r.output, /3 packets transmitted, 3 packets received/);
        assert.ok(((await links(hub)).find((x) => x.peer === 'h2')?.relayed_to['h3'] ?? 0) > relayed0);
      } finally {
        await ns3.ip('route', 'del', 'blackhole', `${lanAddr(2)}/32`);
      }
    });
  });

  test('a Linux kernel vxlan device in a namespace pings VMs behind vmlink over a VXLAN link', async () => {
    await diagnose(async () => {
      const k = await star.lanHost('vtep', 7);
      const dev = ifs[ifs.length - 1] as string;
      await k.ip(
        'link',
        'add',
        'vx0',
        'type',
        'vxlan',
        'id',
        '100',
        'remote',
        lanAddr(1),
        'dstport',
        '4789',
        'dev',
        dev,
      );
      await k.ip('addr', 'add', '10.0.0.7/24', 'dev', 'vx0');
      // The kernel leaves the inner TCP/UDP checksum to the NIC when vx0 offloads it; over a veth no
      // NIC ever fills it in, and the receiver drops such segments. Checksum in software.
      await k.exec('ethtool', '-K', 'vx0', 'tx', 'off');
      await k.ip('link', 'set', 'vx0', 'up');
      const vtep = (await links(hub)).find((x) => x.name === 'vtep') as LinkView;
      assert.equal(vtep.transport, 'vxlan');
      assert.equal(vtep.state, 'up');
      // The VM on the hub, and the VM on a spoke (through the hub's relay).
      for (const target of ['10.0.0.1', '10.0.0.2']) {
        let r = { stdout: '', stderr: '' };
        for (let i = 0; i < 10; i++) {
          r = await k
            .exec('ping', '-c', '1', '-W', '2', target)
            .catch((e: Error) => ({ stdout: e.message, stderr: '' }));
          if (/1 received/.test(r.stdout)) break;
        }
        const ok = await k.exec('ping', '-c', '3', '-W', '2', target);
        assert.match(ok.stdout, /3 packets transmitted, 3 received/);
      }
      const after1 = (await links(hub)).find((x) => x.name === 'vtep') as LinkView;
      assert.ok(after1.rx_frames > 0 && after1.tx_frames > 0, JSON.stringify(after1));
    });
  });

  test('moves 10 MiB over the VXLAN link from a VM to the kernel VTEP with the same sha256', async () => {
    await diagnose(async () => {
      const k = hosts.find((h) => h.name.includes('-vtep-')) as Netns;
      await v1.sh('mkdir -p /www && dd if=/dev/urandom of=/www/blob bs=1048576 count=10 2>/dev/null', {
        timeoutMs: 120_000,
      });
      const sent = (await v1.sh('sha256sum /www/blob', { timeoutMs: 60_000 })).trim().split(/\s+/)[0];
      await v1.sh('killall httpd 2>/dev/null; httpd -p 80 -h /www');
      try {
        // The kernel side's vx0 has MTU 1450 (1500 - 50), so its TCP MSS keeps the VM's frames within the VXLAN MTU.
        const py =
          'import hashlib,urllib.request;d=urllib.request.urlopen("http://10.0.0.1/blob",timeout=120).read();print(len(d),hashlib.sha256(d).hexdigest())';
        const { stdout } = await k.exec('python3', '-c', py);
        const [bytes, received] = stdout.trim().split(' ');
        assert.equal(Number(bytes), 10 * 1024 * 1024);
        assert.equal(received, sent);
      } finally {
        await v1.run('killall httpd; rm -f /www/blob');
      }
      const v = (await links(hub)).find((x) => x.name === 'vtep') as LinkView;
      assert.ok(v.tx_bytes > 10 * 1024 * 1024, JSON.stringify(v));
    });
  });

  test('a host with a certificate from another CA is refused and the hub logs it', async () => {
    await diagnose(async () => {
      const n9 = await star.lanHost('h9', 9);
      const rogue = await star.startHost('h9', n9, { tls: star.tls('h9') }, [
        { name: 'hub', connect: `tcp:${lanAddr(1)}:${LINK_PORT}` },
      ]);
      await untilAsync('the hub logs the refusal', async () => /refused link peer/.test(hub.log), 20_000);
      assert.match(hub.log, /refused link peer/);
      const l = await links(rogue);
      assert.notEqual(l[0]?.state, 'up');
      assert.ok(!(await links(hub)).some((x) => x.peer === 'h9'));
      await rogue.stop();
    });
  });

  test('a cut link (veth down) goes down and recovers when the veth comes back', async () => {
    await diagnose(async () => {
      const ns3 = hosts[2] as Netns;
      const if3 = ifs[2] as string;
      await ns3.ip('link', 'set', if3, 'down');
      const deadline = Date.now() + 30_000;
      while ((await links(s3))[0]?.state === 'up' && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 200));
      const down = (await links(s3))[0] as LinkView;
      assert.notEqual(down.state, 'up', JSON.stringify(down));
      const dead = await ping(v2, v3, { count: 2, waitSec: 1 });
      assert.notEqual(dead.code, 0, dead.output);
      await ns3.ip('link', 'set', if3, 'up');
      const deadline2 = Date.now() + 60_000;
      while ((await links(s3))[0]?.state !== 'up' && Date.now() < deadline2)
        await new Promise((r) => setTimeout(r, 200));
      const up = (await links(s3))[0] as LinkView;
      assert.equal(up.state, 'up', JSON.stringify(up));
      assert.ok(up.connects >= 2, JSON.stringify(up));
      const back = await pingUntilReply(v2, v3);
      assert.equal(back.code, 0, back.output);
    });
  });
});
