/**
 * Property tests of the NBD server handshake (fast-check): option haggling,
 * bad magic, oversized options, arbitrary bytes. A failure prints the seed and
 * the shrunk input; rerun it with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { OPT, OPT_REPLY_MAGIC, REP } from '../../src/storage/nbd/constants.js';
import { MAX_OPTION_LEN, ServerHandshake } from '../../src/storage/nbd/handshake.js';
import { chunked } from '../helpers/chunks.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };
const params = (numRuns: number) => ({ numRuns, ...seed });

const CLIENT_FLAGS = Buffer.from('00000003', 'hex'); // FIXED_NEWSTYLE | NO_ZEROES
const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');

function registry(): ExportRegistry {
  const r = new ExportRegistry();
  r.add({ name: 'disk', backend: new MemoryBackend({ size: 1 << 20 }), description: 'Disk' });
  r.add({ name: 'ro', backend: new MemoryBackend({ size: 4096 }), readOnly: true });
  return r;
}

/** An option as sent, and how the server must end it. */
interface Opt {
  opt: number;
  data: Buffer;
  /** `reply`: answered with replies ending in ACK or an error, session goes on; `done`/`closed`: the session ends. */
  ends: 'reply' | 'done' | 'closed';
  /** Length announced when it differs from data (oversized options). */
  len?: number;
}

const nameData = (name: string, infos: number[]): Buffer => {
  const n = Buffer.from(name);
  const b = Buffer.alloc(6 + n.length + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  for (const [i, t] of infos.entries()) b.writeUInt16BE(t, 6 + n.length + 2 * i);
  return b;
};
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const exportName = fc.oneof(fc.constantFrom('disk', 'ro', 'nope', ''), fc.string({ maxLength: 20 }));
const known = new Set<number>(Object.values(OPT));

/** Options a client may send during haggling, well-formed or not. */
const option: fc.Arbitrary<Opt> = fc.oneof(
  bytes(8).map((data) => ({ opt: OPT.LIST, data, ends: 'reply' as const })),
  bytes(4).map((data) => ({ opt: OPT.STRUCTURED_REPLY, data, ends: 'reply' as const })),
  bytes(4).map((data) => ({ opt: OPT.STARTTLS, data, ends: 'reply' as const })),
  bytes(16).map((data) => ({ opt: OPT.PEEK_EXPORT, data, ends: 'reply' as const })),
  fc
    .tuple(exportName, fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }), fc.boolean())
    .map(([name, infos, go]) => ({
      opt: go ? OPT.GO : OPT.INFO,
      data: nameData(name, infos),
      ends: go && (name === 'disk' || name === 'ro') ? ('done' as const) : ('reply' as const),
    })),
  fc
    .tuple(fc.constantFrom(OPT.INFO, OPT.GO, OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT), bytes(40))
    // Arbitrary data for options with a structure: a GO naming an existing export by chance would end it.
    .filter(([, d]) => d.length < 4 || d.readUInt32BE(0) > 4)
    .map(([opt, data]) => ({ opt, data, ends: 'reply' as const })),
  fc
    .tuple(fc.integer({ min: 0, max: 0xffffffff }), bytes(16))
    .filter(([o]) => !known.has(o as (typeof OPT)[keyof typeof OPT]))
    .map(([opt, data]) => ({ opt, data, ends: 'reply' as const })),
  // Longer than the server reads: skipped and refused with ERR_TOO_BIG.
  fc
    .tuple(fc.constantFrom(OPT.LIST, OPT.GO, OPT.INFO, 999), fc.integer({ min: 1, max: 3000 }))
    .map(([opt, extra]) => ({ opt, data: Buffer.alloc(MAX_OPTION_LEN + extra, 0x41), ends: 'reply' as const })),
  fc.constant({ opt: OPT.ABORT, data: Buffer.alloc(0), ends: 'closed' as const }),
  exportName.map((name) => ({
    opt: OPT.EXPORT_NAME,
    data: Buffer.from(name),
    ends: name === 'disk' || name === 'ro' ? ('done' as const) : ('closed' as const),
  })),
);

function encodeOpt(o: Opt): Buffer {
  const h = Buffer.alloc(16);
  IHAVEOPT.copy(h);
  h.writeUInt32BE(o.opt, 8);
  h.writeUInt32BE(o.len ?? o.data.length, 12);
  return Buffer.concat([h, o.data]);
}

/** Runs a handshake over the chunks; what the server sent after its greeting, and how it ended. */
function run(chunks: Buffer[]): { out: string; state: string; reason: string; rest: string } {
  const h = new ServerHandshake(registry());
  h.out = [];
  for (const c of chunks) h.feed(c);
  return {
    out: Buffer.concat(h.out).toString('hex'),
    state: h.state,
    reason: h.closeReason,
    rest: h.rest.toString('hex'),
  };
}

