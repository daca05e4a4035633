/**
 * MAC events (Switch.onMacEvent): local ports' MACs learned, moved and
 * forgotten, delivered once per turn of the event loop from a bounded ring;
 * drops are counted and reported so the listener resyncs from localMacs().
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import { silentLogger } from '../../src/log.js';
import { type MacEvent, type PortBinding, Switch } from '../../src/net/switch/switch.js';
import { packBatch, RecPort } from '../helpers/rec-port.js';

const MAC = (n: number) => `5254000000${n.toString(16).padStart(2, '0')}`;
const TEXT = (n: number) => `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
const eth = (dst: string, src: string) => `${dst}${src}88b5${'ab'.repeat(46)}`;
const BCAST = 'ffffffffffff';
const brief = (evs: MacEvent[]) => evs.map((e) => `${e.type} ${e.mac} ${e.port}${e.local ? '' : ' (link)'}`);

function rig(ring?: number) {
  const clock = { now: 1_000_000 };
  const sw = new Switch({
    logger: silentLogger(),
    clock: () => clock.now,
    agingSec: 300,
    ...(ring === undefined ? {} : { macEventRing: ring }),
  });
  sw.addNetwork({ name: 'lab', vni: 100, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const kinds: Record<string, PortBinding['link']> = { vm1: undefined, vm2: undefined, l1: 'link', l2: 'link' };
  for (const [name, link] of Object.entries(kinds))
    sw.addPort(name, { network: 'lab', link }, (sink) => {
      ports[name] = new RecPort(name, sink);
      return ports[name];
    });
  const rx = (name: string, hex: string) => (ports[name] as RecPort).rx(hex);
  const events: MacEvent[] = [];
  const lost: number[] = [];
  const stop = sw.onMacEvent(
    (ev) => events.push(ev),
    (n) => lost.push(n),
  );
  return { sw, rx, clock, events, lost, stop };
}

describe('Switch MAC events', () => {
  test('reports a new MAC of a local port once, after the current turn, and nothing for its further frames', async () => {
    const { sw, events } = rig();
    const { buf, idx, count } = packBatch([eth(BCAST, MAC(1)), eth(MAC(2), MAC(1)), eth(MAC(3), MAC(1))]);
    sw.port('vm1').ingressBatch(buf, idx, count);
    sw.port('vm1').ingressBatch(buf, idx, count);
    assert.deepEqual(events, [], 'nothing is delivered from within the data path');
    await turn();
    assert.deepEqual(events, [{ type: 'learned', network: 'lab', mac: TEXT(1), port: 'vm1', local: true }]);
    sw.port('vm1').ingressBatch(buf, idx, count);
    await turn();
    assert.equal(events.length, 1);
  });

  test('does not report MACs learned behind links, nor their moves between links', async () => {
    const { rx, events } = rig();
    rx('l1', eth(BCAST, MAC(5)));
    rx('l2', eth(BCAST, MAC(5)));
    await turn();
    assert.deepEqual(events, []);
  });

  test('reports moves between local ports, and from a local port to a link as not local', async () => {
    const { rx, events } = rig();
    rx('vm1', eth(BCAST, MAC(1)));
    rx('vm2', eth(BCAST, MAC(1)));
    rx('l1', eth(BCAST, MAC(1)));
    await turn();
    assert.deepEqual(brief(events), [`learned ${TEXT(1)} vm1`, `moved ${TEXT(1)} vm2`, `moved ${TEXT(1)} l1 (link)`]);
  });

  test('reports local MACs that age out, that a port forgets going down, and those of a removed port', async () => {
    const { sw, rx, clock, events } = rig();
    rx('vm1', eth(BCAST, MAC(1)));
    rx('vm2', eth(BCAST, MAC(2)));
    rx('l1', eth(BCAST, MAC(5)));
    clock.now += 301_000;
    assert.equal(sw.sweep(), 3);
    rx('vm1', eth(BCAST, MAC(3)));
    rx('vm2', eth(BCAST, MAC(4)));
    sw.portState(sw.port('vm1'), 'down');
    await sw.removePort('vm2');
    await turn();
    const all = brief(events);
    assert.deepEqual(all.slice(2, 4).sort(), [`forgotten ${TEXT(1)} vm1`, `forgotten ${TEXT(2)} vm2`], 'aged');
    assert.deepEqual(all.slice(6), [`forgotten ${TEXT(3)} vm1`, `forgotten ${TEXT(4)} vm2`]);
    assert.equal(all.length, 8);
  });

  test('counts the events a full ring drops, tells the listener once, and localMacs() has them all', async () => {
    const { sw, rx, events, lost } = rig(4);
    for (let n = 1; n <= 10; n++) rx('vm1', eth(BCAST, MAC(n)));
    await turn();
    assert.equal(events.length, 4);
    assert.deepEqual(lost, [6]);
    assert.equal(sw.localMacs().length, 10);
    // The ring is free again: the next change is reported.
    rx('vm2', eth(BCAST, MAC(11)));
    await turn();
    assert.deepEqual(brief(events.slice(4)), [`learned ${TEXT(11)} vm2`]);
    assert.deepEqual(lost, [6]);
  });

  test('records nothing while no one listens, and stops when the listener leaves', async () => {
    const { sw, rx, events, stop } = rig();
    stop();
    rx('vm1', eth(BCAST, MAC(1)));
    await turn();
    const later: MacEvent[] = [];
    sw.onMacEvent((ev) => later.push(ev));
    await turn();
    assert.deepEqual(events, []);
    assert.deepEqual(later, []);
    rx('vm2', eth(BCAST, MAC(2)));
    await turn();
    assert.deepEqual(brief(later), [`learned ${TEXT(2)} vm2`]);
  });

  test('goes on delivering to the other listeners when one throws', async () => {
    const { sw, rx, events } = rig();
    sw.onMacEvent(() => {
      throw new Error('listener bug');
    });
    rx('vm1', eth(BCAST, MAC(1)));
    rx('vm1', eth(BCAST, MAC(2)));
    await turn();
    assert.equal(events.length, 2);
  });

  test('delivers events caused by a listener (a location it installs) in the next turn', async () => {
    const { sw, rx, events } = rig();
    sw.onMacEvent((ev) => {
      if (ev.mac === TEXT(1) && ev.type === 'learned') sw.setLocation('lab', TEXT(1), 'l1');
    });
    rx('vm1', eth(BCAST, MAC(1)));
    await turn();
    assert.deepEqual(brief(events), [`learned ${TEXT(1)} vm1`]);
    await turn();
    assert.deepEqual(brief(events), [`learned ${TEXT(1)} vm1`, `moved ${TEXT(1)} l1 (link)`]);
  });
});
