/**
 * Split-horizon groups and flood lists (src/net/switch/horizon.ts,
 * network.ts): worked out when ports and links join or leave a network, and
 * what the switch then floods by them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { Hold } from '../../src/net/switch/hold.js';
import {
  floodLists,
  HORIZON_LINK,
  HORIZON_LOCAL,
  HORIZON_RELAY,
  horizonOf,
  horizonPasses,
} from '../../src/net/switch/horizon.js';
import { Network } from '../../src/net/switch/network.js';
import { type PortBinding, Switch, SwitchPort } from '../../src/net/switch/switch.js';
import { RecPort } from '../helpers/rec-port.js';

/** Ingress entry points that are never called: the ports below only have their groups looked at. */
const idle = { ingress(): void {}, ingressBatch(): void {}, hold: new Hold() };
const port = (id: number, link?: PortBinding['link']) => new SwitchPort(id, `p${id}`, { link }, idle, 0);
const names = (list: { sp: SwitchPort }[]) => list.map((m) => m.sp.name);

describe('split-horizon groups', () => {
  test('a link never passes to a link or relay, a relay passes to relays, nothing is blocked to or from local ports', () => {
    assert.deepEqual(
      [horizonOf(undefined), horizonOf('link'), horizonOf('relay')],
      [HORIZON_LOCAL, HORIZON_LINK, HORIZON_RELAY],
    );
    const pass = (f: number, t: number) => horizonPasses(f, t);
    assert.deepEqual(
      [pass(HORIZON_LOCAL, HORIZON_LOCAL), pass(HORIZON_LOCAL, HORIZON_LINK), pass(HORIZON_LOCAL, HORIZON_RELAY)],
      [true, true, true],
    );
    assert.deepEqual(
      [pass(HORIZON_LINK, HORIZON_LOCAL), pass(HORIZON_LINK, HORIZON_LINK), pass(HORIZON_LINK, HORIZON_RELAY)],
      [true, false, false],
    );
    assert.deepEqual(
      [pass(HORIZON_RELAY, HORIZON_LOCAL), pass(HORIZON_RELAY, HORIZON_LINK), pass(HORIZON_RELAY, HORIZON_RELAY)],
      [true, false, true],
    );
  });

  test('the flood list of each group holds the members that group may reach, in membership order', () => {
    const members = [port(0), port(1, 'link'), port(2, 'relay'), port(3), port(4, 'relay')].map((sp) => ({
      sp,
      vid: 0,
    }));
    const lists = floodLists(members);
    assert.deepEqual(names(lists[HORIZON_LOCAL] ?? []), ['p0', 'p1', 'p2', 'p3', 'p4']);
    assert.deepEqual(names(lists[HORIZON_LINK] ?? []), ['p0', 'p3']);
    assert.deepEqual(names(lists[HORIZON_RELAY] ?? []), ['p0', 'p2', 'p3', 'p4']);
  });

  test('a network recomputes its flood lists when a port or a link joins or leaves', () => {
    const net = new Network({ name: 'lab', vni: 1, mtu: 1500 }, 16);
    const local = port(0);
    const link = port(1, 'link');
    const relay = port(2, 'relay');
    net.join(local, 0);
    assert.deepEqual(net.flood.map(names), [['p0'], ['p0'], ['p0']]);
    net.join(link, 0);
    net.join(relay, 7);
    assert.deepEqual(net.flood.map(names), [['p0', 'p1', 'p2'], ['p0'], ['p0', 'p2']]);
    assert.equal(net.flood[HORIZON_RELAY]?.[1]?.vid, 7);
    net.leave(local);
    assert.deepEqual(net.flood.map(names), [['p1', 'p2'], [], ['p2']]);
    net.leave(relay);
    net.leave(link);
    assert.deepEqual(net.flood.map(names), [[], [], []]);
  });
});

describe('flooding by the groups as ports and links come and go', () => {
  test('a broadcast reaches the ports and links its group allows, as they are added and removed', async () => {
    const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
    sw.addNetwork({ name: 'lab', vni: 1, mtu: 1500 });
    const ports: Record<string, RecPort> = {};
    const add = (name: string, link?: PortBinding['link']) =>
      sw.addPort(name, { network: 'lab', link }, (sink) => {
        ports[name] = new RecPort(name, sink);
        return ports[name];
      });
    const bcast = (from: string, n: number) => {
      const b = Buffer.from(`ffffffffffff52540000000${n}88b5${'ab'.repeat(46)}`, 'hex');
      sw.port(from).ingress(b, 0, b.length);
    };
    const got = () => Object.keys(ports).filter((n) => (ports[n] as RecPort).sent.splice(0).length > 0);
    add('vm1');
    add('vm2');
    add('l1', 'link');
    bcast('l1', 1);
    assert.deepEqual(got(), ['vm1', 'vm2']);
    add('l2', 'link');
    add('r1', 'relay');
    add('r2', 'relay');
    bcast('l1', 1);
    assert.deepEqual(got(), ['vm1', 'vm2']);
    bcast('r1', 2);
    assert.deepEqual(got(), ['vm1', 'vm2', 'r2']);
    bcast('vm1', 3);
    assert.deepEqual(got(), ['vm2', 'l1', 'l2', 'r1', 'r2']);
    await sw.removePort('vm2');
    await sw.removePort('r2');
    delete ports['vm2'];
    delete ports['r2'];
    bcast('r1', 2);
    assert.deepEqual(got(), ['vm1']);
    bcast('vm1', 3);
    assert.deepEqual(got(), ['l1', 'l2', 'r1']);
  });
});
