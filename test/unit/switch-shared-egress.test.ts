/**
 * One scheduled egress shared by several switch ports (an overlay link's
 * per-network ports, Switch.shareEgress): frames to any of them queue by
 * (source, class) with the member's tag, leave through one shaper, and are
 * counted on the member they were for.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { silentLogger } from '../../src/log.js';
import { WriteResult } from '../../src/net/port.js';
import { QosEgress } from '../../src/net/switch/qos-egress.js';
import { Switch } from '../../src/net/switch/switch.js';
import { CLASS_BEST_EFFORT } from '../../src/qos/classes.js';
import { MetaPort } from '../helpers/meta-port.js';

const MAC = (n: number) => `5254000000${n.toString(16).padStart(2, '0')}`;
function frame(dst: number, src: number, n = 200): Buffer {
  const b = Buffer.alloc(n, 0x77);
  Buffer.from(`${MAC(dst)}${MAC(src)}88b5`, 'hex').copy(b, 0);
  return b;
}

function rig(rate = 1e9) {
  const clock = { now: 1_000_000 };
  const sw = new Switch({ logger: silentLogger(), clock: () => clock.now });
  const ports: Record<string, MetaPort> = {};
  const add = (name: string, network: string) =>
    sw.addPort(name, { network }, (sink) => {
      ports[name] = new MetaPort(name, false, sink);
      return ports[name];
    });
  for (const [vni, net] of [
    [1, 'lab'],
    [2, 'dmz'],
  ] as const) {
    sw.addNetwork({ name: net, vni, mtu: 1500 });
    add(`up/${net}`, net); // the link's port of this network
    add(`vm/${net}`, net);
  }
  const p = (name: string) => ports[name] as MetaPort;
  // The far side's MACs (9 on lab, 10 on dmz) are learned behind the link ports.
  p('up/lab').sink(frame(0xff, 9), 0, 60);
  p('up/dmz').sink(frame(0xff, 10), 0, 60);
  for (const n of Object.keys(ports)) p(n).got.length = 0;
  /** What the shared egress's target received: the tag (VNI) and source port id of each frame. */
  const sent: { tag: number; source: number; len: number }[] = [];
  const egress = new QosEgress(
    {
      write: (_b, _o, len, tag, source) => {
        sent.push({ tag, source, len });
        return WriteResult.OK;
      },
      queued: 0,
      after: (r, b, o, l, tag) => sw.countSent(sw.port(tag === 1 ? 'up/lab' : 'up/dmz'), r, b, o, l),
    },
    { rate, clock: () => clock.now },
  );
  sw.shareEgress('up/lab', egress, 1);
  sw.shareEgress('up/dmz', egress, 2);
  return { sw, p, egress, sent };
}

describe('a scheduled egress shared by several ports', () => {
  test('frames to either member queue in one egress with their tag, and are counted on their member', async () => {
    const { sw, p, egress, sent } = rig();
    p('vm/lab').sink(frame(9, 1), 0, 200);
    p('vm/dmz').sink(frame(10, 2), 0, 300);
    p('vm/dmz').sink(frame(10, 2), 0, 300);
    assert.equal(sent.length, 0, 'frames wait for the drain');
    assert.equal(p('up/lab').got.length, 0, 'nothing is written to the member port itself');
    await tick();
    const lab = sw.port('vm/lab').id;
    const dmz = sw.port('vm/dmz').id;
    assert.deepEqual(sent, [
      { tag: 1, source: lab, len: 200 },
      { tag: 2, source: dmz, len: 300 },
      { tag: 2, source: dmz, len: 300 },
    ]);
    assert.equal(sw.port('up/lab').counterSnapshot().tx_frames, 1);
    assert.equal(sw.port('up/dmz').counterSnapshot().tx_bytes, 600);
    assert.deepEqual(
      egress
        .flows()
        .map((f) => [f.source, f.class, f.frames])
        .sort(),
      [
        [lab, CLASS_BEST_EFFORT, 1],
        [dmz, CLASS_BEST_EFFORT, 2],
      ].sort(),
    );
  });

  test("a member's own policy without a capacity keeps it in the shared egress; removing one member leaves the other's", async () => {
    const { sw, p, egress, sent } = rig();
    sw.setPortQos('up/lab', { weight: 3 });
    assert.equal(sw.port('up/lab').egress, egress);
    await sw.removePort('up/dmz');
    p('vm/lab').sink(frame(9, 1), 0, 200);
    await tick();
    assert.equal(sent.length, 1, 'the shared egress is still open');
    sw.shareEgress('up/lab', undefined);
    assert.equal(sw.port('up/lab').egress, undefined);
    p('vm/lab').sink(frame(9, 1), 0, 200);
    assert.equal(p('up/lab').got.length, 1, 'out of the shared egress: written at once');
    egress.close();
  });

  test('sources on different networks share it by their weights, under one shaper', async () => {
    const { sw, p, sent, egress } = rig(1e6);
    sw.setPortQos('vm/lab', { weight: 5 });
    for (let i = 0; i < 100; i++) {
      p('vm/lab').sink(frame(9, 1, 1000), 0, 1000);
      p('vm/dmz').sink(frame(10, 2, 1000), 0, 1000);
    }
    await tick();
    // The virtual clock stands still: only the shaper's burst (64 KiB) left, shared 5:1 by DWRR.
    const bytes = sent.reduce((a, f) => a + f.len, 0);
    assert.ok(bytes >= 64 * 1024 && bytes < 64 * 1024 + 1000, `${bytes} bytes left`);
    const lab = sent.filter((f) => f.tag === 1).length;
    const dmz = sent.filter((f) => f.tag === 2).length;
    // 5:1 within one DWRR round (16 frames of lab's, 3 of dmz's) over these ~66 frames.
    assert.ok(lab / dmz > 4 && lab / dmz < 7, `lab ${lab} : dmz ${dmz}`);
    egress.close();
  });
});
