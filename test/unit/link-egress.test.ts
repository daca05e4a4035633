/**
 * Link egress (net/overlay/egress.ts) against a socket double: batching
 * until switching returns, large frames written straight to the fd without a
 * copy, partial direct writes finished through the socket's queue, and the
 * byte stream always the records in order (seeded fuzz of partial writes and
 * a socket that pushes back).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { DecodeResult, HEADER_LEN, LinkDecoder } from '../../src/net/overlay/codec.js';
import { LinkEgress } from '../../src/net/overlay/egress.js';
import { WriteResult } from '../../src/net/port.js';
import type { DirectWrite } from '../../src/util/sockets.js';
import { tsoMeta } from '../helpers/meta-port.js';
import { prng } from '../helpers/prng.js';

const tick = () => new Promise((r) => setImmediate(r));

/**
 * A socket double: `wire` gets the bytes in the order the kernel would (direct
 * writes when made, socket writes when the socket writes them). With `hold`,
 * socket writes wait until release() (the kernel pushing back).
 */
function rig(opts: { take?: (want: number) => number; hold?: boolean } = {}) {
  const wire: Buffer[] = [];
  const directCalls: { b: Buffer; len: number }[] = [];
  let held: (() => void)[] = [];
  let hold = opts.hold ?? false;
  const sock = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      wire.push(Buffer.from(chunk));
      if (hold) held.push(() => cb());
      else cb();
    },
  });
  const direct: DirectWrite = (a, aOff, aLen, b, bOff, bLen) => {
    const want = aLen + bLen;
    const n = Math.min(want, opts.take ? opts.take(want) : want);
    const both = Buffer.concat([a.subarray(aOff, aOff + aLen), b.subarray(bOff, bOff + bLen)]);
    if (n > 0) wire.push(both.subarray(0, n));
    directCalls.push({ b, len: bLen });
    return n;
  };
  const egress = new LinkEgress(sock, 8 * 1024 * 1024, direct);
  const frames: { vni: number; hex: string; gso: number }[] = [];
  const decode = () => {
    frames.length = 0;
    const d = new LinkDecoder({
      frame: (vni, buf, off, len, meta) =>
        frames.push({ vni, hex: buf.toString('hex', off, off + len), gso: meta?.gsoSize ?? 0 }),
      control: () => undefined,
    });
    assert.equal(d.push(Buffer.concat(wire)), DecodeResult.OK);
    assert.equal(d.partial, false, 'the wire ends mid-record');
    return frames;
  };
  return {
    sock,
    egress,
    wire,
    directCalls,
    decode,
    setHold: (h: boolean) => {
      hold = h;
    },
    release: () => {
      const h = held;
      held = [];
      for (const f of h) f();
    },
  };
}

function frame(len: number, seed: number): Buffer {
  const f = Buffer.alloc(len);
  for (let i = 0; i < len; i++) f[i] = (seed + i * 31) & 0xff;
  return f;
}

const TSO = tsoMeta();

describe('link egress', () => {
  test('small frames switched together leave in one write when switching returns', async () => {
    const r = rig();
    for (let i = 0; i < 10; i++) r.egress.frame(1, frame(100, i), 0, 100);
    assert.equal(r.wire.length, 0);
    await tick();
    assert.equal(r.wire.length, 1);
    assert.equal(r.egress.writes, 1);
    assert.equal(r.decode().length, 10);
  });

  test('a 64 KB segment on an idle socket goes to the fd from where it lies, header and frame in one write', () => {
    const r = rig();
    const seg = frame(65_000, 3);
    const big = Buffer.concat([Buffer.alloc(100), seg]);
    assert.equal(r.egress.frame(7, big, 100, 65_000, TSO), WriteResult.OK);
    assert.equal(r.directCalls.length, 1);
    assert.equal(r.directCalls[0]?.b, big, 'the frame was copied before the write');
    assert.deepEqual(r.decode(), [{ vni: 7, hex: seg.toString('hex'), gso: 1448 }]);
  });

  test('what the kernel does not take of a direct write goes first through the socket; later frames queue behind it', async () => {
    let calls = 0;
    const r = rig({ take: () => (calls++ === 0 ? 1000 : 0), hold: true });
    const a = frame(40_000, 1);
    const b = frame(40_000, 2);
    r.egress.frame(1, a, 0, a.length);
    r.egress.frame(1, b, 0, b.length);
    r.egress.frame(1, frame(60, 3), 0, 60);
    // Only the first went direct: the rest of it sits in the socket's queue, so the others must wait behind it.
    assert.equal(r.directCalls.length, 1);
    await tick();
    r.release();
    await tick();
    r.release();
    await tick();
    assert.deepEqual(
      r.decode().map((f) => f.hex),
      [a.toString('hex'), b.toString('hex'), frame(60, 3).toString('hex')],
    );
  });

  test('never writes to the fd of a socket that was ended or destroyed (its fd number may belong to another file by then)', async () => {
    for (const stop of ['end', 'destroy'] as const) {
      const r = rig();
      r.sock.on('error', () => undefined);
      r.egress.frame(1, frame(40_000, 1), 0, 40_000);
      assert.equal(r.directCalls.length, 1);
      r.sock[stop]();
      r.egress.frame(1, frame(40_000, 2), 0, 40_000);
      r.egress.frame(1, frame(60, 3), 0, 60);
      await tick();
      assert.equal(r.directCalls.length, 1, `a direct write after ${stop}()`);
    }
  });

  test('any mix of frame sizes, partial direct writes and push-back keeps every record whole and in order (seeded fuzz)', async () => {
    const rnd = prng(2026);
    for (let round = 0; round < 20; round++) {
      const r = rig({ take: (want) => (rnd() < 0.5 ? want : Math.floor(rnd() * want)) });
      const want: string[] = [];
      for (let i = 0; i < 60; i++) {
        const len = rnd() < 0.4 ? 16_000 + Math.floor(rnd() * 50_000) : 60 + Math.floor(rnd() * 1500);
        const f = frame(len, round * 100 + i);
        assert.equal(r.egress.frame(1 + (i % 2), f, 0, len, rnd() < 0.3 ? TSO : undefined), WriteResult.OK);
        want.push(f.toString('hex'));
        if (rnd() < 0.2) r.setHold(rnd() < 0.5);
        if (rnd() < 0.3) r.release();
        if (rnd() < 0.3) await tick();
      }
      for (let i = 0; i < 50 && r.egress.queuedBytes > 0; i++) {
        r.setHold(false);
        r.release();
        await tick();
      }
      assert.equal(r.egress.queuedBytes, 0);
      assert.deepEqual(
        r.decode().map((f) => f.hex),
        want,
      );
      assert.equal(r.wire.reduce((t, b) => t + b.length, 0) > want.length * HEADER_LEN, true);
    }
  });
});
