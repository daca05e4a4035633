/**
 * The switch core with in-memory ports: forwarding, learning, aging, policies
 * and 802.1Q trunks. Frames are byte-exact hex where the bytes matter.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { WriteResult } from '../../src/net/port.js';
import { type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { RecPort } from '../helpers/rec-port.js';

const MAC = (n: number) => `52540000000${n.toString(16)}`;
const BCAST = 'ffffffffffff';
/** dst, src, EtherType 0x88b5 and a payload of `n` bytes. */
const eth = (dst: string, src: string, n = 46, fill = 'ab') => `${dst}${src}88b5${fill.repeat(n)}`;
/** The same with an 802.1Q tag (PCP 0) for `vid`. */
const tagged = (dst: string, src: string, vid: number, n = 46) =>
  `${dst}${src}8100${vid.toString(16).padStart(4, '0')}88b5${'ab'.repeat(n)}`;

function rig(opts: { agingSec?: number; mtu?: number } = {}) {
  let now = 1_000_000;
  const sw = new Switch({ logger: silentLogger(), clock: () => now, agingSec: opts.agingSec ?? 300 });
  sw.addNetwork({ name: 'red', vni: 1, mtu: opts.mtu ?? 1500 });
  sw.addNetwork({ name: 'blue', vni: 2, mtu: 1500 });
  sw.addNetwork({ name: 'green', vni: 3, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const sps: Record<string, SwitchPort> = {};
  const add = (name: string, binding: PortBinding) => {
    sps[name] = sw.addPort(name, binding, (sink) => {
      ports[name] = new RecPort(name, sink);
      return ports[name];
    });
    return ports[name] as RecPort;
  };
  return {
    sw,
    add,
    ports,
    sps,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('Switch', () => {
  test('floods a frame to an unknown MAC to every other port of the same network only', () => {
    const { add } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    const c = add('c', { network: 'red' });
    const d = add('d', { network: 'blue' });
    const f = eth(MAC(2), MAC(1));
    a.rx(f);
    assert.deepEqual(b.take(), [f]);
    assert.deepEqual(c.take(), [f]);
    assert.deepEqual(a.take(), []);
    assert.deepEqual(d.take(), []);
  });

  test('learns source MACs and sends known unicast to one port only', () => {
    const { add, sw } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    const c = add('c', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    b.take();
    c.take();
    const f = eth(MAC(1), MAC(2));
    b.rx(f);
    assert.deepEqual(a.take(), [f]);
    assert.deepEqual(c.take(), []);
    assert.deepEqual(
      sw
        .fdb('red')
        .map((r) => [r.mac, r.port])
        .sort(),
      [
        ['52:54:00:00:00:01', 'a'],
        ['52:54:00:00:00:02', 'b'],
      ],
    );
  });

  test('filters a frame whose destination is behind the port it came from', () => {
    const { add } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    b.take();
    a.rx(eth(MAC(1), MAC(3)));
    assert.deepEqual(b.take(), []);
    assert.deepEqual(a.take(), []);
  });

  test('ages out MACs on sweep after the aging time, then floods again', () => {
    const { add, sw, advance } = rig({ agingSec: 10 });
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    const c = add('c', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    advance(9_000);
    assert.equal(sw.sweep(), 0);
    b.rx(eth(MAC(1), MAC(2)));
    assert.equal(c.take().length, 1, 'the broadcast only: MAC 1 is still known');
    advance(10_001);
    // MAC 2 was learned at the clock of the last sweep; both are now older than 10 s.
    assert.equal(sw.sweep(), 2);
    assert.equal(sps(sw, 'a').learned, 0);
    const f = eth(MAC(1), MAC(2));
    b.rx(f);
    assert.deepEqual(c.take(), [f]);
    assert.deepEqual(a.take().slice(-1), [f]);
  });

  test('re-learns a MAC that moved to another port at once (a migrated VM)', () => {
    const { add, sps } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    const c = add('c', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    c.rx(eth(BCAST, MAC(1)));
    a.take();
    b.take();
    c.take();
    const f = eth(MAC(1), MAC(2));
    b.rx(f);
    assert.deepEqual(c.take(), [f]);
    assert.deepEqual(a.take(), []);
    assert.equal(sps['a']?.learned, 0);
    assert.equal(sps['c']?.learned, 1);
  });

  test('drops frames from MACs not in allowed_macs as mac_locked', () => {
    const { add, sps } = rig();
    const a = add('a', { network: 'red', allowedMacs: [0x5254_0000_0001] });
    const b = add('b', { network: 'red' });
    a.rx(eth(BCAST, MAC(9)));
    assert.deepEqual(b.take(), []);
    assert.equal(sps['a']?.counters.mac_locked, 1);
    a.rx(eth(BCAST, MAC(1)));
    assert.equal(b.take().length, 1);
  });

  test('stops learning new MACs at the per-port limit but keeps forwarding known ones', () => {
    const { add, sps } = rig();
    const a = add('a', { network: 'red', maxMacs: 2 });
    const b = add('b', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    a.rx(eth(BCAST, MAC(2)));
    a.rx(eth(BCAST, MAC(3)));
    a.rx(eth(BCAST, MAC(1)));
    assert.equal(b.take().length, 3);
    assert.equal(sps['a']?.counters.mac_limit, 1);
    assert.equal(sps['a']?.learned, 2);
  });

  test('storm control limits broadcast and multicast to the configured rate, not unicast', () => {
    const { add, sps, advance } = rig();
    const a = add('a', { network: 'red', storm: { pps: 10, burst: 2 } });
    const b = add('b', { network: 'red' });
    for (let i = 0; i < 3; i++) a.rx(eth(BCAST, MAC(1)));
    a.rx(eth('01005e000001', MAC(1)));
    assert.equal(b.take().length, 2);
    assert.equal(sps['a']?.counters.storm, 2);
    a.rx(eth(MAC(5), MAC(1)));
    assert.equal(b.take().length, 1, 'unicast is not storm-limited');
    advance(100); // one token at 10 pps
    a.rx(eth(BCAST, MAC(1)));
    a.rx(eth(BCAST, MAC(1)));
    assert.equal(b.take().length, 1);
    assert.equal(sps['a']?.counters.storm, 3);
  });

  test('drops frames over the network MTU; a guest VLAN tag on an access port does not count', () => {
    const { add, sps } = rig({ mtu: 100 });
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    a.rx(eth(BCAST, MAC(1), 100)); // 100-byte payload after the 14-byte header: fits
    a.rx(eth(BCAST, MAC(1), 101));
    a.rx(tagged(BCAST, MAC(1), 5, 100));
    assert.equal(b.take().length, 2);
    assert.equal(sps['a']?.counters.mtu, 1);
  });

  test('counts runts and group source MACs as drops', () => {
    const { add, sps } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    a.rx('ffffffffffff52540000000188');
    a.rx('');
    a.rx(eth(BCAST, '010000000001'));
    assert.deepEqual(b.take(), []);
    assert.equal(sps['a']?.counters.runt, 2);
    assert.equal(sps['a']?.counters.bad_src, 1);
  });

  test('strips the 802.1Q tag of a trunk ingress frame and tags trunk egress byte-exact', () => {
    const { add } = rig();
    const t = add('t', { trunk: { vlans: { 10: 'red', 20: 'blue' } } });
    const r = add('r', { network: 'red' });
    const u = add('u', { network: 'blue' });
    t.rx(tagged(BCAST, MAC(1), 10));
    assert.deepEqual(r.take(), [eth(BCAST, MAC(1))]);
    assert.deepEqual(u.take(), []);
    u.rx(eth(BCAST, MAC(2)));
    assert.deepEqual(t.take(), [tagged(BCAST, MAC(2), 20)]);
    // Known unicast to the trunk keeps the network's tag.
    r.rx(eth(MAC(1), MAC(3)));
    assert.deepEqual(t.take(), [tagged(MAC(1), MAC(3), 10)]);
  });

  test('carries untagged frames on the native VLAN and drops unmapped tags and untagged frames without one', () => {
    const { add, sps } = rig();
    const t = add('t', { trunk: { vlans: { 10: 'red' }, native: 'green' } });
    const g = add('g', { network: 'green' });
    const r = add('r', { network: 'red' });
    t.rx(eth(BCAST, MAC(1)));
    assert.deepEqual(g.take(), [eth(BCAST, MAC(1))]);
    g.rx(eth(BCAST, MAC(2)));
    assert.deepEqual(t.take(), [eth(BCAST, MAC(2))]);
    t.rx(tagged(BCAST, MAC(1), 30));
    assert.equal(sps['t']?.counters.vlan, 1);
    const n = add('n', { trunk: { vlans: { 10: 'red' } } });
    n.rx(eth(BCAST, MAC(4)));
    assert.equal(sps['n']?.counters.vlan, 1);
    assert.deepEqual(r.take(), []);
  });

  test('takes a priority-tagged frame (VID 0) on a trunk as native, without the tag', () => {
    const { add, sps } = rig();
    const t = add('t', { trunk: { vlans: { 10: 'red' }, native: 'green' } });
    const g = add('g', { network: 'green' });
    const r = add('r', { network: 'red' });
    t.rx(tagged(BCAST, MAC(1), 0));
    assert.deepEqual(g.take(), [eth(BCAST, MAC(1))]);
    assert.deepEqual(r.take(), []);
    const n = add('n', { trunk: { vlans: { 10: 'red' } } });
    n.rx(tagged(BCAST, MAC(2), 0));
    assert.equal(sps['n']?.counters.vlan, 1);
  });

  test('counts queue_full and down results of a port write as drops', () => {
    const { add, sps } = rig();
    const a = add('a', { network: 'red' });
    const b = add('b', { network: 'red' });
    const c = add('c', { network: 'red' });
    b.result = WriteResult.QUEUE_FULL;
    c.result = WriteResult.DOWN;
    a.rx(eth(BCAST, MAC(1)));
    assert.equal(sps['b']?.counters.queue_full, 1);
    assert.equal(sps['c']?.counters.down, 1);
    assert.equal(sps['b']?.counters.txFrames, 0);
  });

  test('forgets the MACs of a port that goes down or is removed', async () => {
    const { add, sw, sps } = rig();
    const a = add('a', { network: 'red' });
    add('b', { network: 'red' });
    a.rx(eth(BCAST, MAC(1)));
    assert.equal(sw.fdb().length, 1);
    sw.portState(sps['a'] as SwitchPort, 'down');
    assert.equal(sw.fdb().length, 0);
    assert.equal(sps['a']?.learned, 0);
    a.rx(eth(BCAST, MAC(1)));
    await sw.removePort('a');
    assert.equal(sw.fdb().length, 0);
    assert.throws(() => sw.port('a'), { code: 'ERR_PORT_NOT_FOUND' });
  });

  test('refuses duplicate networks, VNIs and ports, and removing a network in use', () => {
    const { add, sw } = rig();
    add('a', { network: 'red' });
    assert.throws(() => sw.addNetwork({ name: 'red', vni: 9, mtu: 1500 }), { code: 'ERR_NETWORK_EXISTS' });
    assert.throws(() => sw.addNetwork({ name: 'x', vni: 1, mtu: 1500 }), { code: 'ERR_VNI_IN_USE' });
    assert.throws(() => add('a', { network: 'red' }), { code: 'ERR_PORT_EXISTS' });
    assert.throws(() => add('z', { network: 'nope' }), { code: 'ERR_NETWORK_NOT_FOUND' });
    assert.throws(() => sw.removeNetwork('red'), { code: 'ERR_NETWORK_IN_USE' });
    assert.doesNotThrow(() => sw.removeNetwork('blue'));
  });
});

function sps(sw: Switch, name: string): SwitchPort {
  return sw.port(name);
}
