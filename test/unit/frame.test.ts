import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  isGroupMacAt,
  macAt,
  newFrameInfo,
  parseFrame,
  writeMac,
} from '../../src/net/frame.js';
import { formatMac, isGroupMac, parseMac } from '../../src/util/mac.js';
import { prng } from '../helpers/prng.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// IPv4/TCP SYN 10.0.0.1:40000 -> 10.0.0.2:80, DSCP 46 (EF).
const IPV4_TCP = hex(`
  525400000002 525400000001 0800
  45b8003c00004000 4006 0000 0a000001 0a000002
  9c400050 00000000 00000000 a0027210 00000000 020405b40402080a0000000000000000 01030307`);
// The same packet inside an 802.1Q tag, VLAN 100, PCP 5.
const VLAN_IPV4 = hex(`
  525400000002 525400000001 8100 a064 0800
  45b8003c00004000 4006 0000 0a000001 0a000002
  9c400050 00000000 00000000 a0027210 00000000`);
// QinQ: S-tag VLAN 7 then C-tag VLAN 9, then ARP request.
const QINQ_ARP = hex(`
  ffffffffffff 525400000001 88a8 0007 8100 0009 0806
  0001 0800 06 04 0001 525400000001 0a000001 000000000000 0a000002`);
// IPv6/UDP, traffic class 0xb8 (DSCP 46).
const IPV6_UDP = hex(`
  333300000001 525400000001 86dd
  6b800000 0008 11 40 fe800000000000000000000000000001 ff020000000000000000000000000001
  0035 0035 0008 0000`);
// IPv4 fragment with offset 185 (not the first).
const IPV4_FRAG = hex(`
  525400000002 525400000001 0800
  4500001c0000 00b9 4011 0000 0a000001 0a000002 0000000000000000`);

describe('MAC helpers', () => {
  test('read, write, format and parse a MAC as a number', () => {
    const b = Buffer.alloc(8);
    writeMac(b, 1, 0xfe54_0012_3456);
    assert.equal(b.toString('hex'), '00fe540012345600');
    assert.equal(macAt(b, 1), 0xfe54_0012_3456);
    assert.equal(formatMac(0xfe54_0012_3456), 'fe:54:00:12:34:56');
    assert.equal(parseMac('FE-54-00-12-34-56'), 0xfe54_0012_3456);
    assert.equal(parseMac('fe:54:00:12:34'), undefined);
    assert.equal(parseMac('zz:54:00:12:34:56'), undefined);
  });

  test('tells group from unicast addresses by the I/G bit', () => {
    assert.equal(isGroupMac(0xffff_ffff_ffff), true);
    assert.equal(isGroupMac(0x0100_5e00_0001), true);
    assert.equal(isGroupMac(0x5254_0000_0001), false);
    assert.equal(isGroupMacAt(hex('333300000001'), 0), true);
    assert.equal(isGroupMacAt(hex('525400000001'), 0), false);
  });
});

