/**
 * ARP suppression (Switch.setArpProxy): a local port's ARP request for a
 * known guest address is answered by the switch to that port only; probes,
 * gratuitous ARP, requests from links and unknown addresses are flooded.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { type PortBinding, Switch } from '../../src/net/switch/switch.js';
import { RecPort } from '../helpers/rec-port.js';

const MAC1 = '525400000001';
const MAC9 = '525400000009';
const IP1 = '0a000001';
const IP9 = '0a000009';
const PAD = '00'.repeat(18);
/** An Ethernet/IPv4 ARP frame (hex), padded to 60 bytes. */
const arp = (dst: string, src: string, op: number, sha: string, spa: string, tha: string, tpa: string) =>
  `${dst}${src}0806000108000604${op.toString(16).padStart(4, '0')}${sha}${spa}${tha}${tpa}${PAD}`;
const request = (spa = IP1, tpa = IP9, sha = MAC1) => arp('ffffffffffff', sha, 1, sha, spa, '000000000000', tpa);
const REPLY = arp(MAC1, MAC9, 2, MAC9, IP9, MAC1, IP1);

function rig(kinds: Record<string, PortBinding> = {}) {
  const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
  sw.addNetwork({ name: 'lab', vni: 100, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const all: Record<string, PortBinding> = {
    vm1: { network: 'lab' },
    vm2: { network: 'lab' },
    l1: { network: 'lab', link: 'link' },
    ...kinds,
  };
  for (const [name, binding] of Object.entries(all))
    sw.addPort(name, binding, (sink) => {
      ports[name] = new RecPort(name, sink);
      return ports[name];
    });
  const rx = (name: string, hex: string) => (ports[name] as RecPort).rx(hex);
  const taken = () => Object.fromEntries(Object.entries(ports).map(([n, p]) => [n, p.take()]));
  return { sw, rx, taken };
}

describe('Switch ARP suppression', () => {
  test('answers a local port ARP request for a known address to that port only, without flooding', () => {
    const { sw, rx, taken } = rig();
    assert.equal(sw.setArpProxy('lab', '10.0.0.9', '52:54:00:00:00:09'), true);
    rx('vm1', request());
    assert.deepEqual(taken(), { vm1: [REPLY], vm2: [], l1: [] });
  });

  test('floods requests for unknown addresses, probes, gratuitous ARP, the owner asking, and requests from links', () => {
    const { sw, rx, taken } = rig();
    sw.setArpProxy('lab', '10.0.0.9', '52:54:00:00:00:09');
    const cases = [
      request(IP1, '0a000008'),
      request('00000000', IP9),
      request(IP9, IP9, MAC9),
      request(IP1, IP9, MAC9),
    ];
    for (const f of cases) {
      rx('vm1', f);
      assert.deepEqual(taken(), { vm1: [], vm2: [f], l1: [f] });
    }
    rx('l1', request());
    assert.deepEqual(taken(), { vm1: [request()], vm2: [request()], l1: [] });
    const reply = arp('ffffffffffff', MAC1, 2, MAC1, IP1, '000000000000', IP9);
    rx('vm1', reply);
    assert.deepEqual(taken(), { vm1: [], vm2: [reply], l1: [reply] }, 'only requests are answered');
  });

  test('floods again once the address is removed', () => {
    const { sw, rx, taken } = rig();
    sw.setArpProxy('lab', '10.0.0.9', '52:54:00:00:00:09');
    sw.setArpProxy('lab', '10.0.0.9', undefined);
    rx('vm1', request());
    assert.deepEqual(taken(), { vm1: [], vm2: [request()], l1: [request()] });
  });

  test('answers on a trunk port with the VLAN tag of the network', () => {
    const { sw, rx, taken } = rig({ t1: { trunk: { vlans: { 7: 'lab' } } } });
    sw.setArpProxy('lab', '10.0.0.9', '52:54:00:00:00:09');
    const req = request();
    rx('t1', `${req.slice(0, 24)}81000007${req.slice(24)}`);
    const out = taken();
    assert.deepEqual(out.t1, [`${REPLY.slice(0, 24)}81000007${REPLY.slice(24)}`]);
    assert.deepEqual([out.vm1, out.vm2, out.l1], [[], [], []]);
  });

  test('answers for an address above 127.255.255.255 (a key that does not fit a signed 31-bit integer)', () => {
    const { sw, rx, taken } = rig();
    sw.setArpProxy('lab', '192.168.1.9', '52:54:00:00:00:09');
    rx('vm1', request(IP1, 'c0a80109'));
    assert.deepEqual(taken().vm1, [arp(MAC1, MAC9, 2, MAC9, 'c0a80109', MAC1, IP1)]);
  });

  test('refuses an address that is not IPv4, a MAC that is not unicast, an unknown network', () => {
    const { sw } = rig();
    assert.throws(() => sw.setArpProxy('lab', '10.0.0.300', '52:54:00:00:00:09'), { code: 'ERR_IP_ADDRESS' });
    assert.throws(() => sw.setArpProxy('lab', 'fe80::1', '52:54:00:00:00:09'), { code: 'ERR_IP_ADDRESS' });
    assert.throws(() => sw.setArpProxy('lab', '10.0.0.9', 'ff:ff:ff:ff:ff:ff'), { code: 'ERR_MAC_ADDRESS' });
    assert.throws(() => sw.setArpProxy('nope', '10.0.0.9', '52:54:00:00:00:09'), { code: 'ERR_NETWORK_NOT_FOUND' });
  });
});
