/**
 * Links made by the fabric, through the daemon's overlay service on
 * loopback (plain TCP): six hosts, the hub `h` and another relaying host
 * `r` (only the hub relays in the fabric), two more reachable hosts `a` and
 * `b`, and two hosts `d1` and `d2` that only dial out, all with a port on
 * network `lab`, each given its plan from src/cluster/topology.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type AliveRecord, type LinkPlan, type MemberRecord, planLinks } from '../../src/cluster/topology.js';
import { linkSchema, overlaySchema } from '../../src/config/overlay-schema.js';
import { parseWith } from '../../src/config/parse.js';
import { OverlayService } from '../../src/daemon/overlay.js';
import { silentLogger } from '../../src/log.js';
import { Switch } from '../../src/net/switch/switch.js';
import { eth, MemPort, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

const BCAST = 'ff:ff:ff:ff:ff:ff';

interface FabricHost {
  id: string;
  svc: OverlayService;
  port: MemPort;
  member: MemberRecord;
  /** This host's MAC on `lab`. */
  mac: string;
}

async function fabricHost(id: string, n: number, o: { relay?: boolean; listen: boolean }): Promise<FabricHost> {
  const logger = silentLogger();
  const sw = new Switch({ logger });
  sw.addNetwork({ name: 'lab', vni: 100, mtu: 9000 });
  let port: MemPort | undefined;
  sw.addPort('vm', { network: 'lab' }, (sink) => {
    port = new MemPort('vm', sink);
    return port;
  });
  const config = parseWith(
    overlaySchema,
    {
      plain: true,
      relay: o.relay ?? false,
      listen: o.listen ? 'tcp:127.0.0.1:0' : undefined,
      keepalive_ms: 200,
      reconnect: { min_ms: 50, max_ms: 400 },
      direct_threshold_bps: 0,
    },
    'test overlay',
  );
  const svc = new OverlayService({ logger, switch: sw, hostId: id, config });
  await svc.start();
  const overlay = o.listen ? (svc.listening() as string) : null;
  return {
    id,
    svc,
    port: port as MemPort,
    member: { id, overlay, reachable: o.listen, relay: o.relay ?? false },
    mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
  };
}

/** A frame from host `h`: sequence number `i` in the payload, `mark` in the byte after it. */
function frame(h: FabricHost, i: number, mark = 0, dst = BCAST): Buffer {
  const f = eth(dst, h.mac, 60);
  f.writeUInt32BE(i, 14);
  f[18] = mark;
  return f;
}

const srcOf = (f: Buffer) => f.subarray(6, 12).toString('hex');
const macHex = (mac: string) => mac.replaceAll(':', '');

