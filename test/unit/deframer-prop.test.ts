/**
 * Property tests of the stream deframer (fast-check). A failure prints the
 * seed and the shrunk input; rerun it with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Deframer, PREFIX_LEN, PushResult } from '../../src/net/ports/deframer.js';
import { chunked } from '../helpers/chunks.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };
const params = (numRuns: number) => ({ numRuns, ...seed });
const MAX = 4096 + 65536;

/** What the deframer should make of `bytes`: the frames, and the oversized length that stops it (or -1). */
function reference(bytes: Uint8Array, max: number): { frames: string[]; bad: number } {
  const b = Buffer.from(bytes);
  const frames: string[] = [];
  for (let p = 0; b.length - p >= PREFIX_LEN; ) {
    const len = b.readUInt32BE(p);
    if (len > max) return { frames, bad: len };
    if (b.length - p - PREFIX_LEN < len) break;
    frames.push(b.toString('hex', p + PREFIX_LEN, p + PREFIX_LEN + len));
    p += PREFIX_LEN + len;
  }
  return { frames, bad: -1 };
}

/**
 * Feeds the chunks, each copied into a larger buffer with junk after `end`
 * (the deframer must stop at `end`), with or without a batch sink.
 */
function run(chunks: Buffer[], max: number, batch: boolean): { frames: string[]; result: number; bad: number } {
  const frames: string[] = [];
  const d = new Deframer(
    (buf, off, len) => frames.push(buf.toString('hex', off, off + len)),
    max,
    batch
      ? (buf, list, n) => {
          for (let i = 0; i < n; i++) {
            const off = list[2 * i] as number;
            frames.push(buf.toString('hex', off, off + (list[2 * i + 1] as number)));
          }
        }
      : undefined,
  );
  let result: number = PushResult.OK;
  for (const c of chunks) {
    const big = Buffer.alloc(c.length + 7, 0xee);
    c.copy(big);
    result = d.push(big, c.length);
    if (result !== PushResult.OK) break;
  }
  return { frames, result, bad: d.badLength };
}

const encode = (frames: Uint8Array[]): Uint8Array =>
  Buffer.concat(
    frames.flatMap((f) => {
      const h = Buffer.alloc(PREFIX_LEN);
      h.writeUInt32BE(f.length);
      return [h, Buffer.from(f)];
    }),
  );

describe('stream deframer (property tests)', () => {
  it('hands back every encoded frame, in order, however the stream is cut into chunks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.boolean(),
        (frames, cuts, batch) => {
          const bytes = encode(frames);
          const r = run(chunked(bytes, cuts), MAX, batch);
          assert.equal(r.result, PushResult.OK);
          assert.deepEqual(
            r.frames,
            frames.map((f) => Buffer.from(f).toString('hex')),
          );
        },
      ),
      params(300),
    );
  });

  it('never throws on arbitrary bytes, and gives the same frames and verdict for any chunking', () => {
    fc.assert(
      fc.property(
        // Small maximum lengths make oversized prefixes likely; arbitrary bytes then exercise both outcomes.
        fc.uint8Array({ maxLength: 600 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.integer({ min: 0, max: 300 }),
        fc.boolean(),
        (bytes, cuts, max, batch) => {
          const want = reference(bytes, max);
          const whole = run([Buffer.from(bytes)], max, batch);
          const pieces = run(chunked(bytes, cuts), max, batch);
          for (const r of [whole, pieces]) {
            assert.deepEqual(r.frames, want.frames);
            assert.equal(r.result, want.bad < 0 ? PushResult.OK : PushResult.OVERSIZED);
            assert.equal(r.bad, want.bad);
          }
        },
      ),
      params(500),
    );
  });

  it('refuses every push after an oversized prefix until reset, then parses a fresh stream', () => {
    fc.assert(
      fc.property(fc.integer({ min: 101, max: 0xffffffff }), fc.uint8Array({ maxLength: 100 }), (len, frame) => {
        const frames: string[] = [];
        const d = new Deframer((b, o, l) => frames.push(b.toString('hex', o, o + l)), 100);
        const h = Buffer.alloc(4);
        h.writeUInt32BE(len);
        assert.equal(d.push(h), PushResult.OVERSIZED);
        assert.equal(d.badLength, len);
        assert.equal(d.push(Buffer.from(encode([frame]))), PushResult.OVERSIZED);
        d.reset();
        assert.equal(d.push(Buffer.from(encode([frame]))), PushResult.OK);
        assert.deepEqual(frames, [Buffer.from(frame).toString('hex')]);
        assert.equal(d.partial, false);
      }),
      params(200),
    );
  });
});
