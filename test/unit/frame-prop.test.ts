/**
 * Property tests of the in-place header accessors (src/net/frame/, fast-check)
 * against a reference: frames built from random header fields must read back
 * those fields, at any offset; arbitrary bytes never make them throw or point
 * outside the frame. They read guests' frames. A failure prints the seed and the shrunk input; rerun it
 * with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { arpOp } from '../../src/net/frame/arp.js';
import {
  dstHi,
  dstLo,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  etherType,
  macAt,
  macOf,
  srcHi,
  srcLo,
  u16,
  u32,
} from '../../src/net/frame/ethernet.js';
import {
  dscpOf,
  ipv4Dscp,
  ipv4FragOffset,
  ipv4HeaderOk,
  ipv4Ihl,
  ipv4Proto,
  ipv6Dscp,
  ipv6HeaderOk,
  ipv6Next,
} from '../../src/net/frame/ip.js';
import { innerEtherType, isTagged, l3Offset, pushTag, stripTag, vlanId, vlanPcp } from '../../src/net/frame/vlan.js';
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

describe('header accessors (property tests)', () => {
  it('read back the MACs, tags, EtherType, IP fields and DSCP of a frame built from them, at any offset', () => {
    fc.assert(
      fc.property(spec, fc.nat(32), (s, pad) => {
        const frame = build(s);
        const buf = Buffer.concat([Buffer.alloc(pad, 0xff), frame, Buffer.alloc(3, 0xff)]);
        const end = pad + frame.length;
        assert.equal(macAt(buf, pad), s.dst);
        assert.equal(macOf(dstHi(buf, pad), dstLo(buf, pad)), s.dst);
        assert.equal(macOf(srcHi(buf, pad), srcLo(buf, pad)), s.src);
        assert.equal(isTagged(buf, pad), s.tags.length > 0);
        const outer = s.tags[0];
        if (outer !== undefined) {
          assert.equal(etherType(buf, pad), outer.tpid);
          assert.deepEqual([vlanId(buf, pad), vlanPcp(buf, pad)], [outer.vlan, outer.pcp]);
        }
        const l3 = pad + 14 + 4 * s.tags.length;
        assert.equal(l3Offset(buf, pad, frame.length), l3);
        const l = s.l3;
        if (l.kind === 'ipv4') {
          assert.equal(innerEtherType(buf, l3), ETHERTYPE_IPV4);
          assert.equal(ipv4HeaderOk(buf, l3, end), true);
          assert.deepEqual(
            [ipv4Ihl(buf, l3), ipv4Dscp(buf, l3), ipv4Proto(buf, l3), ipv4FragOffset(buf, l3)],
            [4 * l.ihl, l.dscp, l.proto, l.frag],
          );
          assert.equal(dscpOf(buf, pad, frame.length), l.dscp);
          // Cut inside the header: refused.
          assert.equal(ipv4HeaderOk(buf, l3, l3 + 4 * l.ihl - 1), false);
        } else if (l.kind === 'ipv6') {
          assert.equal(innerEtherType(buf, l3), ETHERTYPE_IPV6);
          assert.equal(ipv6HeaderOk(buf, l3, end), true);
          assert.deepEqual([ipv6Dscp(buf, l3), ipv6Next(buf, l3)], [l.dscp, l.next]);
          assert.equal(dscpOf(buf, pad, frame.length), l.dscp);
          assert.equal(ipv6HeaderOk(buf, l3, l3 + 39), false);
        } else if (l.kind === 'arp') {
          assert.deepEqual([innerEtherType(buf, l3), arpOp(buf, l3)], [ETHERTYPE_ARP, l.op]);
          assert.equal(dscpOf(buf, pad, frame.length), -1);
        } else {
          assert.equal(innerEtherType(buf, l3), l.type);
          assert.equal(dscpOf(buf, pad, frame.length), -1);
        }
      }),
      params(500),
    );
  });

  it('insert a tag and strip it again to the same bytes, for any frame and VLAN id', () => {
    fc.assert(
      fc.property(spec, fc.integer({ min: 1, max: 4095 }), (s, vid) => {
        const frame = build(s);
        const out = Buffer.alloc(frame.length + 4);
        assert.equal(pushTag(frame, 0, frame.length, vid, out), frame.length + 4);
        assert.deepEqual([etherType(out, 0), vlanId(out, 0), vlanPcp(out, 0)], [ETHERTYPE_VLAN, vid, 0]);
        assert.deepEqual(out.subarray(stripTag(out, 0)), frame);
      }),
      params(300),
    );
  });

  it('read big-endian words like Buffer does, and never throw on arbitrary bytes and bounds', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 128 }), fc.integer({ min: 0, max: 140 }), (bytes, len) => {
        const buf = Buffer.from(bytes);
        assert.equal(u16(buf, 0), buf.readUInt16BE(0));
        assert.equal(u32(buf, 0), buf.readUInt32BE(0));
        const l = Math.min(len, buf.length);
        const l3 = l3Offset(buf, 0, l);
        if (l3 >= 0) assert.ok(l3 >= 14 && l3 <= l, `l3 ${l3} outside [14, ${l}]`);
        const d = dscpOf(buf, 0, l);
        assert.ok(d >= -1 && d <= 63);
      }),
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
