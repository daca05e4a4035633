import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { portSchema } from '../../src/config/schema.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type Port } from '../../src/net/port.js';
import { type TapSpec, tapPort } from '../../src/net/ports/tap.js';
import { Switch } from '../../src/net/switch/switch.js';
import { ip, Netns, uniqueIfname } from '../helpers/netns.js';

const logger = silentLogger();

/** The batch counters a TAP port's describe() reports. */
interface BatchStats {
  rx_frames: number;
  rx_batches: number;
  tx_frames: number;
  tx_batches: number;
}

/** Adds a TAP port to the switch on network `lan` (not opened). */
function addTap(sw: Switch, spec: Omit<TapSpec, 'name'> & { name?: string }): Port {
  const name = spec.name ?? `tap-${spec.ifname}`;
  const sp = sw.addPort(name, { network: 'lan' }, (sink, p) =>
    tapPort(
      { ...spec, name },
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
  return sp.port;
}

/** Starts a one-shot iperf3 server in `ns` and resolves once it listens. */
function iperfServer(ns: Netns, addr: string): Promise<ChildProcess> {
  const child = ns.spawn('iperf3', '-s', '-1', '--forceflush', '-B', addr);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) resolve(child);
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('exit', (code) => reject(new Error(`iperf3 -s exited (${code}): ${out}`)));
  });
}

/** Sets TSO/GSO/GRO/checksum offloads of `dev` in `ns` on or off; features the device cannot change are skipped. */
async function offloads(ns: Netns, dev: string, on: boolean): Promise<string> {
  for (const f of ['tx', 'sg', 'tso', 'gso', 'gro']) {
    await ns.exec('ethtool', '-K', dev, f, on ? 'on' : 'off').catch(() => undefined);
  }
  const { stdout } = await ns.exec('ethtool', '-k', dev);
  return stdout
    .split('\n')
    .filter((l) => /^(tx-checksumming|tcp-segmentation-offload|generic-segmentation|generic-receive)/.test(l))
    .map((l) => l.replace(/\s+/g, ' ').trim())
    .join(', ');
}

