/**
 * Locations installed by the control plane (Switch.setLocation): known
 * unicast toward a port from the first frame, not aged, not moved by copies
 * of the MAC's frames from a link, taken over by a local port (the VM moved
 * here), removed with their port.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import { silentLogger } from '../../src/log.js';
import { type MacEvent, type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { prng } from '../helpers/prng.js';
import { RecPort } from '../helpers/rec-port.js';

const MAC = (n: number) => `5254000000${n.toString(16).padStart(2, '0')}`;
const TEXT = (n: number) => `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
const eth = (dst: string, src: string) => `${dst}${src}88b5${'ab'.repeat(46)}`;
const BCAST = 'ffffffffffff';

function rig(kinds: Record<string, PortBinding['link']> = { vm1: undefined, vm2: undefined, l1: 'link', l2: 'link' }) {
  const clock = { now: 1_000_000 };
  const sw = new Switch({ logger: silentLogger(), clock: () => clock.now, agingSec: 300 });
  sw.addNetwork({ name: 'lab', vni: 100, mtu: 1500 });
  sw.addNetwork({ name: 'dmz', vni: 200, mtu: 1500 });
  const ports: Record<string, RecPort> = {};
  const sps: Record<string, SwitchPort> = {};
  const add = (name: string, binding: PortBinding) => {
    sps[name] = sw.addPort(name, binding, (sink) => {
      ports[name] = new RecPort(name, sink);
      return ports[name];
    });
  };
  for (const [name, link] of Object.entries(kinds)) add(name, { network: 'lab', link });
  const rx = (name: string, hex: string) => (ports[name] as RecPort).rx(hex);
  /** Frames each port received since the last call. */
  const taken = () => Object.fromEntries(Object.entries(ports).map(([n, p]) => [n, p.take().length]));
  const events: MacEvent[] = [];
  sw.onMacEvent((ev) => events.push(ev));
  return { sw, ports, sps, rx, taken, clock, add, events };
}

