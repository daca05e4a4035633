/**
 * Split horizon in the switch: frames that came from an overlay link are
 * never sent out of another link (flooded or known unicast), except between
 * two relay ports (a hub's links).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { RecPort } from '../helpers/rec-port.js';

const MAC = (n: number) => `52540000000${n.toString(16)}`;
const eth = (dst: string, src: string) => `${dst}${src}88b5${'ab'.repeat(46)}`;

function rig(kinds: Record<string, PortBinding['link']>) {
  const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
  sw.addNetwork({ name: 'lab', vni: 100, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const sps: Record<string, SwitchPort> = {};
  for (const [name, link] of Object.entries(kinds)) {
    sps[name] = sw.addPort(name, { network: 'lab', link }, (sink) => {
      const p = new RecPort(name, sink);
      ports[name] = p;
      return p;
    });
  }
  return { sw, ports: ports as Record<string, RecPort>, sps: sps as Record<string, SwitchPort> };
}

describe('split horizon on overlay link ports', () => {
  test('floods a broadcast from a link to local ports only, never to another link', () => {
    const { ports } = rig({ vm1: undefined, vm2: undefined, l1: 'link', l2: 'link' });
    const f = eth('ffffffffffff', MAC(9));
    ports.l1?.rx(f);
    assert.deepEqual(ports.vm1?.take(), [f]);
    assert.deepEqual(ports.vm2?.take(), [f]);
    assert.deepEqual(ports.l2?.take(), []);
  });

  test('floods a broadcast from a local port to every link', () => {
    const { ports } = rig({ vm1: undefined, l1: 'link', l2: 'relay' });
    const f = eth('ffffffffffff', MAC(1));
    ports.vm1?.rx(f);
    assert.deepEqual(ports.l1?.take(), [f]);
    assert.deepEqual(ports.l2?.take(), [f]);
  });

  test('a hub relays between two relay ports, but not from a relay port to a plain link', () => {
    const { ports } = rig({ vm1: undefined, s1: 'relay', s2: 'relay', up: 'link' });
    const f = eth('ffffffffffff', MAC(5));
    ports.s1?.rx(f);
    assert.deepEqual(ports.s2?.take(), [f]);
    assert.deepEqual(ports.vm1?.take(), [f]);
    assert.deepEqual(ports.up?.take(), []);
  });

  test('drops known unicast from a link toward another link and counts it', () => {
    const { ports, sps } = rig({ vm1: undefined, l1: 'link', l2: 'link' });
    // MAC 7 is learned behind l2; a frame for it arriving from l1 must not go back out.
    ports.l2?.rx(eth('ffffffffffff', MAC(7)));
    ports.vm1?.take();
    ports.l1?.rx(eth(MAC(7), MAC(8)));
    assert.deepEqual(ports.l2?.take(), []);
    assert.equal(sps.l1?.counters.split_horizon, 1);
    assert.equal(sps.l1?.counterSnapshot().drops.split_horizon, 1);
  });

  test('forwards known unicast between relay ports (the hub path between two spokes)', () => {
    const { ports } = rig({ s1: 'relay', s2: 'relay' });
    ports.s2?.rx(eth('ffffffffffff', MAC(2)));
    ports.s1?.take();
    const f = eth(MAC(2), MAC(1));
    ports.s1?.rx(f);
    assert.deepEqual(ports.s2?.take(), [f]);
  });

  test('re-learns at once a MAC that moved from behind one link to behind another', () => {
    const { ports, sw } = rig({ vm1: undefined, l1: 'link', l2: 'link' });
    ports.l1?.rx(eth('ffffffffffff', MAC(4)));
    assert.equal(sw.fdb('lab').find((e) => e.mac === '52:54:00:00:00:04')?.port, 'l1');
    // The VM migrated: its gratuitous ARP / RARP now arrives over l2.
    ports.l2?.rx(eth('ffffffffffff', MAC(4)));
    assert.equal(sw.fdb('lab').find((e) => e.mac === '52:54:00:00:00:04')?.port, 'l2');
    ports.vm1?.take();
    const f = eth(MAC(4), MAC(1));
    ports.vm1?.rx(f);
    assert.deepEqual(ports.l2?.take(), [f]);
    assert.deepEqual(ports.l1?.take(), []);
  });
});