/** Splits option replies (magic, option, type, length, data); `tail` is what is left (an EXPORT_NAME answer). */
function replies(hex: string): { replies: { opt: number; type: number }[]; tail: Buffer } {
  const b = Buffer.from(hex, 'hex');
  const out: { opt: number; type: number }[] = [];
  let p = 0;
  while (b.length - p >= 20 && b.readBigUInt64BE(p) === OPT_REPLY_MAGIC) {
    out.push({ opt: b.readUInt32BE(p + 8), type: b.readUInt32BE(p + 12) });
    p += 20 + b.readUInt32BE(p + 16);
  }
  return { replies: out, tail: b.subarray(p) };
}

const isFinal = (type: number): boolean => type === REP.ACK || type >= 0x80000000;

describe('NBD server handshake (property tests)', () => {
  it('answers every option in order with its replies ending in ACK or an error, until one ends the session', () => {
    fc.assert(
      fc.property(fc.array(option, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (opts, cuts) => {
        const wire = Buffer.concat([CLIENT_FLAGS, ...opts.map(encodeOpt), Buffer.from('trailing')]);
        const r = run(chunked(wire, cuts));
        const endAt = opts.findIndex((o) => o.ends !== 'reply');
        const handled = endAt < 0 ? opts : opts.slice(0, endAt + 1);
        const { replies: reps, tail } = replies(r.out);
        // Group the replies: each group ends with a final one.
        const groups: { opt: number; type: number }[][] = [];
        let cur: { opt: number; type: number }[] = [];
        for (const x of reps) {
          cur.push(x);
          if (isFinal(x.type)) {
            groups.push(cur);
            cur = [];
          }
        }
        assert.deepEqual(cur, [], 'a reply group does not end in ACK or an error');
        const answered = handled.filter((o) => o.opt !== OPT.EXPORT_NAME);
        assert.equal(groups.length, answered.length);
        groups.forEach((g, i) => {
          const o = answered[i] as Opt;
          for (const x of g) assert.equal(x.opt, o.opt);
          for (const x of g.slice(0, -1)) assert.ok([REP.SERVER, REP.INFO, REP.META_CONTEXT].includes(x.type as 2));
          if (o.data.length > MAX_OPTION_LEN) assert.equal(g.at(-1)?.type, REP.ERR_TOO_BIG);
        });
        const last = handled.at(-1);
        const expected = endAt < 0 ? 'option-header' : (last as Opt).ends;
        assert.equal(r.state, expected, r.reason);
        if (last?.opt === OPT.EXPORT_NAME && expected === 'done') assert.equal(tail.length, 10);
        else assert.equal(tail.length, 0);
        if (expected === 'done') assert.ok(r.rest.endsWith(Buffer.from('trailing').toString('hex')));
      }),
      params(200),
    );
  });

  it('never throws on arbitrary bytes, and ends the same way for any chunking', () => {
    const header = fc
      .tuple(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 80 }), bytes(80))
      .map(([o, len, data]) => encodeOpt({ opt: o, data, ends: 'reply', len }));
    const noise = fc.array(fc.oneof(bytes(24), header), { maxLength: 10 }).map((p) => Buffer.concat(p));
    fc.assert(
      fc.property(fc.boolean(), noise, fc.array(fc.nat(), { maxLength: 12 }), (flags, body, cuts) => {
        const wire = Buffer.concat([flags ? CLIENT_FLAGS : Buffer.alloc(0), body]);
        const whole = run([wire]);
        const pieces = run(chunked(wire, cuts));
        assert.deepEqual(pieces, whole);
        assert.ok(
          ['client-flags', 'option-header', 'option-data', 'option-skip', 'done', 'closed'].includes(whole.state),
        );
        if (whole.state === 'closed') assert.notEqual(whole.reason, '');
      }),
      params(500),
    );
  });

  it('closes on an option magic other than IHAVEOPT, and on client flags it did not offer, without a reply', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 8, maxLength: 8 }).filter((m) => !Buffer.from(m).equals(IHAVEOPT)),
        (magic) => {
          const r = run([CLIENT_FLAGS, Buffer.from(magic), Buffer.alloc(8)]);
          assert.equal(r.state, 'closed');
          assert.match(r.reason, /^bad option magic 0x[0-9a-f]+ \(expected IHAVEOPT\)$/);
          assert.equal(r.out, '');
        },
      ),
      params(100),
    );
    fc.assert(
      fc.property(fc.integer({ min: 4, max: 0xffffffff }), (flags) => {
        const f = Buffer.alloc(4);
        f.writeUInt32BE(flags);
        const r = run([f]);
        assert.equal(r.state, 'closed');
        assert.match(r.reason, /include bits the server did not offer/);
      }),
      params(100),
    );
  });

  it('closes on an NBD_OPT_EXPORT_NAME longer than it reads, before the name arrives', () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_OPTION_LEN + 1, max: 0xffffffff }), (len) => {
        const r = run([CLIENT_FLAGS, encodeOpt({ opt: OPT.EXPORT_NAME, data: Buffer.alloc(0), ends: 'closed', len })]);
        assert.equal(r.state, 'closed');
        assert.equal(r.reason, `export name of ${len} bytes is too long`);
      }),
      params(100),
    );
  });
});