describe('Switch locations', () => {
  test('sends the first frame to an installed location to its port only, without flooding', () => {
    const { sw, rx, taken } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 1, l2: 0 });
    const row = sw.fdb('lab').find((r) => r.mac === TEXT(9));
    assert.equal(row?.port, 'l1');
  });

  test('keeps an installed location through the aging sweep while a learned MAC ages out', () => {
    const { sw, rx, taken, clock } = rig();
    assert.equal(sw.setLocation('lab', TEXT(9), 'l1'), true);
    rx('vm2', eth(BCAST, MAC(2)));
    clock.now += 301_000;
    assert.equal(sw.sweep(), 1, 'only the learned MAC of vm2');
    taken();
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 1, l2: 0 });
  });

  test('is not moved by frames of the MAC arriving from another link (a relayed or flooded copy)', () => {
    const { sw, rx, taken, clock, sps } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    rx('l2', eth(BCAST, MAC(9)));
    rx('l1', eth(BCAST, MAC(9)));
    clock.now += 301_000;
    sw.sweep();
    taken();
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 1, l2: 0 });
    assert.equal(sps.l2?.learned, 0);
    assert.equal(sps.l1?.learned, 0, 'an installed location is not counted as learned');
  });

  test('is taken over by a frame from a local port (the VM moved here), reported as moved', async () => {
    const { sw, rx, taken, events, sps } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    rx('vm2', eth(BCAST, MAC(9)));
    taken();
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 1, l1: 0, l2: 0 });
    assert.equal(sps.vm2?.learned, 1);
    await turn();
    assert.deepEqual(
      events.filter((e) => e.mac === TEXT(9)),
      [{ type: 'moved', network: 'lab', mac: TEXT(9), port: 'vm2', local: true }],
    );
    // It is a learned MAC now: removing the location changes nothing.
    sw.setLocation('lab', TEXT(9), undefined);
    assert.equal(sw.fdb('lab').find((r) => r.mac === TEXT(9))?.port, 'vm2');
  });

  test('returns the MAC to flooding once the location is removed', () => {
    const { sw, rx, taken } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    sw.setLocation('lab', TEXT(9), undefined);
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 1, l1: 1, l2: 1 });
    assert.equal(
      sw.fdb('lab').find((r) => r.mac === TEXT(9)),
      undefined,
    );
  });

  test('moves a location to another port when installed again (a higher sequence elsewhere)', () => {
    const { sw, rx, taken } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    sw.setLocation('lab', TEXT(9), 'l2');
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 0, l2: 1 });
  });

  test('replaces a MAC learned on a local port and reports it moved to the link', async () => {
    const { sw, rx, taken, events, sps } = rig();
    rx('vm2', eth(BCAST, MAC(9)));
    sw.setLocation('lab', TEXT(9), 'l1');
    assert.equal(sps.vm2?.learned, 0);
    taken();
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 1, l2: 0 });
    await turn();
    assert.deepEqual(
      events.filter((e) => e.mac === TEXT(9)).map((e) => `${e.type} ${e.port} ${e.local}`),
      ['learned vm2 true', 'moved l1 false'],
    );
  });

  test('removes the locations installed toward a removed port; they can be installed again', async () => {
    const { sw, rx, taken, add } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    await sw.removePort('l1');
    assert.equal(sw.fdb('lab').length, 0);
    add('l1', { network: 'lab', link: 'link' });
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 1, l1: 1, l2: 1 }, 'floods meanwhile');
    sw.setLocation('lab', TEXT(9), 'l1');
    rx('vm1', eth(MAC(9), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, vm2: 0, l1: 1, l2: 0 });
  });

  test('keeps the locations toward a port that goes down or is flushed (the caller moves them)', () => {
    const { sw, sps } = rig();
    sw.setLocation('lab', TEXT(9), 'l1');
    sw.portState(sps.l1 as SwitchPort, 'down');
    assert.equal(sw.fdb('lab').find((r) => r.mac === TEXT(9))?.port, 'l1');
  });

  test('does not count installed locations against the port MAC limit', () => {
    const { sw, add, rx, taken } = rig({ vm1: undefined });
    add('l1', { network: 'lab', link: 'link', maxMacs: 2 });
    for (let n = 10; n < 20; n++) assert.equal(sw.setLocation('lab', TEXT(n), 'l1'), true);
    rx('l1', eth(BCAST, MAC(30)));
    rx('l1', eth(BCAST, MAC(31)));
    taken();
    rx('vm1', eth(MAC(31), MAC(1)));
    assert.deepEqual(taken(), { vm1: 0, l1: 1 });
    assert.equal(sw.fdb('lab').filter((r) => r.port === 'l1').length, 12);
  });

  test('answers false and installs nothing when the network table is full', () => {
    const sw = new Switch({ logger: silentLogger(), clock: () => 0, maxMacsPerNetwork: 2 });
    sw.addNetwork({ name: 'lab', vni: 1, mtu: 1500 });
    sw.addPort('l1', { network: 'lab', link: 'link' }, (sink) => new RecPort('l1', sink));
    assert.equal(sw.setLocation('lab', TEXT(1), 'l1'), true);
    assert.equal(sw.setLocation('lab', TEXT(2), 'l1'), true);
    assert.equal(sw.setLocation('lab', TEXT(3), 'l1'), false);
    assert.equal(sw.setLocation('lab', TEXT(2), 'l1'), true, 'a known MAC is still moved');
    assert.equal(sw.fdb('lab').length, 2);
  });

  test('refuses an unknown network or port, a port outside the network and a MAC that is not unicast', () => {
    const { sw, add } = rig();
    add('d1', { network: 'dmz', link: 'link' });
    assert.throws(() => sw.setLocation('nope', TEXT(9), 'l1'), { code: 'ERR_NETWORK_NOT_FOUND' });
    assert.throws(() => sw.setLocation('lab', TEXT(9), 'nope'), { code: 'ERR_PORT_NOT_FOUND' });
    assert.throws(() => sw.setLocation('lab', TEXT(9), 'd1'), { code: 'ERR_PORT_NOT_IN_NETWORK' });
    assert.throws(() => sw.setLocation('lab', '52:54:00:00:zz:01', 'l1'), { code: 'ERR_MAC_ADDRESS' });
    assert.throws(() => sw.setLocation('lab', '01:00:5e:00:00:01', 'l1'), { code: 'ERR_MAC_ADDRESS' });
    assert.equal(sw.fdb().length, 0);
  });

  test('installs toward a trunk port on the VLAN of the network, tagged on egress', () => {
    const { sw, add, rx, ports } = rig({ vm1: undefined });
    add('t1', { trunk: { vlans: { 7: 'lab' } }, link: 'link' });
    sw.setLocation('lab', TEXT(9), 't1');
    rx('vm1', eth(MAC(9), MAC(1)));
    const out = ports.t1?.take() ?? [];
    assert.equal(out.length, 1);
    assert.equal(out[0]?.slice(24, 32), '81000007', 'tagged with VLAN 7');
  });

  test('keeps every port learned count and every installed location right through random operations (seeded)', async () => {
    const { sw, rx, clock, sps, add, events } = rig();
    const rand = prng(14);
    const int = (n: number) => Math.floor(rand() * n);
    const names = ['vm1', 'vm2', 'l1', 'l2'];
    /** The model: MAC number -> port of its installed location. */
    const pinned = new Map<number, string>();
    /** What the MAC events said: MAC -> local port. */
    const known = new Map<string, string>();
    for (let op = 0; op < 3000; op++) {
      const mac = 1 + int(12);
      const port = names[int(4)] as string;
      const r = rand();
      if (r < 0.5) {
        rx(port, eth(BCAST, MAC(mac)));
        // A local port takes over a location toward another port; one toward itself stays installed.
        if (sps[port]?.local && pinned.get(mac) !== port) pinned.delete(mac);
      } else if (r < 0.75) {
        sw.setLocation('lab', TEXT(mac), port);
        pinned.set(mac, port);
      } else if (r < 0.85) {
        sw.setLocation('lab', TEXT(mac), undefined);
        pinned.delete(mac);
      } else if (r < 0.92) {
        clock.now += int(400_000);
        sw.sweep();
      } else if (r < 0.97) {
        sw.portState(sps[port] as SwitchPort, 'down');
        sw.portState(sps[port] as SwitchPort, 'up');
      } else {
        await sw.removePort(port);
        add(port, { network: 'lab', link: port.startsWith('l') ? 'link' : undefined });
        for (const [m, p] of pinned) if (p === port) pinned.delete(m);
      }
      await turn();
      // The events, replayed, give what localMacs() lists.
      for (const e of events.splice(0)) {
        if (e.type === 'forgotten' || !e.local) known.delete(e.mac);
        else known.set(e.mac, e.port);
      }
      const local = new Map(sw.localMacs().map((e) => [e.mac, e.port]));
      assert.deepEqual(new Map([...known].sort()), new Map([...local].sort()), `op ${op}: events against localMacs()`);
      const rows = sw.fdb('lab');
      for (const [m, p] of pinned) assert.equal(rows.find((e) => e.mac === TEXT(m))?.port, p, `op ${op}: ${TEXT(m)}`);
      for (const name of names) {
        const learned = rows.filter(
          (e) => e.port === name && pinned.get(Number.parseInt(e.mac.slice(-2), 16)) !== name,
        );
        assert.equal(sps[name]?.learned, learned.length, `op ${op}: learned count of ${name}`);
      }
    }
  });

  test('lists the MACs of local ports, learned or installed, and none behind links', () => {
    const { sw, rx } = rig();
    rx('vm1', eth(BCAST, MAC(1)));
    rx('l1', eth(BCAST, MAC(5)));
    sw.setLocation('lab', TEXT(9), 'l2');
    sw.setLocation('lab', TEXT(2), 'vm2');
    assert.deepEqual(
      sw.localMacs().sort((a, b) => a.mac.localeCompare(b.mac)),
      [
        { network: 'lab', mac: TEXT(1), port: 'vm1' },
        { network: 'lab', mac: TEXT(2), port: 'vm2' },
      ],
    );
  });
});
