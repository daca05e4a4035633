/**
 * Property tests of the NBD transmission request parser (fast-check). A
 * failure prints the seed and the shrunk input; rerun it with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CMD, MAX_PAYLOAD, REQUEST_LEN, REQUEST_MAGIC } from '../../src/storage/nbd/constants.js';
import { RequestParser } from '../../src/storage/nbd/transmission.js';
import { chunked } from '../helpers/chunks.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };
const params = (numRuns: number) => ({ numRuns, ...seed });

interface Req {
  type: number;
  flags: number;
  cookie: bigint;
  offset: number;
  length: number;
  data?: string;
}

const request = fc
  .record({
    type: fc.oneof(
      fc.constantFrom(CMD.READ, CMD.WRITE, CMD.DISC, CMD.FLUSH, CMD.TRIM),
      fc.integer({ min: 0, max: 0xffff }),
    ),
    flags: fc.integer({ min: 0, max: 0xffff }),
    cookie: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    offset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    length: fc.integer({ min: 0, max: 0xffffffff }),
    payload: fc.uint8Array({ maxLength: 2000 }),
  })
  .map(
    ({ payload, ...r }): Req =>
      r.type === CMD.WRITE ? { ...r, length: payload.length, data: Buffer.from(payload).toString('hex') } : r,
  );

function encode(r: Req): Buffer {
  const h = Buffer.alloc(REQUEST_LEN);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(r.flags, 4);
  h.writeUInt16BE(r.type, 6);
  h.writeBigUInt64BE(r.cookie, 8);
  h.writeBigUInt64BE(BigInt(r.offset), 16);
  h.writeUInt32BE(r.length, 24);
  return r.data === undefined ? h : Buffer.concat([h, Buffer.from(r.data, 'hex')]);
}

/** Parses the chunks; a transient parser gets each chunk in a buffer that is scribbled over after feed(). */
function parse(chunks: Buffer[], transient: boolean): { reqs: Req[]; errors: string[] } {
  const reqs: Req[] = [];
  const errors: string[] = [];
  const p = new RequestParser(
    (r) => {
      const { data, ...rest } = r;
      reqs.push(data === undefined ? rest : { ...rest, data: data.toString('hex') });
    },
    (e) => errors.push(e),
    transient,
  );
  for (const c of chunks) {
    p.feed(c);
    if (transient) c.fill(0xa5);
  }
  return { reqs, errors };
}

describe('NBD transmission request parser (property tests)', () => {
  it('parses encoded requests back exactly, however the stream is chunked, transient chunks included', () => {
    fc.assert(
      fc.property(
        fc.array(request, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.boolean(),
        (reqs, cuts, transient) => {
          const r = parse(chunked(Buffer.concat(reqs.map(encode)), cuts), transient);
          assert.deepEqual(r.errors, []);
          assert.deepEqual(r.reqs, reqs);
        },
      ),
      params(300),
    );
  });

  it('never throws on arbitrary bytes; reports at most one error, the same for any chunking', () => {
    // Arbitrary bytes after a valid magic now and then, so headers get past the magic check.
    const noisy = fc
      .array(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(Uint8Array.of(0x25, 0x60, 0x95, 0x13))), {
        maxLength: 20,
      })
      .map((parts) => Buffer.concat(parts));
    fc.assert(
      fc.property(noisy, fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
        const whole = parse([bytes], false);
        const pieces = parse(chunked(bytes, cuts), true);
        for (const r of [whole, pieces]) {
          assert.ok(r.errors.length <= 1);
          for (const e of r.errors)
            assert.match(e, /^bad request magic 0x[0-9a-f]{8}$|^write payload of \d+ bytes exceeds/);
        }
        assert.deepEqual(pieces, whole);
      }),
      params(500),
    );
  });

  it('refuses a write announcing more than the maximum payload, after the requests before it', () => {
    fc.assert(
      fc.property(
        fc.array(request, { maxLength: 4 }),
        fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffffff }),
        (before, length) => {
          const big = encode({ type: CMD.WRITE, flags: 0, cookie: 1n, offset: 0, length });
          const r = parse([Buffer.concat([...before.map(encode), big])], false);
          assert.deepEqual(r.reqs, before);
          assert.deepEqual(r.errors, [`write payload of ${length} bytes exceeds the ${MAX_PAYLOAD}-byte maximum`]);
        },
      ),
      params(100),
    );
  });
});
