/**
 * The host port: a namespace standing for the physical LAN, joined by a veth
 * whose near end (in the test's namespace) is the host port's interface, and
 * a second namespace on a TAP port of the same vmlink network: one segment.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type Port, type PortFactory } from '../../src/net/port.js';
import { hostPort } from '../../src/net/ports/host.js';
import { tapPort } from '../../src/net/ports/tap.js';
import { Switch } from '../../src/net/switch/switch.js';
import { ip, Netns, uniqueIfname } from '../helpers/netns.js';

const logger = silentLogger();

function add<S extends { name: string }>(sw: Switch, make: PortFactory<S>, spec: S): Port {
  return sw.addPort(spec.name, { network: 'lan' }, (sink, p) =>
    make(spec, {
      sink,
      onState: (s) => sw.portState(p, s),
      logger,
      maxFrameLen: MAX_FRAME_LEN,
      queueLen: DEFAULT_QUEUE_LEN,
      onMalformed: (r) => sw.malformed(p, r),
    }),
  ).port;
}

describe('host port', { timeout: 120_000 }, () => {
  const sw = new Switch({ logger });
  let lan: Netns;
  let vm: Netns;
  const near = uniqueIfname('vlh');
  const far = uniqueIfname('vlf');
  const tap = uniqueIfname('vlt');
  let host: Port;

  /** Frames the LAN side's veth end has sent so far. */
  async function farTx(): Promise<number> {
    const { stdout } = await lan.exec('cat', `/sys/class/net/${far}/statistics/tx_packets`);
    return Number(stdout.trim());
  }

  before(async () => {
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    lan = await Netns.create('hostlan');
    vm = await Netns.create('hostvm');
    // No IPv6 chatter (router solicitations, DAD) to blur the frame counts.
    for (const ns of [lan, vm]) await ns.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    await ip('link', 'add', near, 'type', 'veth', 'peer', 'name', far);
    await ip('link', 'set', near, 'up');
    await lan.adopt(far, '10.77.0.1/24');
    host = add(sw, hostPort, { name: 'uplink', ifname: near });
    const t = add(sw, tapPort, { name: 'vm', ifname: tap });
    await host.open();
    await t.open();
    await vm.adopt(tap, '10.77.0.2/24');
  });

  after(async () => {
    for (const sp of sw.ports()) await sw.removePort(sp.name);
    sw.stop();
    await ip('link', 'del', near).catch(() => undefined);
    await lan?.delete();
    await vm?.delete();
  });

  test('carries ping between the LAN namespace and a namespace on a TAP port, and never reads back its own frames', async () => {
    assert.equal(host.state, 'up');
    const rx0 = sw.port('uplink').counters.rxFrames;
    const far0 = await farTx();
    const { stdout } = await vm.exec('ping', '-c', '3', '-i', '0.2', '-W', '5', '10.77.0.1');
    assert.match(stdout, / 0% packet loss/);
    const rx = sw.port('uplink').counters.rxFrames - rx0;
    const sent = (await farTx()) - far0;
    const tx = sw.port('uplink').counters.txFrames;
    // ARP request + 3 echo requests went out; ARP reply + 3 echo replies came in.
    assert.ok(tx >= 4, `the host port sent ${tx} frames`);
    assert.ok(rx >= 4, `the host port received ${rx} frames`);
    // Everything it read was sent by the LAN side: had it read back its own transmissions, rx would exceed that.
    assert.ok(rx <= sent, `the host port read ${rx} frames but the LAN side sent only ${sent}`);
    const { stdout: back } = await lan.exec('ping', '-c', '2', '-i', '0.2', '-W', '5', '10.77.0.2');
    assert.match(back, / 0% packet loss/);
  });

  test('refuses an interface that does not exist with ERR_HOST_IF_NOT_FOUND naming it, and the switch keeps working', async () => {
    const missing = uniqueIfname('vlnone');
    const p = add(sw, hostPort, { name: 'bad', ifname: missing });
    await assert.rejects(p.open(), (err: unknown) => {
      assert.ok(hasCode(err, 'ERR_HOST_IF_NOT_FOUND'), String(err));
      assert.match((err as Error).message, new RegExp(`"${missing}" does not exist`));
      return true;
    });
    await sw.removePort('bad');
    const { stdout } = await vm.exec('ping', '-c', '2', '-i', '0.2', '-W', '5', '10.77.0.1');
    assert.match(stdout, / 0% packet loss/);
  });

  test('goes down when its interface is deleted', async () => {
    const a = uniqueIfname('vlh');
    const b = uniqueIfname('vlf');
    await ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    let down: (reason: string) => void = () => {};
    const wentDown = new Promise<string>((r) => (down = r));
    const p = hostPort(
      { name: 'gone', ifname: a },
      {
        sink: () => {},
        onState: (st, reason) => st === 'down' && down(reason),
        logger,
        maxFrameLen: MAX_FRAME_LEN,
        queueLen: DEFAULT_QUEUE_LEN,
        onMalformed: () => {},
      },
    );
    try {
      await p.open();
      await ip('link', 'del', a);
      assert.match(await wentDown, new RegExp(`${a} was deleted`));
    } finally {
      await p.destroy();
      await ip('link', 'del', a).catch(() => undefined);
    }
  });
});