describe('links made by the fabric', { timeout: 120_000 }, () => {
  let hosts: FabricHost[] = [];
  let x: RigHost | undefined;
  const byId = (id: string) => hosts.find((h) => h.id === id) as FabricHost;
  const members = () => hosts.map((h) => h.member);
  let plans = new Map<string, LinkPlan>();

  /**
   * Plans every host from the same records, `alive` being up, and applies
   * each plan; resolves once applied.
   */
  async function apply(alive: string[]): Promise<void> {
    const records = new Map<string, AliveRecord>(alive.map((id) => [id, { networks: ['lab'] }]));
    plans = new Map(hosts.map((h) => [h.id, planLinks(h.id, members(), records)]));
    await Promise.all(
      hosts.map(async (h) => assert.deepEqual(await h.svc.setFabricLinks(plans.get(h.id) as LinkPlan), [])),
    );
  }

  const upPeers = (h: FabricHost) =>
    h.svc
      .links()
      .filter((l) => l.state === 'up')
      .map((l) => l.peer)
      .sort();

  /** The up peers of `h` but `x`, which a hand link reaches. */
  const fabricPeers = (h: FabricHost) => upPeers(h).filter((p) => p !== 'x');

  before(async () => {
    hosts = await Promise.all([
      fabricHost('h', 1, { relay: true, listen: true }),
      fabricHost('a', 2, { listen: true }),
      fabricHost('b', 3, { listen: true }),
      fabricHost('d1', 4, { listen: false }),
      fabricHost('d2', 5, { listen: false }),
      fabricHost('r', 6, { relay: true, listen: true }),
    ]);
    await apply(['h', 'a', 'b', 'd1', 'd2', 'r']);
    await until(
      'every planned link up',
      () => hosts.every((h) => JSON.stringify(upPeers(h)) === JSON.stringify(plans.get(h.id)?.peers)),
      30_000,
    );
  });

  after(async () => {
    await Promise.all([...hosts.map((h) => h.svc.stop()), x?.stop()]);
  });

  test('the plan gives a mesh between reachable hosts, dial-out hosts dial them and attach to the hub', () => {
    assert.equal(plans.get('d1')?.hub, 'h');
    assert.deepEqual(plans.get('h')?.relayFor, ['d1', 'd2']);
    // The hub is a mesh peer too: it relays only between the dial-out hosts.
    assert.deepEqual(plans.get('h')?.peers, ['a', 'b', 'd1', 'd2', 'r']);
    assert.deepEqual(plans.get('d1')?.peers, ['a', 'b', 'h', 'r']);
    assert.deepEqual(plans.get('r')?.relayFor, []);
    // The dialled links are the fabric's, named after their peer; the dialled side's are accepted ones.
    for (const l of byId('d1').svc.links()) assert.equal(l.source, 'cluster');
    assert.deepEqual(
      byId('a')
        .svc.links()
        .map((l) => `${l.name}:${l.source}`)
        .sort(),
      ['b:cluster', 'd1:peer', 'd2:peer', 'h:cluster', 'r:cluster'],
    );
    assert.throws(() => byId('a').svc.checkDeletable('b'), { code: 'ERR_LINK_NOT_DELETABLE' });
  });

  /**
   * Every host sends `n` broadcasts; every other host must get each of them
   * exactly once, in order, and none of its own may come back.
   */
  async function broadcastOnce(n: number): Promise<void> {
    for (const s of hosts) {
      for (let i = 0; i < n; i++) s.port.rx(frame(s, i));
      s.port.rx(frame(s, n, 0xee));
    }
    const gotMark = (h: FabricHost, s: FabricHost, mark: number) =>
      h.port.got.some((f) => srcOf(f) === macHex(s.mac) && f[18] === mark);
    await until('every host got the marker of every other host', () =>
      hosts.every((h) => hosts.every((s) => s === h || gotMark(h, s, 0xee))),
    );
    // The relaying hosts, the only ones that may forward between links, send a marker in
    // turn once they switched everything before it: when the last is everywhere, no relayed
    // copy is in flight (a copy one relays to the other goes before that one's marker).
    const relays = [byId('h'), byId('r'), byId('h')];
    for (const [k, r] of relays.entries()) {
      r.port.rx(frame(r, n + 1 + k, 0xf0 + k));
      await until(`marker ${k} of ${r.id} everywhere`, () => hosts.every((h) => h === r || gotMark(h, r, 0xf0 + k)));
    }
    for (const h of hosts) {
      for (const s of hosts) {
        const from = h.port.got.filter((f) => srcOf(f) === macHex(s.mac) && f[18] === 0);
        if (s === h) {
          assert.equal(from.length, 0, `host ${h.id} got its own frames back`);
          continue;
        }
        assert.deepEqual(
          from.map((f) => f.readUInt32BE(14)),
          Array.from({ length: n }, (_, i) => i),
          `host ${h.id} from ${s.id}: each frame once, in order`,
        );
      }
    }
    for (const h of hosts) h.port.got.splice(0);
  }

  test('a broadcast from every host reaches every other host exactly once, with two relaying hosts', async () => {
    await broadcastOnce(200);
  });

  test('frames between the two dial-out hosts go through the hub, and only there', async () => {
    const d1 = byId('d1');
    const d2 = byId('d2');
    assert.equal(d1.svc.linkToward('d2'), 'h');
    assert.equal(d1.svc.portToward('d2', 'lab'), 'link/h/lab');
    assert.equal(d1.svc.linkToward('a'), 'a');
    assert.equal(d1.svc.portToward('a', 'nope'), undefined);
    assert.equal(byId('a').svc.linkToward('d1'), 'd1');
    const relayedBefore = byId('h').svc.link('d1').relayed_to['d2'] ?? 0;
    // d2's MAC is known everywhere since its broadcasts: these are known unicast to it.
    for (let i = 0; i < 50; i++) d1.port.rx(frame(d1, i, 0, d2.mac));
    await until('d2 got the 50 frames', () => d2.port.got.length >= 50);
    assert.equal(d2.port.got.length, 50);
    assert.ok((byId('h').svc.link('d1').relayed_to['d2'] ?? 0) > relayedBefore, 'the hub relayed them');
    for (const id of ['a', 'b', 'h', 'r']) assert.equal(byId(id).port.got.length, 0, `host ${id} saw none`);
    d2.port.got.splice(0);
  });

  test('a host leaving the plan has its fabric links removed while hand links stay', async () => {
    x = await rigHost({ id: 'x', networks: [{ name: 'lab', vni: 100 }] });
    const d1 = byId('d1');
    d1.svc.addLink(
      parseWith(linkSchema, { name: 'hand-x', connect: `tcp:127.0.0.1:${x.port}` }, 'test link'),
      'api',
      false,
    );
    await until('the hand link up', () => d1.svc.link('hand-x').state === 'up');
    const changed: string[] = [];
    const stop = byId('a').svc.onPortsChanged((host) => changed.push(host));
    await apply(['h', 'a', 'd1', 'd2', 'r']);
    await until('no host has a link to b', () =>
      hosts.every((h) => h.id === 'b' || !h.svc.links().some((l) => l.peer === 'b' || l.name === 'b')),
    );
    await until('a was told its ports toward b went', () => changed.includes('b'));
    assert.equal(byId('a').svc.portToward('b', 'lab'), undefined);
    stop();
    // b, which sees itself out of the fabric, closed its own fabric links too.
    await until('b has no link', () => byId('b').svc.links().length === 0);
    assert.equal(d1.svc.link('hand-x').state, 'up');
    assert.equal(d1.svc.link('hand-x').source, 'api');
    assert.deepEqual(upPeers(d1), ['a', 'h', 'r', 'x']);
    // b comes back: its links are made again.
    await apply(['h', 'a', 'b', 'd1', 'd2', 'r']);
    await until('b linked again', () => upPeers(byId('b')).join() === 'a,d1,d2,h,r');
    assert.equal(d1.svc.link('hand-x').state, 'up');
  });

  test('a relaying host that stops being reachable turns its links around and goes through the hub', async () => {
    const r = byId('r');
    r.member.reachable = false;
    await apply(['h', 'a', 'b', 'd1', 'd2', 'r']);
    assert.deepEqual(plans.get('r')?.peers, ['a', 'b', 'h']);
    assert.deepEqual(plans.get('h')?.relayFor, ['d1', 'd2', 'r']);
    // b dialled r; now r dials b, once b's link (which has r's name on r's side) is gone.
    await until('every planned link up, dialled the other way', () =>
      hosts.every((h) => fabricPeers(h).join() === plans.get(h.id)?.peers.join()),
    );
    assert.equal(r.svc.link('b').source, 'cluster');
    assert.equal(byId('b').svc.link('r').source, 'peer');
    assert.equal(r.svc.linkToward('d1'), 'h');
    await broadcastOnce(100);
    r.member.reachable = true;
    await apply(['h', 'a', 'b', 'd1', 'd2', 'r']);
    await until('every planned link up again', () =>
      hosts.every((h) => fabricPeers(h).join() === plans.get(h.id)?.peers.join()),
    );
    await broadcastOnce(100);
  });

  test('a hand link that holds the name of a fabric link keeps it, and the plan says so', async () => {
    const d2 = byId('d2');
    const alive = new Map<string, AliveRecord>(hosts.map((h) => [h.id, { networks: ['lab'] }]));
    alive.set('q', { networks: ['lab'] });
    const q = { id: 'q', overlay: `tcp:127.0.0.1:${x?.port}`, reachable: true, relay: false };
    // A hand link named "q" to host x, then a fabric host q.
    d2.svc.addLink(
      parseWith(linkSchema, { name: 'q', connect: `tcp:127.0.0.1:${x?.port}` }, 'test link'),
      'api',
      false,
    );
    await until('the hand link up', () => d2.svc.link('q').state === 'up');
    const conflicts = await d2.svc.setFabricLinks(planLinks('d2', [...members(), q], alive));
    assert.deepEqual(
      conflicts.map((c) => c.host),
      ['q'],
    );
    assert.match(conflicts[0]?.reason ?? '', /the api link "q" holds the name/);
    assert.equal(d2.svc.link('q').source, 'api');
  });
});
