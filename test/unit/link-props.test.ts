/**
 * Property-based tests (fast-check) of what a link peer can send: the record
 * codec, the hello, the network list messages, and the VXLAN header. Whatever
 * the bytes, the parsers never throw; valid records and lists come out as
 * they went in; oversized lengths are refused with the right result code.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  DecodeResult,
  encodeControl,
  HEADER_LEN,
  LinkDecoder,
  MAX_CONTROL_BODY,
  MAX_FRAME_BODY,
  OFFLOAD_HLEN,
  TYPE_CONTROL,
  TYPE_FRAME,
  TYPE_FRAME_OFFLOAD,
  writeHeader,
} from '../../src/net/overlay/codec.js';
import { parseHello } from '../../src/net/overlay/hello.js';
import {
  MAX_PEER_NETWORKS,
  PeerNetworks,
  snapshotMessages,
  updateMessages,
} from '../../src/net/overlay/network-sync.js';
import { parseVxlan, VXLAN_HLEN, writeVxlan } from '../../src/net/overlay/vxlan-channel.js';

const RUNS = { numRuns: 300 };

interface Rec {
  type: number;
  vni: number;
  body: Buffer;
}

/** A sink that records what it gets, copying the bytes (valid only during the call). */
function collector(): { recs: Rec[]; sink: ConstructorParameters<typeof LinkDecoder>[0] } {
  const recs: Rec[] = [];
  return {
    recs,
    sink: {
      frame: (vni, buf, off, len, meta) =>
        recs.push({
          type: meta ? TYPE_FRAME_OFFLOAD : TYPE_FRAME,
          vni,
          body: Buffer.from(buf.subarray(off, off + len)),
        }),
      control: (buf, off, len) =>
        recs.push({ type: TYPE_CONTROL, vni: 0, body: Buffer.from(buf.subarray(off, off + len)) }),
    },
  };
}

/** Splits `buf` at the given cut points (fractions of its length). */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => Math.floor(c * buf.length)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let p = 0;
  for (const c of at) {
    out.push(buf.subarray(p, c));
    p = c;
  }
  out.push(buf.subarray(p));
  return out;
}

const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 });

const record = fc.oneof(
  fc.record({
    type: fc.constant(TYPE_FRAME),
    vni: fc.integer({ min: 0, max: 0xffffff }),
    body: fc.uint8Array({ maxLength: 3000 }).map((b) => Buffer.from(b)),
  }),
  fc.record({
    type: fc.constant(TYPE_CONTROL),
    vni: fc.constant(0),
    body: fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify({ type: 'x', v }) ?? '{}')),
  }),
);

function encode(recs: Rec[]): Buffer {
  return Buffer.concat(
    recs.map((r) => {
      const h = Buffer.alloc(HEADER_LEN);
      writeHeader(h, 0, r.body.length, r.type, r.vni);
      return Buffer.concat([h, r.body]);
    }),
  );
}

describe('link record codec (properties)', () => {
  test('arbitrary bytes, in arbitrary chunks, never make push() throw; it answers a known result', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), cuts, (bytes, c) => {
        const d = new LinkDecoder(collector().sink);
        for (const chunk of split(Buffer.from(bytes), c)) {
          const r = d.push(chunk);
          assert.ok(Object.values(DecodeResult).includes(r));
        }
      }),
      RUNS,
    );
  });

  test('arbitrary bytes never make parse() throw; it returns an offset within the window or -1', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        const buf = Buffer.from(bytes);
        const p = new LinkDecoder(collector().sink).parse(buf, 0, buf.length);
        assert.ok(p === -1 || (p >= 0 && p <= buf.length));
      }),
      RUNS,
    );
  });

  test('valid records round-trip whole and in order, however the stream is cut', () => {
    fc.assert(
      fc.property(fc.array(record, { maxLength: 20 }), cuts, (recs, c) => {
        const out = collector();
        const d = new LinkDecoder(out.sink);
        for (const chunk of split(encode(recs), c)) assert.equal(d.push(chunk), DecodeResult.OK);
        assert.equal(d.partial, false);
        assert.deepEqual(
          out.recs.map((r) => [r.type, r.vni, r.body.toString('hex')]),
          recs.map((r) => [r.type, r.vni, r.body.toString('hex')]),
        );
      }),
      RUNS,
    );
  });

  test('a length over the limit of its type is refused as TOO_LONG, an unknown type as BAD_TYPE, with the header kept', () => {
    const limits: Record<number, number> = {
      [TYPE_FRAME]: MAX_FRAME_BODY,
      [TYPE_CONTROL]: MAX_CONTROL_BODY,
      [TYPE_FRAME_OFFLOAD]: MAX_FRAME_BODY + OFFLOAD_HLEN,
    };
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff }), cuts, (type, len, c) => {
        const max = limits[type];
        fc.pre(max === undefined || len > max);
        const h = Buffer.alloc(HEADER_LEN);
        writeHeader(h, 0, len, type, 5);
        const d = new LinkDecoder(collector().sink);
        let r: DecodeResult = DecodeResult.OK;
        for (const chunk of split(h, c)) r = d.push(chunk);
        assert.equal(r, max === undefined ? DecodeResult.BAD_TYPE : DecodeResult.TOO_LONG);
        assert.equal(d.badLength, len);
        assert.equal(d.badType, type);
        // Broken for good: more bytes change nothing.
        assert.equal(d.push(Buffer.alloc(16)), r);
      }),
      RUNS,
    );
  });
});

