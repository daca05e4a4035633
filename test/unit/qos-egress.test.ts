import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WriteResult } from '../../src/net/port.js';
import { FrameRing } from '../../src/net/switch/frame-ring.js';
import { QosEgress } from '../../src/net/switch/qos-egress.js';
import { CLASS_BULK, CLASS_LATENCY } from '../../src/qos/classes.js';
import { prng } from '../helpers/prng.js';

/** A frame of `len` bytes whose first byte is `tag` and the rest a pattern of `seq`. */
function frame(tag: number, seq: number, len = 100): Buffer {
  const b = Buffer.alloc(len, seq & 0xff);
  b[0] = tag;
  return b;
}

describe('FrameRing', () => {
  it('keeps frames intact and in order through a seeded random mix of pushes and shifts', () => {
    const rnd = prng(11);
    const ring = new FrameRing(32, 20_000);
    const model: Buffer[] = [];
    let seq = 0;
    let refused = 0;
    for (let step = 0; step < 50_000; step++) {
      if (rnd() < 0.55) {
        const len = 1 + Math.floor(rnd() * 3000);
        const f = frame(seq & 0xff, seq, len);
        seq++;
        if (ring.push(f, 0, len)) model.push(f);
        else refused++;
      } else if (model.length > 0) {
        const want = model.shift() as Buffer;
        assert.equal(ring.headLen, want.length);
        assert.ok(
          ring.buf.subarray(ring.headOff, ring.headOff + ring.headLen).equals(want),
          `frame mismatch at step ${step}`,
        );
        ring.shift();
      }
      assert.equal(ring.length, model.length);
    }
    assert.ok(refused > 0, 'the run filled the ring at times');
  });

  it('refuses a frame when the ring holds its most frames, and takes one again after a shift', () => {
    const ring = new FrameRing(2, 1000);
    assert.ok(ring.push(frame(1, 1), 0, 100));
    assert.ok(ring.push(frame(2, 2), 0, 100));
    assert.equal(ring.push(frame(3, 3), 0, 100), false);
    ring.shift();
    assert.ok(ring.push(frame(3, 3), 0, 100));
    assert.equal(ring.buf[ring.headOff], 2);
  });
});

describe('QosEgress', () => {
  it('sends a latency frame queued behind a bulk backlog first, and every frame in the end', async () => {
    const sent: number[] = [];
    let done: () => void = () => {};
    const finished = new Promise<void>((r) => {
      done = r;
    });
    const target = {
      queued: 0,
      write: (b: Buffer) => {
        sent.push(b[0] as number);
        return WriteResult.OK;
      },
      after: () => {
        if (sent.length === 41) done();
      },
    };
    const eg = new QosEgress(target, { rate: 1_000_000, burst: 16 * 1024 });
    for (let i = 0; i < 40; i++) assert.ok(eg.enqueue(1, CLASS_BULK, frame(1, i, 1000), 0, 1000));
    assert.ok(eg.enqueue(2, CLASS_LATENCY, frame(2, 0, 100), 0, 100));
    await finished;
    assert.equal(sent[0], 2, 'the latency frame went first');
    const flows = eg.flows();
    assert.deepEqual(
      flows.map((f) => [f.source, f.class, f.frames, f.drops]),
      [
        [1, CLASS_BULK, 40, 0],
        [2, CLASS_LATENCY, 1, 0],
      ],
    );
    eg.close();
  });

  it('drops and counts frames beyond a flow queue bound', () => {
    const target = { queued: 0, write: () => WriteResult.OK, after: () => {} };
    const eg = new QosEgress(target, { rate: 1000, queueFrames: 4 });
    let ok = 0;
    for (let i = 0; i < 10; i++) if (eg.enqueue(3, CLASS_BULK, frame(3, i), 0, 100)) ok++;
    assert.equal(ok, 4);
    assert.equal(eg.flows()[0]?.drops, 6);
    eg.close();
    assert.equal(eg.enqueue(3, CLASS_BULK, frame(3, 0), 0, 100), false, 'closed: refuses');
  });
});
