/**
 * Links between hosts with thousands of networks, over real TCP sockets on
 * loopback: the hello stays small, the network lists follow it in parts
 * under the record limit, both ends agree on what they share, frames flow,
 * and networks added or deleted while the link is up are synced by changes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

/** A 32-character network name (the longest a name may be), distinct per VNI and host. */
const netName = (host: string, vni: number) => `${host}-net-${String(vni).padStart(8, '0')}`.padEnd(32, 'x');

const COUNT = 10_000;
/** a has VNIs 1..10000, b has 5001..15000: they share 5001..10000. */
const A_FIRST = 1;
const B_FIRST = 5001;
const SHARED = { first: B_FIRST, last: A_FIRST + COUNT - 1 };
const PROBE = 7777;

function nets(host: string, first: number): { name: string; vni: number }[] {
  return Array.from({ length: COUNT }, (_, i) => ({ name: netName(host, first + i), vni: first + i }));
}

const sharedNames = (host: string) =>
  Array.from({ length: SHARED.last - SHARED.first + 1 }, (_, i) => netName(host, SHARED.first + i)).sort();

describe('a link between two hosts with 10,000 networks each', { timeout: 120_000 }, () => {
  let a: RigHost;
  let b: RigHost;

  before(async () => {
    a = await rigHost({ id: 'a', listen: false, networks: nets('a', A_FIRST), localPorts: [netName('a', PROBE)] });
    b = await rigHost({ id: 'b', networks: nets('b', B_FIRST), localPorts: [netName('b', PROBE)] });
    a.overlay.add({ name: 'to-b', connect: { host: '127.0.0.1', port: b.port } }, 'config');
    await until('link up on a', () => a.overlay.view('to-b').state === 'up', 60_000);
    await until('link up on b', () => b.overlay.list().some((l) => l.state === 'up'), 60_000);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('comes up, and both ends carry exactly the 5,000 networks they share', () => {
    const av = a.overlay.view('to-b');
    const bv = b.overlay.view('a');
    assert.deepEqual([...av.networks].sort(), sharedNames('a'));
    assert.deepEqual([...bv.networks].sort(), sharedNames('b'));
    assert.equal(av.connects, 1, 'the link came up at the first attempt, without flapping');
    assert.equal(av.last_error, null);
    // The reason stays one short line whatever the count.
    assert.match(av.reason, /carrying 5000 networks \(/);
    assert.ok(av.reason.length < 200, av.reason);
  });

  test('frames flow on a shared network, both ways', async () => {
    const pa = a.ports[netName('a', PROBE)];
    const pb = b.ports[netName('b', PROBE)];
    assert.ok(pa && pb);
    const f = eth('ff:ff:ff:ff:ff:ff', '52:54:00:00:0a:01');
    pa.rx(f);
    await until('broadcast at b', () => pb.got.length >= 1);
    assert.deepEqual(pb.got.shift(), f);
    const back = eth('52:54:00:00:0a:01', '52:54:00:00:0b:01');
    pb.rx(back);
    await until('unicast back at a', () => pa.got.length >= 1);
    assert.deepEqual(pa.got.shift(), back);
    assert.equal(a.overlay.view('to-b').drops.unknown_vni, 0);
  });

  test('a network added or deleted while the link is up is carried or dropped on both ends', async () => {
    // b gets VNI 42 (a has it), then loses VNI 9000.
    b.sw.addNetwork({ name: 'b-late', vni: 42, mtu: 1500 });
    b.overlay.networksChanged();
    await until('a carries vni 42', () => a.overlay.view('to-b').networks.includes(netName('a', 42)));
    await until('b carries b-late', () => b.overlay.view('a').networks.includes('b-late'));
    await b.overlay.releaseNetwork(netName('b', 9000));
    b.sw.removeNetwork(netName('b', 9000));
    b.overlay.networksChanged();
    await until('a drops vni 9000', () => !a.overlay.view('to-b').networks.includes(netName('a', 9000)));
    assert.equal(a.overlay.view('to-b').networks.length, 5000);
    assert.equal(b.overlay.view('a').networks.length, 5000);
    assert.equal(a.overlay.view('to-b').state, 'up');
    assert.equal(a.overlay.view('to-b').connects, 1);
  });
});