describe('hello and network list messages (properties)', () => {
  test('parseHello never throws on any JSON object, and a hello it accepts has a valid host id', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), fc.jsonValue(), (o, v) => {
        for (const msg of [o, { ...o, type: 'hello' }, { type: 'hello', proto: 'vmlink-link', version: 2, host: v }]) {
          const h = parseHello(msg as never);
          if (typeof h !== 'string') assert.match(h.host, /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/);
        }
      }),
      RUNS,
    );
  });

  test('any message a peer sends is applied or refused with a reason, never thrown', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc
            .record({ type: fc.constantFrom('networks', 'networks-update') }, { requiredKeys: ['type'] })
            .chain((m) =>
              fc
                .dictionary(fc.constantFrom('networks', 'part', 'last', 'add', 'remove'), fc.jsonValue())
                .map((d) => ({ ...d, ...m })),
            ),
          { maxLength: 10 },
        ),
        (msgs) => {
          const p = new PeerNetworks();
          for (const m of msgs) {
            const r = p.apply(m);
            assert.ok(['changed', 'pending', 'error'].includes(r.kind));
            if (r.kind === 'error') assert.ok(r.reason.length > 0);
          }
          if (p.offered) for (const v of p.offered) assert.ok(Number.isInteger(v) && v >= 1 && v <= 0xffffff);
        },
      ),
      RUNS,
    );
  });

  const network = fc.record({
    vni: fc.integer({ min: 1, max: 0xffffff }),
    name: fc.string({ maxLength: 32, unit: 'grapheme' }),
  });

  test('a full list of any size goes in records under the control limit and arrives as the same set of VNIs', () => {
    fc.assert(
      fc.property(fc.array(network, { maxLength: 3000 }), fc.integer({ min: 200, max: 60_000 }), (nets, budget) => {
        const msgs = snapshotMessages(nets, budget);
        const p = new PeerNetworks();
        let last: string | undefined;
        for (const m of msgs) {
          assert.ok(encodeControl(m).length - HEADER_LEN <= MAX_CONTROL_BODY);
          last = p.apply(m).kind;
        }
        assert.equal(last, 'changed');
        assert.deepEqual([...(p.offered ?? [])].sort(), [...new Set(nets.map((n) => n.vni))].sort());
      }),
      { numRuns: 60 },
    );
  });

  test('changes after the list (adds, then removes) leave exactly the expected set', () => {
    fc.assert(
      fc.property(
        fc.array(network, { maxLength: 300 }),
        fc.array(network, { maxLength: 300 }),
        fc.array(fc.integer({ min: 1, max: 0xffffff }), { maxLength: 300 }),
        (base, add, remove) => {
          const p = new PeerNetworks();
          for (const m of snapshotMessages(base)) p.apply(m);
          for (const m of updateMessages(add, remove, 500)) assert.equal(p.apply(m).kind, 'changed');
          const want = new Set([...base, ...add].map((n) => n.vni));
          for (const v of remove) want.delete(v);
          assert.deepEqual([...(p.offered ?? [])].sort(), [...want].sort());
        },
      ),
      { numRuns: 100 },
    );
  });

  test(`takes at most ${MAX_PEER_NETWORKS} networks from a peer and counts the rest`, () => {
    const nets = Array.from({ length: MAX_PEER_NETWORKS + 10 }, (_, i) => i + 1);
    const p = new PeerNetworks();
    assert.equal(p.apply({ type: 'networks', part: 0, last: true, networks: nets }).kind, 'changed');
    assert.equal(p.offered?.size, MAX_PEER_NETWORKS);
    assert.equal(p.ignored, 10);
  });
});

describe('VXLAN header (properties)', () => {
  test('parseVxlan never throws on any datagram; it reads the VNI only with the I flag and room for a frame', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(16), (bytes, pad) => {
        const buf = Buffer.concat([Buffer.alloc(pad), Buffer.from(bytes)]);
        const vni = parseVxlan(buf, bytes.length, pad);
        if (bytes.length < VXLAN_HLEN + 14 || ((bytes[0] as number) & 0x08) === 0) assert.equal(vni, -1);
        else assert.equal(vni, ((bytes[4] as number) << 16) | ((bytes[5] as number) << 8) | (bytes[6] as number));
      }),
      RUNS,
    );
  });

  test('writeVxlan then parseVxlan gives back every 24-bit VNI', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffff }), (vni) => {
        const buf = Buffer.alloc(VXLAN_HLEN + 14);
        writeVxlan(buf, 0, vni);
        assert.equal(parseVxlan(buf, buf.length), vni);
      }),
      RUNS,
    );
  });
});