describe('TAP port', { timeout: 120_000 }, () => {
  const sw = new Switch({ logger });
  const ports: Port[] = [];
  let ns1: Netns;
  let ns2: Netns;
  const if1 = uniqueIfname('vlt');
  const if2 = uniqueIfname('vlt');

  before(async () => {
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    ns1 = await Netns.create('tap1');
    ns2 = await Netns.create('tap2');
    // One port with a virtio_net_hdr, one without: both data paths in every run.
    ports.push(addTap(sw, { ifname: if1, vnet_hdr: true }), addTap(sw, { ifname: if2 }));
    for (const p of ports) await p.open();
    await ns1.adopt(if1, '10.88.0.1/24');
    await ns2.adopt(if2, '10.88.0.2/24');
  });

  after(async () => {
    for (const sp of sw.ports()) await sw.removePort(sp.name);
    await ns1?.delete();
    await ns2?.delete();
  });

  test('carries ping between two namespaces whose TAPs are on one vmlink network', async () => {
    assert.equal(ports[0]?.state, 'up');
    const { stdout } = await ns1.exec('ping', '-c', '3', '-i', '0.2', '-W', '5', '10.88.0.2');
    assert.match(stdout, / 0% packet loss/);
    assert.ok(sw.port(`tap-${if1}`).counters.rxFrames >= 3);
    assert.ok(sw.port(`tap-${if2}`).counters.txFrames >= 3);
  });

  for (const on of [true, false]) {
    test(`completes an iperf3 TCP run between the namespaces with offloads ${on ? 'on' : 'off'}`, async (t) => {
      const f1 = await offloads(ns1, if1, on);
      const before = ports.map((p) => p.describe() as unknown as BatchStats);
      await offloads(ns2, if2, on);
      const server = await iperfServer(ns2, '10.88.0.2');
      try {
        const { stdout } = await ns1.exec('iperf3', '-c', '10.88.0.2', '-t', '3', '-J');
        const result = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
        const rcv = result.end.sum_received;
        assert.ok(rcv.bytes > 0);
        const perCall = ports.map((p, i) => {
          const d = p.describe() as unknown as BatchStats;
          const b = before[i] as BatchStats;
          const rx = (d.rx_frames - b.rx_frames) / Math.max(1, d.rx_batches - b.rx_batches);
          const tx = (d.tx_frames - b.tx_frames) / Math.max(1, d.tx_batches - b.tx_batches);
          return `${rx.toFixed(1)} rx / ${tx.toFixed(1)} tx`;
        });
        t.diagnostic(
          `offloads ${on ? 'on' : 'off'} (${f1}): ${(rcv.bits_per_second / 1e9).toFixed(3)} Gbit/s; frames per native call: ${perCall.join(', ')}; queue_full drops ${ports.map((p) => sw.port(p.name).counters.queue_full).join('/')}`,
        );
      } finally {
        server.kill();
      }
      const [c1, c2] = [sw.port(`tap-${if1}`).counters, sw.port(`tap-${if2}`).counters];
      assert.equal(c1.malformed + c1.offload, 0);
      if (on) {
        // The vnet_hdr TAP hands the switch 64 KB segments; the plain TAP gets them cut in software.
        assert.ok(c1.rxGso > 0, 'no large segment came from the vnet_hdr TAP with TSO on');
        assert.ok(c2.txSegmented > 0, 'no large segment was cut for the TAP without vnet_hdr');
      }
    });
  }

  test('attaching to an interface that does not exist fails with ERR_TAP_NOT_FOUND naming it', async () => {
    const port = addTap(sw, { ifname: 'vlnosuchtap', create: false, name: 'missing' });
    await assert.rejects(port.open(), (err: Error) => {
      assert.ok(hasCode(err, 'ERR_TAP_NOT_FOUND'), String(err));
      assert.match(err.message, /"vlnosuchtap" does not exist/);
      return true;
    });
    await sw.removePort('missing');
  });

  test('an invalid ifname is refused with ERR_TAP_IFNAME, by the port and by the config schema', async () => {
    for (const ifname of ['bad/name', 'much-too-long-ifname', 'a b']) {
      const port = addTap(sw, { ifname, name: 'bad' });
      await assert.rejects(port.open(), (err: Error) => hasCode(err, 'ERR_TAP_IFNAME') && err.message.includes(ifname));
      await sw.removePort('bad');
      const parsed = portSchema.safeParse({ kind: 'tap', name: 'bad', network: 'lan', ifname });
      assert.equal(parsed.success, false);
    }
    const ok = portSchema.parse({ kind: 'tap', name: 'good', network: 'lan', ifname: 'vm%d' });
    assert.deepEqual(
      { create: ok.kind === 'tap' && ok.create, up: ok.kind === 'tap' && ok.up },
      { create: true, up: true },
    );
  });

  test('attaches to an existing persistent TAP, sets its MTU and brings it up, and leaves it in place on close', async () => {
    const ifname = uniqueIfname('vlp');
    await ip('tuntap', 'add', 'dev', ifname, 'mode', 'tap');
    try {
      const port = addTap(sw, { ifname, create: false, mtu: 1400, name: 'persist' });
      await port.open();
      const { stdout } = await ip('-o', 'link', 'show', 'dev', ifname);
      assert.match(stdout, /mtu 1400/);
      assert.match(stdout, /[<,]UP[,>]/);
      assert.equal(port.describe()['ifname'], ifname);
      // A TAP without multi-queue takes one fd: a second port on it is refused, clearly.
      const second = addTap(sw, { ifname, name: 'second' });
      await assert.rejects(second.open(), (err: Error) => hasCode(err, 'ERR_TAP_BUSY') && err.message.includes(ifname));
      await sw.removePort('second');
      await sw.removePort('persist');
      assert.equal(port.state, 'closed');
      await ip('link', 'show', 'dev', ifname); // still there
    } finally {
      await ip('tuntap', 'del', 'dev', ifname, 'mode', 'tap');
    }
  });

  test('keeps forwarding between the namespaces after the refused ports', async () => {
    const { stdout } = await ns2.exec('ping', '-c', '2', '-i', '0.2', '-W', '5', '10.88.0.1');
    assert.match(stdout, / 0% packet loss/);
  });
});
