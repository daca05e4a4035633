/**
 * The header writers of src/net/frame/ (Ethernet header, ARP/RARP packet) on
 * byte-exact frames, read back through the in-place accessors; the vhost-user
 * RARP announce built with them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  ARP_LEN,
  ARP_REQUEST,
  arpOp,
  arpSenderIp,
  arpSenderMac,
  arpTargetIp,
  RARP_REQUEST_REVERSE,
  writeArp,
} from '../../src/net/frame/arp.js';
import {
  BROADCAST_MAC,
  ETH_HLEN,
  ETHERTYPE_ARP,
  ETHERTYPE_RARP,
  etherType,
  macAt,
  writeEthHeader,
} from '../../src/net/frame/ethernet.js';
import { rarpFrame } from '../../src/net/vhost/net-device.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** An ARP request "who has 10.0.0.2, tell 10.0.0.1" from 02:00:00:00:00:01, as tcpdump -x shows it. */
const ARP_WHO_HAS = hex(`
  ffffffffffff 020000000001 0806
  0001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002`);

/** QEMU's announce for 52:54:00:12:34:56 (net/announce.c announce_self_create): RARP request reverse, 60 bytes. */
const QEMU_RARP = hex(`
  ffffffffffff 525400123456 8035
  0001 0800 06 04 0003 525400123456 00000000 525400123456 00000000
  000000000000000000000000000000000000`);

describe('frame header writers', () => {
  test('writes an Ethernet header and an ARP request byte for byte', () => {
    const f = Buffer.alloc(ETH_HLEN + ARP_LEN, 0xee);
    writeEthHeader(f, 0, BROADCAST_MAC, 0x0200_0000_0001, ETHERTYPE_ARP);
    writeArp(f, ETH_HLEN, ARP_REQUEST, 0x0200_0000_0001, 0x0a00_0001, 0, 0x0a00_0002);
    assert.equal(f.toString('hex'), ARP_WHO_HAS.toString('hex'));
  });

  test('writes at an offset and touches no byte outside the header it writes', () => {
    const f = Buffer.alloc(4 + ETH_HLEN + ARP_LEN + 4, 0xee);
    writeEthHeader(f, 4, BROADCAST_MAC, 0x0200_0000_0001, ETHERTYPE_ARP);
    writeArp(f, 4 + ETH_HLEN, ARP_REQUEST, 0x0200_0000_0001, 0x0a00_0001, 0, 0x0a00_0002);
    assert.equal(f.subarray(4, 4 + ETH_HLEN + ARP_LEN).toString('hex'), ARP_WHO_HAS.toString('hex'));
    assert.equal(f.subarray(0, 4).toString('hex'), 'eeeeeeee');
    assert.equal(f.subarray(-4).toString('hex'), 'eeeeeeee');
  });

  test('what the writers put the accessors read back, for any MACs, addresses and opcode', () => {
    const mac = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => macAt(Buffer.from(b), 0));
    const ip = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => Buffer.from(b).readUInt32BE(0));
    fc.assert(
      fc.property(
        mac,
        mac,
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        ip,
        mac,
        ip,
        (dst, src, type, op, sip, tmac, tip) => {
          const f = Buffer.alloc(ETH_HLEN + ARP_LEN);
          writeEthHeader(f, 0, dst, src, type);
          writeArp(f, ETH_HLEN, op, src, sip, tmac, tip);
          assert.equal(macAt(f, 0), dst);
          assert.equal(macAt(f, 6), src);
          assert.equal(etherType(f, 0), type);
          assert.equal(arpOp(f, ETH_HLEN), op);
          assert.equal(arpSenderMac(f, ETH_HLEN), src);
          assert.equal(arpSenderIp(f, ETH_HLEN), sip);
          assert.equal(macAt(f, ETH_HLEN + 18), tmac);
          assert.equal(arpTargetIp(f, ETH_HLEN), tip);
        },
      ),
    );
  });

  test('the vhost-user RARP announce is byte for byte the one QEMU sends after a migration', () => {
    const f = rarpFrame(hex('525400123456'));
    assert.equal(f.toString('hex'), QEMU_RARP.toString('hex'));
    assert.equal(etherType(f, 0), ETHERTYPE_RARP);
    assert.equal(arpOp(f, ETH_HLEN), RARP_REQUEST_REVERSE);
  });
});
