/** VXLAN headers (RFC 7348 §5): byte-exact, and fuzzed datagrams never throw; the flow hash of the source port. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { flowHash } from '../../src/net/overlay/vxlan-flow.js';
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

/** An IPv4/TCP frame between 10.0.0.1:sport and 10.0.0.2:dport; `frag` sets the fragment field. */
function tcp4(sport: number, dport: number, frag = 0, vlan = false): Buffer {
  const hex =
    `525400000002525400000001${vlan ? '81000064' : ''}0800` +
    `4500002800004000400600000a0000010a000002${sport.toString(16).padStart(4, '0')}${dport.toString(16).padStart(4, '0')}` +
    '00000001000000005010ffff00000000';
  const b = Buffer.from(hex, 'hex');
  b.writeUInt16BE(frag, (vlan ? 18 : 14) + 6);
  return b;
}

describe('VXLAN flow hash (the source port, RFC 7348 §5)', () => {
  test('is the same for every frame of one flow and differs between flows of one host pair', () => {
    const a = tcp4(40000, 80);
    const a2 = tcp4(40000, 80);
    a2.fill(0x55, 54 - 10); // payload and TCP sequence differ
    assert.equal(flowHash(a, 0, a.length), flowHash(a2, 0, a2.length));
    const hashes = new Set<number>();
    for (let p = 40000; p < 40064; p++) {
      const f = tcp4(p, 80);
      hashes.add(flowHash(f, 0, f.length) % 8);
    }
    assert.equal(hashes.size, 8, '64 flows spread over all 8 sockets');
  });

  test('ignores the ports of IPv4 fragments, looks through one 802.1Q tag, and reads only inside the frame', () => {
    const f1 = tcp4(1, 2, 0x2000);
    const f2 = tcp4(3, 4, 0x0010);
    assert.equal(flowHash(f1, 0, f1.length), flowHash(f2, 0, f2.length));
    const t = tcp4(5, 6, 0, true);
    const u = tcp4(5, 6, 0, true);
    u.writeUInt16BE(7, 18 + 20);
    assert.notEqual(flowHash(t, 0, t.length), flowHash(u, 0, u.length));
    // Within a larger buffer: the same hash at an offset.
    const big = Buffer.concat([Buffer.alloc(7, 0xee), t, Buffer.alloc(9, 0xee)]);
    assert.equal(flowHash(big, 7, t.length), flowHash(t, 0, t.length));
  });

  test('never throws on random frames of any length (seeded fuzz)', () => {
    const rnd = prng(7348);
    const ipv = [0x08, 0x86, 0x81];
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(rnd() * 80);
      const b = Buffer.alloc(len + 8);
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
      if (len > 13) b[12] = ipv[Math.floor(rnd() * 3)] as number;
      if (len > 13 && b[12] === 0x86) b[13] = 0xdd;
      if (len > 13 && b[12] === 0x81) b[13] = 0x00;
      const h = flowHash(b, 4, len);
      assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff);
    }
  });
});

describe('overlay.vxlan.source_ports', () => {
  const cfg = (ports: string) =>
    parseConfig(
      `host: { id: a, control: /tmp/x.sock, state_dir: /tmp/x }\noverlay: { plain: true, vxlan: { listen: "udp:0.0.0.0:4789"${ports} } }\n`,
    );

  test('is absent by default (the transport uses 49152-65535) and takes a range', () => {
    assert.equal(cfg('').overlay?.vxlan?.source_ports, undefined);
    assert.equal(cfg('').overlay?.vxlan?.offloads, true);
    assert.equal(cfg(', offloads: false').overlay?.vxlan?.offloads, false);
    assert.deepEqual(cfg(', source_ports: { min: 4789, max: 4789 }').overlay?.vxlan?.source_ports, {
      min: 4789,
      max: 4789,
    });
  });

  test('refuses a range with min above max, or ports outside 1-65535, naming the field', () => {
    for (const bad of ['{ min: 600, max: 500 }', '{ min: 0, max: 10 }', '{ min: 1, max: 70000 }', '{ min: 1 }']) {
      try {
        cfg(`, source_ports: ${bad}`);
        assert.fail(`accepted ${bad}`);
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'ERR_CONFIG_INVALID', String(err));
        assert.match(String(err), /overlay\.vxlan\.source_ports/);
      }
    }
  });
});
