/** VXLAN headers (RFC 7348 §5): byte-exact, and fuzzed datagrams never throw. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseVxlan, VXLAN_HLEN, writeVxlan } from '../../src/net/overlay/vxlan-transport.js';
import { prng } from '../helpers/prng.js';

const ETH = 'ffffffffffff52540000000108060001';

describe('VXLAN header', () => {
  test('is flags 0x08, 24 reserved bits, the VNI, 8 reserved bits', () => {
    const b = Buffer.alloc(8);
    writeVxlan(b, 0, 0x123456);
    assert.equal(b.toString('hex'), '0800000012345600');
  });

  test('parses the VNI and ignores reserved bits (§5: ignored on receipt)', () => {
    const d = Buffer.from(`0c0000ff123456ab${ETH}`, 'hex');
    assert.equal(parseVxlan(d, d.length), 0x123456);
  });

  test('refuses a datagram without the I flag, or too short for a header and an Ethernet header', () => {
    const noI = Buffer.from(`0000000000006400${ETH}`, 'hex');
    assert.equal(parseVxlan(noI, noI.length), -1);
    const short = Buffer.from('0800000000006400ffffffffffff', 'hex');
    assert.equal(parseVxlan(short, short.length), -1);
  });

  test('never throws on random datagrams (seeded fuzz)', () => {
    const rnd = prng(4789);
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(rnd() * 64);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = Math.floor(rnd() * 256);
      const vni = parseVxlan(b, len);
      assert.ok(vni === -1 || (vni >= 0 && vni <= 0xffffff && len >= VXLAN_HLEN + 14));
    }
  });
});
