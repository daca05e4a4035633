import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_FRAME_LEN } from '../../src/net/port.js';
import { Deframer, PushResult } from '../../src/net/ports/deframer.js';
import { prng } from '../helpers/prng.js';

/** A deframer that records copies of the frames it delivers. */
function recorder(max = MAX_FRAME_LEN) {
  const frames: string[] = [];
  const d = new Deframer((buf, off, len) => frames.push(buf.toString('hex', off, off + len)), max);
  return { d, frames };
}

function encode(frames: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(f.length);
    parts.push(h, f);
  }
  return Buffer.concat(parts);
}

// An ARP request from 52:54:00:00:00:01 (42 bytes) and a bare 14-byte header.
const ARP = 'ffffffffffff525400000001080600010800060400015254000000010a000001000000000000' + '0a000002';
const HDR = '525400000002525400000001' + '88b5';
const STREAM = `0000002a${ARP}0000000e${HDR}`;

describe('Deframer', () => {
  test('delivers byte-exact frames from a stream holding several frames in one chunk', () => {
    const { d, frames } = recorder();
    assert.equal(d.push(Buffer.from(STREAM, 'hex')), PushResult.OK);
    assert.deepEqual(frames, [ARP, HDR]);
    assert.equal(d.partial, false);
  });

  test('delivers frames in place as offsets into the chunk read', () => {
    const chunk = Buffer.from(STREAM, 'hex');
    const seen: [Buffer, number, number][] = [];
    const d = new Deframer((buf, off, len) => seen.push([buf, off, len]), MAX_FRAME_LEN);
    d.push(chunk);
    assert.deepEqual(
      seen.map(([b, o, l]) => [b === chunk, o, l]),
      [
        [true, 4, 42],
        [true, 50, 14],
      ],
    );
  });

  test('reassembles frames split at every possible byte boundary', () => {
    const whole = Buffer.from(STREAM, 'hex');
    for (let cut = 0; cut <= whole.length; cut++) {
      const { d, frames } = recorder();
      d.push(whole.subarray(0, cut));
      d.push(whole.subarray(cut));
      assert.deepEqual(frames, [ARP, HDR], `split at byte ${cut}`);
    }
  });

  test('reassembles a stream fed one byte at a time', () => {
    const whole = Buffer.from(STREAM, 'hex');
    const { d, frames } = recorder();
    for (let i = 0; i < whole.length; i++) {
      // Between frames (before byte 0 and byte 46) nothing is held.
      assert.equal(d.partial, i !== 0 && i !== 46);
      d.push(whole.subarray(i, i + 1));
    }
    assert.deepEqual(frames, [ARP, HDR]);
  });

  test('passes frames shorter than an Ethernet header and empty frames to the sink', () => {
    const { d, frames } = recorder();
    d.push(Buffer.from('00000003aabbcc00000000', 'hex'));
    assert.deepEqual(frames, ['aabbcc', '']);
  });

  test('accepts a frame of exactly the maximum length and refuses one byte more', () => {
    const max = 100;
    const ok = recorder(max);
    assert.equal(ok.d.push(encode([Buffer.alloc(max, 7)])), PushResult.OK);
    assert.equal(ok.frames.length, 1);
    const bad = recorder(max);
    assert.equal(bad.d.push(Buffer.from('00000065', 'hex')), PushResult.OVERSIZED);
    assert.equal(bad.d.badLength, 101);
  });

  test('reports an oversized length prefix split across chunks and refuses further input', () => {
    const { d, frames } = recorder();
    assert.equal(d.push(Buffer.from(`0000000e${HDR}ff`, 'hex')), PushResult.OK);
    assert.equal(d.push(Buffer.from('ffffff', 'hex')), PushResult.OVERSIZED);
    assert.equal(d.badLength, 0xffffffff);
    assert.equal(d.push(Buffer.from(`0000000e${HDR}`, 'hex')), PushResult.OVERSIZED);
    assert.deepEqual(frames, [HDR]);
  });

  test('reports QEMU NET_BUFSIZE + 1 as oversized', () => {
    const { d } = recorder();
    const h = Buffer.alloc(4);
    h.writeUInt32BE(4096 + 65536 + 1);
    assert.equal(d.push(h), PushResult.OVERSIZED);
  });

  test('reports a truncated frame and a truncated prefix as partial with their sizes', () => {
    const { d, frames } = recorder();
    d.push(Buffer.from(`0000002a${ARP.slice(0, 20)}`, 'hex'));
    assert.equal(d.partial, true);
    assert.equal(d.partialLength, 42);
    assert.equal(d.partialBytes, 4 + 10);
    assert.deepEqual(frames, []);
    const p = recorder();
    p.d.push(Buffer.from('0000', 'hex'));
    assert.equal(p.d.partial, true);
    assert.equal(p.d.partialLength, -1);
    assert.equal(p.d.partialBytes, 2);
  });

  test('reset() forgets a partial frame and a broken stream', () => {
    const { d, frames } = recorder();
    d.push(Buffer.from('0000002aff', 'hex'));
    d.reset();
    assert.equal(d.partial, false);
    d.push(Buffer.from(`0000000e${HDR}`, 'hex'));
    d.push(Buffer.from('ffffffff', 'hex'));
    d.reset();
    assert.equal(d.push(Buffer.from(`0000000e${HDR}`, 'hex')), PushResult.OK);
    assert.deepEqual(frames, [HDR, HDR]);
  });

  test('reassembles a large frame split over many chunks', () => {
    const big = Buffer.alloc(MAX_FRAME_LEN);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const wire = encode([big, Buffer.from(HDR, 'hex')]);
    const { d, frames } = recorder();
    for (let p = 0; p < wire.length; p += 1000) d.push(wire.subarray(p, p + 1000));
    assert.equal(frames.length, 2);
    assert.equal(frames[0], big.toString('hex'));
    assert.equal(frames[1], HDR);
  });

  test('fuzz: never throws on random bytes, and reassembles random valid streams exactly', () => {
    const rand = prng(0x5eed);
    const int = (n: number) => Math.floor(rand() * n);
    for (let iter = 0; iter < 2000; iter++) {
      const max = 1 + int(3000);
      if (iter % 2 === 0) {
        // Random garbage in random chunks: no throw, a consistent result.
        const junk = Buffer.alloc(int(200));
        for (let i = 0; i < junk.length; i++) junk[i] = int(256);
        const d = new Deframer(() => {}, max);
        let p = 0;
        while (p < junk.length) {
          const n = 1 + int(40);
          const r = d.push(junk.subarray(p, p + n));
          assert.ok(r === PushResult.OK || r === PushResult.OVERSIZED);
          p += n;
        }
        continue;
      }
      const frames: Buffer[] = [];
      for (let k = int(8); k > 0; k--) {
        const f = Buffer.alloc(int(max + 1));
        for (let i = 0; i < f.length; i++) f[i] = int(256);
        frames.push(f);
      }
      const wire = encode(frames);
      const got: string[] = [];
      const d = new Deframer((b, o, l) => got.push(b.toString('hex', o, o + l)), max);
      for (let p = 0; p < wire.length; ) {
        const n = 1 + int(rand() < 0.5 ? 8 : 4000);
        assert.equal(d.push(wire.subarray(p, p + n)), PushResult.OK);
        p += n;
      }
      assert.deepEqual(
        got,
        frames.map((f) => f.toString('hex')),
        `iteration ${iter}`,
      );
      assert.equal(d.partial, false);
    }
  });

  test('batch mode: the frames of each chunk come in one call, prefixes in place, in stream order with the reassembled ones (seeded)', () => {
    const rand = prng(0xba7c4);
    const int = (n: number) => Math.floor(rand() * n);
    for (let iter = 0; iter < 1000; iter++) {
      const max = 1 + int(3000);
      const frames: Buffer[] = [];
      for (let k = int(40); k > 0; k--) {
        const f = Buffer.alloc(int(max + 1));
        for (let i = 0; i < f.length; i++) f[i] = int(256);
        frames.push(f);
      }
      // One more past a batch's limit now and then: 1100 small frames.
      if (iter % 100 === 7) for (let k = 0; k < 1100; k++) frames.push(Buffer.from([k & 0xff, k >> 8]));
      const wire = encode(frames);
      const got: string[] = [];
      let batches = 0;
      const d = new Deframer(
        (b, o, l) => got.push(b.toString('hex', o, o + l)),
        Math.max(max, 2),
        (b, fr, n) => {
          batches++;
          assert.ok(n > 0 && n <= 1024, `a batch of ${n} frames`);
          for (let k = 0; k < n; k++) {
            const o = fr[2 * k] as number;
            const l = fr[2 * k + 1] as number;
            assert.equal(b.readUInt32BE(o - 4), l, 'the length prefix is in place before the frame');
            got.push(b.toString('hex', o, o + l));
          }
        },
      );
      for (let p = 0; p < wire.length; ) {
        const n = 1 + int(rand() < 0.3 ? 8 : 20_000);
        assert.equal(d.push(wire.subarray(p, p + n)), PushResult.OK);
        p += n;
      }
      assert.deepEqual(
        got,
        frames.map((f) => f.toString('hex')),
        `iteration ${iter}`,
      );
      if (iter % 100 === 7) assert.ok(batches >= 2, 'more than 1024 frames in one chunk take two calls');
    }
  });

  test('batch mode: frames before an oversized prefix are delivered, then the stream is broken', () => {
    const got: number[] = [];
    const d = new Deframer(
      () => assert.fail('no frame is reassembled here'),
      100,
      (_b, fr, n) => {
        for (let k = 0; k < n; k++) got.push(fr[2 * k + 1] as number);
      },
    );
    const wire = Buffer.concat([encode([Buffer.alloc(20), Buffer.alloc(30)]), Buffer.from('00000065', 'hex')]);
    assert.equal(d.push(wire), PushResult.OVERSIZED);
    assert.deepEqual(got, [20, 30]);
    assert.equal(d.badLength, 101);
  });
});
