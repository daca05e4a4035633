/**
 * Two namespaces behind vnet_hdr TAP ports with offloads on: TCP large
 * segments (TSO4 and TSO6) pass through the switch whole, from one TAP's
 * read to the other TAP's write, and iperf3 runs over IPv4 and IPv6.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type Port } from '../../src/net/ports/port.js';
import { tapPort } from '../../src/net/ports/tap.js';
import type { PortCounters } from '../../src/net/switch/counters.js';
import { Switch } from '../../src/net/switch/switch.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';

const logger = silentLogger();

/** Starts a one-shot iperf3 server in `ns` and resolves once it listens. */
function iperfServer(ns: Netns, addr: string): Promise<ChildProcess> {
  const child = ns.spawn('iperf3', '-s', '-1', '--forceflush', '-B', addr);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`iperf3 -s exited (${code}): ${out}`)));
  });
}

describe('TAP ports with offloads', { timeout: 120_000 }, () => {
  const sw = new Switch({ logger });
  const ifs = [uniqueIfname('vlg'), uniqueIfname('vlg')] as const;
  const ports: Port[] = [];
  const nss: Netns[] = [];

  before(async () => {
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    for (const [i, ifname] of ifs.entries()) {
      const sp = sw.addPort(`t${i}`, { network: 'lan' }, (sink, p) =>
        tapPort(
          { name: `t${i}`, ifname, vnet_hdr: true },
          {
            sink,
            onState: (s) => sw.portState(p, s),
            logger,
            maxFrameLen: MAX_FRAME_LEN,
            queueLen: DEFAULT_QUEUE_LEN,
            onMalformed: (r) => sw.malformed(p, r),
          },
        ),
      );
      await sp.port.open();
      ports.push(sp.port);
      const ns = await Netns.create(`tso${i}`);
      nss.push(ns);
      await ns.adopt(ifname, `10.87.0.${i + 1}/24`);
      await ns.ip('addr', 'add', `fd87::${i + 1}/64`, 'dev', ifname, 'nodad');
      for (const f of ['tx', 'sg', 'tso', 'gso', 'gro']) await ns.exec('ethtool', '-K', ifname, f, 'on');
    }
  });

  after(async () => {
    for (const sp of sw.ports()) await sw.removePort(sp.name);
    for (const ns of nss) await ns.delete();
  });

  test('opens the TAPs with checksum and TSO offloads, which the namespace then sees as on', async () => {
    assert.match(String(ports[0]?.describe()['offloads']), /^csum,tso4,tso6/);
    assert.equal(ports[0]?.offloads, true);
    const { stdout } = await (nss[0] as Netns).exec('ethtool', '-k', ifs[0]);
    assert.match(stdout, /tcp-segmentation-offload: on/);
    assert.match(stdout, /tx-checksumming: on/);
  });

  for (const [family, dst] of [
    ['IPv4', '10.87.0.2'],
    ['IPv6', 'fd87::2'],
  ] as const) {
    test(`carries ${family} TCP large segments whole from TAP to TAP during an iperf3 run`, async (t) => {
      const [a, b] = nss as [Netns, Netns];
      const c = (i: number): PortCounters => sw.port(`t${i}`).counters;
      const gsoBefore = c(1).txGso;
      const server = await iperfServer(b, dst);
      try {
        const { stdout } = await a.exec('iperf3', '-c', dst, '-t', '3', '-J');
        const r = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
        assert.ok(r.end.sum_received.bytes > 0);
        const frames = c(0).rxFrames;
        t.diagnostic(
          `${family}: ${(r.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s; ${c(0).rxGso} of ${frames} frames from t0 were large segments; ${c(1).txGso - gsoBefore} passed whole to t1`,
        );
      } finally {
        server.kill();
      }
      assert.ok(c(1).txGso > gsoBefore, 'no large segment reached the second TAP whole');
      assert.equal(c(1).txSegmented, 0, 'both ports take offloads: nothing may be cut in software');
      assert.equal(c(0).offload + c(0).malformed + c(1).offload, 0);
      assert.equal(ports[1]?.describe()['tx_errors'], 0, 'the kernel refused frames written with their virtio_net_hdr');
    });
  }
});
