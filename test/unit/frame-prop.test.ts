/**
 * Property tests of the Ethernet/IP header parser (fast-check): it reads
 * guests' frames. A failure prints the seed and the shrunk input; rerun it
 * with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  newFrameInfo,
  parseFrame,
} from '../../src/net/frame.js';
import { formatMac, parseMac } from '../../src/util/mac.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };
const params = (numRuns: number) => ({ numRuns, ...seed });
const mac = fc.integer({ min: 0, max: 0xffff_ffff_ffff });

interface Spec {
  dst: number;
  src: number;
  tags: { tpid: number; pcp: number; vlan: number }[];
  l3:
    | { kind: 'ipv4'; ihl: number; dscp: number; proto: number; frag: number }
    | { kind: 'ipv6'; dscp: number; next: number }
    | { kind: 'arp'; op: number }
    | { kind: 'other'; type: number };
  payload: Uint8Array;
}

const spec: fc.Arbitrary<Spec> = fc.record({
  dst: mac,
  src: mac,
  tags: fc.array(
    fc.record({
      tpid: fc.constantFrom(ETHERTYPE_VLAN, ETHERTYPE_QINQ),
      pcp: fc.integer({ min: 0, max: 7 }),
      vlan: fc.integer({ min: 0, max: 4095 }),
    }),
    { maxLength: 2 },
  ),
  l3: fc.oneof(
    fc.record({
      kind: fc.constant('ipv4' as const),
      ihl: fc.integer({ min: 5, max: 15 }),
      dscp: fc.integer({ min: 0, max: 63 }),
      proto: fc.integer({ min: 0, max: 255 }),
      frag: fc.integer({ min: 0, max: 0x1fff }),
    }),
    fc.record({
      kind: fc.constant('ipv6' as const),
      dscp: fc.integer({ min: 0, max: 63 }),
      next: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({ kind: fc.constant('arp' as const), op: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({
      kind: fc.constant('other' as const),
      type: fc
        .integer({ min: 0, max: 0xffff })
        .filter(
          (t) => ![ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_ARP, 0x8035, ETHERTYPE_VLAN, ETHERTYPE_QINQ].includes(t),
        ),
    }),
  ),
  payload: fc.uint8Array({ maxLength: 64 }),
});

function build(s: Spec): Buffer {
  const eth = Buffer.alloc(12);
  eth.writeUIntBE(s.dst, 0, 6);
  eth.writeUIntBE(s.src, 6, 6);
  const tags = s.tags.map((t) => {
    const b = Buffer.alloc(4);
    b.writeUInt16BE(t.tpid, 0);
    b.writeUInt16BE((t.pcp << 13) | t.vlan, 2);
    return b;
  });
  const type = Buffer.alloc(2);
  let l3: Buffer;
  switch (s.l3.kind) {
    case 'ipv4':
      type.writeUInt16BE(ETHERTYPE_IPV4);
      l3 = Buffer.alloc(s.l3.ihl * 4);
      l3[0] = 0x40 | s.l3.ihl;
      l3[1] = s.l3.dscp << 2;
      l3.writeUInt16BE(s.l3.frag, 6);
      l3[9] = s.l3.proto;
      break;
    case 'ipv6':
      type.writeUInt16BE(ETHERTYPE_IPV6);
      l3 = Buffer.alloc(40);
      l3.writeUInt32BE(((6 << 28) | (s.l3.dscp << 22)) >>> 0, 0);
      l3[6] = s.l3.next;
      break;
    case 'arp':
      type.writeUInt16BE(ETHERTYPE_ARP);
      l3 = Buffer.alloc(28);
      l3.writeUInt16BE(s.l3.op, 6);
      break;
    default:
      type.writeUInt16BE(s.l3.type);
      l3 = Buffer.alloc(0);
  }
  return Buffer.concat([eth, ...tags, type, l3, Buffer.from(s.payload)]);
}

describe('Ethernet/IP header parser (property tests)', () => {
  it('reads back the MACs, outer tag, EtherType and IP fields of a frame built from them, at any offset', () => {
    fc.assert(
      fc.property(spec, fc.nat(32), (s, pad) => {
        const frame = build(s);
        const buf = Buffer.concat([Buffer.alloc(pad, 0xff), frame, Buffer.alloc(3, 0xff)]);
        const out = newFrameInfo();
        assert.equal(parseFrame(buf, pad, frame.length, out), true);
        assert.equal(out.dst, s.dst);
        assert.equal(out.src, s.src);
        assert.equal(out.vlan, s.tags[0]?.vlan ?? -1);
        assert.equal(out.pcp, s.tags[0]?.pcp ?? -1);
        const l3 = pad + 14 + 4 * s.tags.length;
        assert.equal(out.l3, l3);
        const l = s.l3;
        if (l.kind === 'ipv4') {
          assert.deepEqual([out.ethertype, out.dscp, out.ipProto], [ETHERTYPE_IPV4, l.dscp, l.proto]);
          assert.equal(out.l4, l.frag === 0 ? l3 + 4 * l.ihl : -1);
        } else if (l.kind === 'ipv6') {
          assert.deepEqual([out.ethertype, out.dscp, out.ipProto, out.l4], [ETHERTYPE_IPV6, l.dscp, l.next, l3 + 40]);
        } else if (l.kind === 'arp') {
          assert.deepEqual([out.ethertype, out.arpOp], [ETHERTYPE_ARP, l.op]);
        } else {
          assert.deepEqual([out.ethertype, out.ipProto, out.l4, out.arpOp], [l.type, -1, -1, -1]);
        }
        // Cut inside a header the frame announces: refused, never read past the cut.
        if (l.kind !== 'other') {
          const cut = l3 - pad + 1;
          assert.equal(parseFrame(Buffer.from(frame.subarray(0, cut)), 0, cut, newFrameInfo()), false);
        }
      }),
      params(500),
    );
  });

  it('never throws on arbitrary bytes and bounds, and every offset it reports lies inside the frame', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 128 }),
        fc.integer({ min: -8, max: 140 }),
        fc.integer({ min: -8, max: 140 }),
        (bytes, off, len) => {
          const buf = Buffer.from(bytes);
          const out = newFrameInfo();
          const ok = parseFrame(buf, off, len, out);
          if (!ok) return;
          assert.ok(off >= 0 && len >= 14 && off + len <= buf.length);
          assert.ok(out.l3 >= off + 14 && out.l3 <= off + len);
          if (out.l4 >= 0) assert.ok(out.l4 > out.l3 && out.l4 <= off + len);
          assert.ok(out.dscp >= -1 && out.dscp <= 63);
          assert.ok(out.vlan >= -1 && out.vlan <= 4095);
        },
      ),
      params(1000),
    );
  });

  it('formats and parses MAC addresses back to the same number, and refuses arbitrary text that is not one', () => {
    fc.assert(
      fc.property(mac, (m) => {
        assert.equal(parseMac(formatMac(m)), m);
        assert.equal(parseMac(formatMac(m).replaceAll(':', '-').toUpperCase()), m);
      }),
      params(300),
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 30 }), (text) => {
        const m = parseMac(text);
        if (m !== undefined) assert.equal(parseMac(formatMac(m)), m);
      }),
      params(300),
    );
  });
});
