/**
 * Two namespaces behind vnet_hdr TAP ports with offloads on: TCP large
 * segments (TSO4 and TSO6) pass through the switch whole, from one TAP's
 * read to the other TAP's write, and iperf3 runs over IPv4 and IPv6.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type Port } from '../../src/net/port.js';
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

/**
 * Python in a namespace: one UDP send of `total` bytes with UDP_SEGMENT (Linux
 * UDP GSO, socket option 103) cutting it into `seg`-byte datagrams.
 */
const USO_SEND = `
import socket, sys
dst, total, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, seg)
s.sendto(bytes((i * 7 + i // 251) % 256 for i in range(total)), (dst, 9999))
`;
/** Receives datagrams on port 9999 until `total` bytes or 5 s; prints their sizes and whether the bytes match. */
const USO_RECV = `
import socket, sys, json
addr, total = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 9999))
print('ready', flush=True)
s.settimeout(5)
got = []
try:
    while sum(len(d) for d in got) < total:
        got.append(s.recv(65536))
except socket.timeout:
    pass
want = bytes((i * 7 + i // 251) % 256 for i in range(total))
print(json.dumps({'sizes': [len(d) for d in got], 'intact': b''.join(got) == want}), flush=True)
`;

/** Runs USO_RECV in `ns` on `addr`; resolves with a function that waits for its report. */
async function usoReceiver(
  ns: Netns,
  addr: string,
  total: number,
): Promise<() => Promise<{ sizes: number[]; intact: boolean }>> {
  const child = ns.spawn('python3', '-c', USO_RECV, addr, String(total));
  let out = '';
  const done = new Promise<{ sizes: number[]; intact: boolean }>((resolve, reject) => {
    child.on('exit', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
      else reject(new Error(`UDP receiver in ${ns.name} printed: ${out}`));
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('exit', () => reject(new Error(`UDP receiver in ${ns.name} exited: ${out}`)));
  });
  return () => done;
}

describe('TAP ports with offloads', { timeout: 120_000 }, () => {
  const sw = new Switch({ logger });
  // t0 and t1 with vnet_hdr (offloads), t2 a plain TAP (segments cut in software toward it).
  const ifs = [uniqueIfname('vlg'), uniqueIfname('vlg'), uniqueIfname('vlg')] as const;
  const ports: Port[] = [];
  const nss: Netns[] = [];

  before(async () => {
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    for (const [i, ifname] of ifs.entries()) {
      const sp = sw.addPort(`t${i}`, { network: 'lan' }, (sink, p) =>
        tapPort(
          { name: `t${i}`, ifname, vnet_hdr: i < 2 },
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
      for (const f of ['tx', 'sg', 'tso', 'gso', 'gro'])
        await ns.exec('ethtool', '-K', ifname, f, 'on').catch(() => undefined);
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
      // Frames written while the TAP moved into its namespace (down) fail with EIO: count only this run's.
      const errsBefore = Number(ports[1]?.describe()['tx_errors']);
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
      assert.equal(
        Number(ports[1]?.describe()['tx_errors']) - errsBefore,
        0,
        `the kernel refused frames written with their virtio_net_hdr (errno ${ports[1]?.describe()['last_tx_errno']})`,
      );
    });
  }

  test('cuts a UDP GSO send (USO) into datagrams with good checksums for a plain TAP, and passes it whole to a vnet_hdr TAP', async (t) => {
    const [a, b, c] = nss as [Netns, Netns, Netns];
    const { stdout } = await a.exec('ethtool', '-k', ifs[0]);
    if (!/tx-udp-segmentation: on/.test(stdout)) {
      t.skip('this kernel gives the TAP no USO (Linux 6.2+): it segments UDP GSO itself');
      return;
    }
    const total = 14_000;
    const counters = (i: number) => sw.port(`t${i}`).counters;
    const [rxGso, txGso, cut] = [counters(0).rxGso, counters(1).txGso, counters(2).txSegmented];
    // Neighbours first, so the UDP send is unicast to a learned port (not flooded to both).
    await a.exec('ping', '-c', '1', '-W', '5', '10.87.0.2');
    await a.exec('ping', '-c', '1', '-W', '5', '10.87.0.3');
    const plain = await usoReceiver(c, '10.87.0.3', total);
    await a.exec('python3', '-c', USO_SEND, '10.87.0.3', String(total), '1400');
    const r1 = await plain();
    assert.deepEqual(
      r1.sizes,
      new Array(10).fill(1400),
      'the plain TAP side got the datagrams, each with a good checksum',
    );
    assert.equal(r1.intact, true);
    assert.equal(counters(2).txSegmented, cut + 1);
    const offl = await usoReceiver(b, '10.87.0.2', total);
    await a.exec('python3', '-c', USO_SEND, '10.87.0.2', String(total), '1400');
    const r2 = await offl();
    assert.equal(r2.intact, true);
    assert.equal(r2.sizes.length, 10);
    assert.equal(counters(1).txGso, txGso + 1, 'the UDP large segment went to the vnet_hdr TAP whole');
    assert.equal(counters(0).rxGso, rxGso + 2);
    assert.equal(counters(0).offload, 0);
  });
});
