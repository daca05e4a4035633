/** QoS in the switch core with in-memory ports: policing, classification into a shaped egress, teardown. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { silentLogger } from '../../src/log.js';
import { GSO_TCPV4, OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import type { FrameSink, Port, PortState } from '../../src/net/port.js';
import { WriteResult } from '../../src/net/port.js';
import { Switch } from '../../src/net/switch/switch.js';
import { CLASS_BULK, CLASS_INTERACTIVE, CLASS_LATENCY } from '../../src/qos/classes.js';

class FakePort implements Port {
  readonly kind = 'fake';
  state: PortState = 'up';
  readonly sent: Buffer[] = [];
  readonly queued = 0;
  constructor(
    readonly name: string,
    readonly sink: FrameSink,
  ) {}
  async open(): Promise<void> {}
  write(buf: Buffer, off: number, len: number): WriteResult {
    this.sent.push(Buffer.from(buf.subarray(off, off + len)));
    return WriteResult.OK;
  }
  describe(): Record<string, unknown> {
    return {};
  }
  async close(): Promise<void> {}
  async destroy(): Promise<void> {}
  rx(b: Buffer): void {
    this.sink(b, 0, b.length);
  }
}

const MAC = (n: number) => `5254000000${n.toString(16).padStart(2, '0')}`;
/** An IPv4 frame from MAC(src) to MAC(dst) with DSCP `dscp`, `n` bytes long. */
function ipv4(dst: number, src: number, dscp: number, n = 100): Buffer {
  const b = Buffer.alloc(n, 0xab);
  Buffer.from(`${MAC(dst)}${MAC(src)}0800`, 'hex').copy(b, 0);
  b[14] = 0x45;
  b[15] = dscp << 2;
  return b;
}

function rig() {
  const clock = { now: 1_000_000 };
  const sw = new Switch({ logger: silentLogger(), clock: () => clock.now });
  sw.addNetwork({ name: 'lab', vni: 1, mtu: 1500 });
  const ports: Record<string, FakePort> = {};
  for (const name of ['out', 'a', 'b', 'c']) {
    sw.addPort(name, { network: 'lab' }, (sink) => {
      ports[name] = new FakePort(name, sink);
      return ports[name];
    });
  }
  const p = (name: string) => ports[name] as FakePort;
  // Teach the switch where MAC 1 (behind "out") lives.
  p('out').rx(ipv4(9, 1, 0));
  for (const n of ['a', 'b', 'c']) p(n).sent.length = 0;
  return { sw, p, clock };
}

describe('Switch QoS', () => {
  test('polices a port to its rate and burst, counting the drops', () => {
    const { sw, p, clock } = rig();
    sw.setPortQos('a', { max: 1000, burst: 2000 });
    for (let i = 0; i < 10; i++) p('a').rx(ipv4(1, 2, 0, 500));
    assert.equal(p('out').sent.length, 4);
    assert.equal(sw.port('a').counterSnapshot().drops.police, 6);
    clock.now += 1000;
    for (let i = 0; i < 10; i++) p('a').rx(ipv4(1, 2, 0, 500));
    assert.equal(p('out').sent.length, 6, 'one second at 1000 B/s lets two more 500-byte frames through');
    sw.setPortQos('a', undefined);
    for (let i = 0; i < 10; i++) p('a').rx(ipv4(1, 2, 0, 500));
    assert.equal(p('out').sent.length, 16, 'no policy: no policing');
  });

  test('schedules frames into a shaped port by class: a marked latency frame overtakes bulk, a mark above the allowed class is clamped', async () => {
    const { sw, p } = rig();
    sw.setPortQos('out', { capacity: 125_000_000 });
    sw.setPortQos('b', { cls: CLASS_LATENCY });
    sw.setPortQos('c', { cls: CLASS_INTERACTIVE });
    for (let i = 0; i < 30; i++) p('a').rx(ipv4(1, 2, 8)); // CS1: bulk
    p('c').rx(ipv4(1, 4, 46)); // EF, but c may use interactive at most
    p('b').rx(ipv4(1, 3, 46)); // EF from a port allowed the latency class
    assert.equal(p('out').sent.length, 0, 'frames wait for the drain');
    assert.equal(sw.port('out').counterSnapshot().tx_frames, 0);
    await tick();
    const out = p('out').sent;
    assert.equal(out.length, 32);
    assert.equal(out[0]?.toString('hex', 6, 12), MAC(3), 'the latency frame went first');
    // c's EF frame was clamped to interactive: DWRR, not strict priority, so it waits for at most one bulk quantum (1600 bytes).
    const c = out.findIndex((f) => f.toString('hex', 6, 12) === MAC(4));
    assert.ok(c > 1 && c <= 17, `interactive frame sent at position ${c}`);
    assert.equal(sw.port('out').counterSnapshot().tx_frames, 32);
    const flows = sw.port('out').egress?.flows() ?? [];
    const classOf = (id: number) => flows.filter((f) => f.source === id).map((f) => f.class);
    assert.deepEqual(classOf(sw.port('a').id), [CLASS_BULK]);
    assert.deepEqual(classOf(sw.port('b').id), [CLASS_LATENCY]);
    assert.deepEqual(classOf(sw.port('c').id), [CLASS_INTERACTIVE]);
  });

  test('a port without a capacity forwards at once; removing the capacity or a source port tears its flows down', async () => {
    const { sw, p } = rig();
    sw.setPortQos('out', { capacity: 1_000_000 });
    p('a').rx(ipv4(1, 2, 0));
    await sw.removePort('a');
    assert.deepEqual(sw.port('out').egress?.flows(), []);
    sw.setPortQos('out', undefined);
    assert.equal(sw.port('out').egress, undefined);
    p('b').rx(ipv4(1, 3, 0));
    assert.equal(p('out').sent.length, 1, 'unshaped: written synchronously');
  });
  test('a shaped port that takes offloads gets a large segment cut into frames (its queues keep no metadata)', async () => {
    const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    const got: { hex: string; meta: boolean }[] = [];
    let srcSink: FrameSink = () => {};
    sw.addPort('src', { network: 'lan' }, (sink) => {
      srcSink = sink;
      return Object.assign(new FakePort('src', sink), { offloads: true });
    });
    sw.addPort('dst', { network: 'lan' }, (sink) =>
      Object.assign(new FakePort('dst', sink), {
        offloads: true,
        write: (b: Buffer, o: number, l: number, meta?: OffloadMeta) => {
          got.push({ hex: b.toString('hex', o, o + l), meta: meta !== undefined });
          return WriteResult.OK;
        },
      }),
    );
    sw.setPortQos('dst', { capacity: 125_000_000 });
    // TCP/IPv4 with 20 payload bytes, gso_size 8 (the fixture of the offload tests): three segments.
    const frame = Buffer.from(
      '52540000000252540000000108004500003c12344000400614860a0000010a0000029c401389000003e80102030450990200dead00004142434445464748494a4b4c4d4e4f5051525354',
      'hex',
    );
    const meta = Object.assign(new OffloadMeta(), {
      flags: 1,
      gsoType: GSO_TCPV4,
      gsoSize: 8,
      csumStart: 34,
      csumOffset: 16,
    });
    srcSink(frame, 0, frame.length, meta);
    await tick();
    assert.deepEqual(
      got.map((g) => [g.hex.length / 2, g.meta]),
      [
        [62, false],
        [62, false],
        [58, false],
      ],
    );
    assert.equal(sw.port('dst').counterSnapshot().offload.tx_segmented, 1);
  });
});
