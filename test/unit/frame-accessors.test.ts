/**
 * The in-place header accessors of src/net/frame/ on byte-exact frames:
 * Ethernet MACs and EtherType, 802.1Q tags, IPv4/IPv6 fields and DSCP, ARP.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ARP_LEN, ARP_REQUEST, arpOp, arpSenderIp, arpSenderMac, arpTargetIp } from '../../src/net/frame/arp.js';
import {
  dstHi,
  dstLo,
  ETH_HLEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_VLAN,
  etherType,
  isGroupDst,
  isGroupHi,
  macAt,
  macOf,
  srcHi,
  srcLo,
  writeMac,
} from '../../src/net/frame/ethernet.js';
import {
  dscpOf,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ipv4Dscp,
  ipv4FragOffset,
  ipv4HeaderOk,
  ipv4Id,
  ipv4Ihl,
  ipv4IsFragment,
  ipv4Proto,
  ipv4TotalLen,
  ipv6Dscp,
  ipv6HeaderOk,
  ipv6Next,
  ipv6PayloadLen,
} from '../../src/net/frame/ip.js';
import {
  innerEtherType,
  isTagged,
  l3Offset,
  pushTag,
  stripTag,
  VLAN_HLEN,
  vlanId,
  vlanPcp,
  vlanTci,
} from '../../src/net/frame/vlan.js';
import { formatMac, isGroupMac, parseMac } from '../../src/util/mac.js';

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

describe('Ethernet accessors', () => {
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

  test('read the destination and source MACs as 16+32-bit halves at an offset', () => {
    const buf = Buffer.concat([Buffer.alloc(3, 0xee), IPV4_TCP]);
    assert.deepEqual([dstHi(buf, 3), dstLo(buf, 3), srcHi(buf, 3), srcLo(buf, 3)], [0x5254, 2, 0x5254, 1]);
    assert.equal(macOf(dstHi(buf, 3), dstLo(buf, 3)), 0x5254_0000_0002);
    assert.equal(etherType(buf, 3), ETHERTYPE_IPV4);
  });

  test('tell group from unicast addresses by the I/G bit', () => {
    assert.equal(isGroupMac(0xffff_ffff_ffff), true);
    assert.equal(isGroupMac(0x0100_5e00_0001), true);
    assert.equal(isGroupMac(0x5254_0000_0001), false);
    assert.equal(isGroupDst(hex('333300000001'), 0), true);
    assert.equal(isGroupDst(hex('525400000001'), 0), false);
    assert.equal(isGroupHi(0x0100), true);
    assert.equal(isGroupHi(0x5254), false);
  });
});

describe('802.1Q accessors', () => {
  test('read the outer tag of a tagged frame and the EtherType and L3 offset behind it', () => {
    assert.equal(isTagged(IPV4_TCP, 0), false);
    assert.equal(l3Offset(IPV4_TCP, 0, IPV4_TCP.length), ETH_HLEN);
    assert.equal(isTagged(VLAN_IPV4, 0), true);
    assert.deepEqual([vlanTci(VLAN_IPV4, 0), vlanId(VLAN_IPV4, 0), vlanPcp(VLAN_IPV4, 0)], [0xa064, 100, 5]);
    assert.equal(l3Offset(VLAN_IPV4, 0, VLAN_IPV4.length), ETH_HLEN + VLAN_HLEN);
    assert.equal(innerEtherType(VLAN_IPV4, ETH_HLEN + VLAN_HLEN), ETHERTYPE_IPV4);
  });

  test('walk an S-tag then a C-tag (QinQ) to the ARP header', () => {
    assert.equal(vlanId(QINQ_ARP, 0), 7);
    const l3 = l3Offset(QINQ_ARP, 0, QINQ_ARP.length);
    assert.equal(l3, 22);
    assert.equal(innerEtherType(QINQ_ARP, l3), ETHERTYPE_ARP);
    assert.equal(QINQ_ARP.length - l3, ARP_LEN);
    assert.equal(arpOp(QINQ_ARP, l3), ARP_REQUEST);
    assert.equal(arpSenderMac(QINQ_ARP, l3), 0x5254_0000_0001);
    assert.deepEqual([arpSenderIp(QINQ_ARP, l3), arpTargetIp(QINQ_ARP, l3)], [0x0a00_0001, 0x0a00_0002]);
  });

  test('give no L3 offset for a runt or a tag cut off', () => {
    assert.equal(l3Offset(IPV4_TCP, 0, 13), -1);
    assert.equal(l3Offset(VLAN_IPV4, 0, 17), -1);
    assert.equal(l3Offset(QINQ_ARP, 0, 21), -1);
  });

  test('insert a tag after the MACs and strip it again in place', () => {
    const out = Buffer.alloc(IPV4_TCP.length + VLAN_HLEN);
    assert.equal(pushTag(IPV4_TCP, 0, IPV4_TCP.length, 100, out), IPV4_TCP.length + VLAN_HLEN);
    assert.equal(out.subarray(0, 18).toString('hex'), '525400000002525400000001810000640800');
    assert.equal(etherType(out, 0), ETHERTYPE_VLAN);
    assert.equal(vlanId(out, 0), 100);
    const off = stripTag(out, 0);
    assert.equal(off, VLAN_HLEN);
    assert.deepEqual(out.subarray(off), IPV4_TCP);
  });
});

describe('IP accessors', () => {
  test('read an IPv4 TCP header: IHL, DSCP, length, id, fragment, protocol', () => {
    const l3 = ETH_HLEN;
    assert.equal(ipv4HeaderOk(IPV4_TCP, l3, IPV4_TCP.length), true);
    assert.deepEqual(
      [ipv4Ihl(IPV4_TCP, l3), ipv4Dscp(IPV4_TCP, l3), ipv4TotalLen(IPV4_TCP, l3), ipv4Id(IPV4_TCP, l3)],
      [20, 46, 60, 0],
    );
    assert.deepEqual([ipv4FragOffset(IPV4_TCP, l3), ipv4IsFragment(IPV4_TCP, l3)], [0, false]);
    assert.equal(ipv4Proto(IPV4_TCP, l3), IPPROTO_TCP);
    assert.equal(dscpOf(IPV4_TCP, 0, IPV4_TCP.length), 46);
    assert.equal(dscpOf(VLAN_IPV4, 0, VLAN_IPV4.length), 46);
  });

  test('see a non-first IPv4 fragment', () => {
    assert.deepEqual([ipv4FragOffset(IPV4_FRAG, 14), ipv4IsFragment(IPV4_FRAG, 14)], [185, true]);
    assert.equal(ipv4Proto(IPV4_FRAG, 14), IPPROTO_UDP);
  });

  test('read an IPv6 header: traffic class DSCP, payload length, next header', () => {
    assert.equal(ipv6HeaderOk(IPV6_UDP, 14, IPV6_UDP.length), true);
    assert.deepEqual([ipv6Dscp(IPV6_UDP, 14), ipv6PayloadLen(IPV6_UDP, 14), ipv6Next(IPV6_UDP, 14)], [46, 8, 17]);
    assert.equal(dscpOf(IPV6_UDP, 0, IPV6_UDP.length), 46);
  });

  test('refuse truncated or wrong-version headers, and give no DSCP for ARP', () => {
    assert.equal(ipv4HeaderOk(IPV4_TCP, 14, 30), false);
    assert.equal(ipv6HeaderOk(IPV6_UDP, 14, 50), false);
    const bad = Buffer.from(IPV4_TCP);
    bad[14] = 0x44;
    assert.equal(ipv4HeaderOk(bad, 14, bad.length), false);
    bad[14] = 0x65;
    assert.equal(dscpOf(bad, 0, bad.length), -1);
    assert.equal(dscpOf(QINQ_ARP, 0, QINQ_ARP.length), -1);
    assert.equal(dscpOf(IPV4_TCP, 0, 15), -1);
  });
});