describe('parseFrame', () => {
  test('parses an IPv4 TCP frame: MACs, DSCP, protocol and L4 offset', () => {
    const fi = newFrameInfo();
    assert.equal(parseFrame(IPV4_TCP, 0, IPV4_TCP.length, fi), true);
    assert.equal(fi.dst, 0x5254_0000_0002);
    assert.equal(fi.src, 0x5254_0000_0001);
    assert.deepEqual(
      [fi.vlan, fi.pcp, fi.ethertype, fi.l3, fi.dscp, fi.ipProto, fi.l4],
      [-1, -1, ETHERTYPE_IPV4, 14, 46, 6, 34],
    );
  });

  test('parses a VLAN-tagged frame at an offset inside a larger buffer', () => {
    const buf = Buffer.concat([Buffer.alloc(5, 0xee), VLAN_IPV4, Buffer.alloc(3, 0xee)]);
    const fi = newFrameInfo();
    assert.equal(parseFrame(buf, 5, VLAN_IPV4.length, fi), true);
    assert.deepEqual([fi.vlan, fi.pcp, fi.ethertype, fi.l3, fi.ipProto, fi.l4], [100, 5, ETHERTYPE_IPV4, 23, 6, 43]);
  });

  test('reads the outer tag of a QinQ frame and the ARP opcode inside', () => {
    const fi = newFrameInfo();
    assert.equal(parseFrame(QINQ_ARP, 0, QINQ_ARP.length, fi), true);
    assert.deepEqual([fi.vlan, fi.ethertype, fi.arpOp, fi.l3], [7, ETHERTYPE_ARP, 1, 22]);
  });

  test('parses IPv6 traffic class and next header', () => {
    const fi = newFrameInfo();
    assert.equal(parseFrame(IPV6_UDP, 0, IPV6_UDP.length, fi), true);
    assert.deepEqual([fi.ethertype, fi.dscp, fi.ipProto, fi.l4], [ETHERTYPE_IPV6, 46, 17, 54]);
  });

  test('gives no L4 offset for a non-first IPv4 fragment', () => {
    const fi = newFrameInfo();
    assert.equal(parseFrame(IPV4_FRAG, 0, IPV4_FRAG.length, fi), true);
    assert.equal(fi.ipProto, 17);
    assert.equal(fi.l4, -1);
  });

  test('rejects runts, truncated headers and out-of-bounds ranges', () => {
    const fi = newFrameInfo();
    assert.equal(parseFrame(IPV4_TCP, 0, 13, fi), false);
    assert.equal(parseFrame(IPV4_TCP, 0, 30, fi), false);
    assert.equal(parseFrame(VLAN_IPV4, 0, 17, fi), false);
    assert.equal(parseFrame(IPV6_UDP, 0, 50, fi), false);
    assert.equal(parseFrame(IPV4_TCP, 10, IPV4_TCP.length, fi), false);
    assert.equal(parseFrame(IPV4_TCP, -1, 20, fi), false);
    // A bad IP version or IHL.
    const bad = Buffer.from(IPV4_TCP);
    bad[14] = 0x44;
    assert.equal(parseFrame(bad, 0, bad.length, fi), false);
  });

  test('every prefix of valid frames parses without throwing', () => {
    const fi = newFrameInfo();
    for (const f of [IPV4_TCP, VLAN_IPV4, QINQ_ARP, IPV6_UDP, IPV4_FRAG])
      for (let len = 0; len <= f.length; len++) assert.equal(typeof parseFrame(f, 0, len, fi), 'boolean');
  });

  test('fuzz: never throws and keeps offsets inside the frame for random input (seeded)', () => {
    const rand = prng(99);
    const int = (n: number) => Math.floor(rand() * n);
    const fi = newFrameInfo();
    const seeds = [IPV4_TCP, VLAN_IPV4, QINQ_ARP, IPV6_UDP, IPV4_FRAG];
    for (let i = 0; i < 5000; i++) {
      // Half mutated real frames (they reach deep branches), half pure noise.
      const base = seeds[int(seeds.length)] as Buffer;
      const buf = i % 2 ? Buffer.from(base) : Buffer.alloc(int(120));
      if (i % 2) for (let k = int(6); k >= 0; k--) buf[int(buf.length)] = int(256);
      else for (let k = 0; k < buf.length; k++) buf[k] = int(256);
      const off = int(4);
      const len = int(buf.length + 4);
      const ok = parseFrame(buf, off, len, fi);
      if (ok) {
        const end = off + len;
        assert.ok(end <= buf.length);
        assert.ok(fi.l3 >= off + 14 && fi.l3 <= end, `l3 ${fi.l3} outside [${off + 14}, ${end}]`);
        assert.ok(fi.l4 === -1 || (fi.l4 > fi.l3 && fi.l4 <= end), `l4 ${fi.l4} outside the frame`);
      }
    }
  });
});
