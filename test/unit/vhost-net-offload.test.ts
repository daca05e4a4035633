/**
 * The offload side of the vhost-user net device (src/net/vhost/net-offload.ts):
 * which feature bits are offered, what a guest's negotiated features allow,
 * transmitted virtio_net_hdr bytes read into OffloadMeta (byte-exact), the
 * received header written from it, and a seeded fuzz of the header reader.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import { bit } from '../../src/net/vhost/constants.js';
import { OFFERED_FEATURES } from '../../src/net/vhost/features.js';
import { OFFLOAD_FEATURES, OffF, VhostOffloads } from '../../src/net/vhost/net-offload.js';
import { prng } from '../helpers/prng.js';

const hex = (s: string) => Buffer.from(s, 'hex');
const ALL = OFFLOAD_FEATURES;
const GUEST_ONLY = bit(OffF.GUEST_CSUM) + bit(OffF.GUEST_TSO4) + bit(OffF.GUEST_TSO6);

function withFeatures(f: number): VhostOffloads {
  const o = new VhostOffloads();
  o.setFeatures(f);
  return o;
}

describe('vhost-user net offloads', () => {
  test('offers CSUM, GUEST_CSUM, TSO4/6 and ECN both ways, never UFO; the session offers them', () => {
    for (const b of [0, 1, 7, 8, 9, 11, 12, 13]) assert.equal(Math.floor(OFFLOAD_FEATURES / 2 ** b) % 2, 1, `bit ${b}`);
    for (const b of [10, 14]) assert.equal(Math.floor(OFFERED_FEATURES / 2 ** b) % 2, 0, `UFO bit ${b}`);
    assert.equal(Math.floor(OFFERED_FEATURES / 2 ** 0) % 2, 1);
  });

  test('takes offloads only with GUEST_CSUM, GUEST_TSO4 and GUEST_TSO6 all negotiated', () => {
    assert.equal(withFeatures(ALL).guestTakesOffloads, true);
    assert.equal(withFeatures(GUEST_ONLY).guestTakesOffloads, true);
    assert.equal(withFeatures(GUEST_ONLY - bit(OffF.GUEST_TSO6)).guestTakesOffloads, false);
    assert.equal(withFeatures(GUEST_ONLY - bit(OffF.GUEST_CSUM)).guestTakesOffloads, false);
    assert.equal(withFeatures(0).guestTakesOffloads, false);
    assert.equal(withFeatures(0).describe(), 'off');
    assert.equal(withFeatures(ALL).describe(), 'csum,tso4,tso6,ecn,guest_csum,guest_tso4,guest_tso6,guest_ecn');
  });

  test('reads a TSO4 header with NEEDS_CSUM byte for byte; a plain header gives no metadata', () => {
    const o = withFeatures(ALL);
    // flags NEEDS_CSUM, gso TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16, num_buffers 0
    const m = o.readTx(hex('01014200a805220010000000'), 0, 3000);
    assert.ok(m instanceof OffloadMeta);
    assert.deepEqual(
      [m.flags, m.gsoType, m.hdrLen, m.gsoSize, m.csumStart, m.csumOffset],
      [1, GSO_TCPV4, 66, 1448, 34, 16],
    );
    assert.equal(o.readTx(Buffer.alloc(12), 0, 3000), undefined);
    // DATA_VALID and unknown flag bits are ignored on transmit (virtio 1.2 §5.1.6.2.2).
    assert.equal(o.readTx(hex('fe0000000000000000000000'), 0, 3000), undefined);
    assert.equal(o.txGso, 1);
    assert.equal(o.txCsum, 1);
  });

  test('refuses headers using offloads that were not negotiated, or a checksum outside the frame', () => {
    const cases: [number, string, string][] = [
      [0, '01000000000022001000', 'NEEDS_CSUM without CSUM'],
      [bit(OffF.CSUM), '01010000a80522001000', 'TSO4 without HOST_TSO4'],
      [ALL - bit(OffF.HOST_TSO6), '01040000a80536001000', 'TSO6 without HOST_TSO6'],
      [ALL - bit(OffF.HOST_ECN), '01810000a80522001000', 'ECN without HOST_ECN'],
      [ALL, '01030000a80522000600', 'UFO'],
      [ALL, '01050000a80522000600', 'USO'],
      [ALL, '01090000a80522001000', 'unknown gso_type'],
      [ALL, '01000000000020011000', 'csum_start 288 in a 300-byte frame'],
    ];
    for (const [f, h, why] of cases) {
      const o = withFeatures(f);
      assert.equal(o.readTx(hex(h), 0, 300), null, why);
      assert.equal(o.badHeaders, 1, why);
      assert.match(o.reason, /virtio_net_hdr/);
    }
    const o = withFeatures(ALL);
    assert.ok(o.readTx(hex('01810000a80522001000'), 0, 300), 'TSO4 with ECN when HOST_ECN');
    assert.ok(o.readTx(hex('01000000000012011000'), 0, 300), 'csum at 274+16+2 = 292 fits');
  });

  test('writes the received header: metadata for an offloading guest, zeros otherwise', () => {
    const m = Object.assign(new OffloadMeta(), {
      flags: 1,
      gsoType: GSO_TCPV6,
      hdrLen: 86,
      gsoSize: 1428,
      csumStart: 54,
      csumOffset: 16,
    });
    const h = Buffer.alloc(12, 0xee);
    withFeatures(ALL).writeRx(h, 0, m);
    assert.equal(h.toString('hex'), '01045600940536001000eeee');
    withFeatures(ALL).writeRx(h, 2, undefined);
    assert.equal(h.toString('hex'), '010400000000000000000000');
    // Without GUEST_CSUM the flags must be zero (virtio 1.2 §5.1.6.4.1): an all-zero header.
    withFeatures(0).writeRx(h, 0, m);
    assert.equal(h.toString('hex', 0, 10), '00000000000000000000');
    // DATA_VALID passes when no completion is needed; csum fields are then zero.
    const dv = Object.assign(new OffloadMeta(), { flags: 2, csumStart: 34, csumOffset: 16 });
    withFeatures(ALL).writeRx(h, 0, dv);
    assert.equal(h.toString('hex', 0, 10), '02000000000000000000');
  });

  test('accepts TCP large segments whole, ECN only with GUEST_ECN, never UDP segmentation', () => {
    const tso = Object.assign(new OffloadMeta(), { flags: 1, gsoType: GSO_TCPV4, gsoSize: 1448 });
    const ecn = Object.assign(new OffloadMeta(), { flags: 1, gsoType: GSO_TCPV4 | GSO_ECN, gsoSize: 1448 });
    const uso = Object.assign(new OffloadMeta(), { flags: 1, gsoType: GSO_UDP_L4, gsoSize: 1000 });
    const csum = Object.assign(new OffloadMeta(), { flags: 1 });
    const all = withFeatures(ALL);
    assert.deepEqual(
      [tso, ecn, uso, csum].map((m) => all.accepts(m)),
      [true, true, false, true],
    );
    const noEcn = withFeatures(GUEST_ONLY);
    assert.deepEqual(
      [tso, ecn, uso, csum].map((m) => noEcn.accepts(m)),
      [true, false, false, true],
    );
    assert.equal(withFeatures(0).accepts(csum), false);
  });

  test('seeded fuzz: readTx never throws and returns metadata only for negotiated, in-frame headers', () => {
    const rnd = prng(0x5eed);
    const feats = [0, ALL, GUEST_ONLY, bit(OffF.CSUM), ALL - bit(OffF.HOST_ECN)];
    const h = Buffer.alloc(12);
    for (let i = 0; i < 20_000; i++) {
      const o = withFeatures(feats[i % feats.length] as number);
      for (let k = 0; k < 12; k++) h[k] = Math.floor(rnd() * 256);
      if (rnd() < 0.5) h[1] = [0, 1, 3, 4, 5, 0x81, 0x84][Math.floor(rnd() * 7)] as number;
      if (rnd() < 0.5) h[0] = Math.floor(rnd() * 4);
      const len = 14 + Math.floor(rnd() * 70_000);
      const m = o.readTx(h, 0, len);
      if (m === null) {
        assert.equal(o.badHeaders, 1);
        continue;
      }
      if (m === undefined) {
        assert.ok((h[0] as number) % 2 === 0 && h[1] === 0);
        continue;
      }
      assert.ok(m.active);
      if (m.flags & 1) assert.ok(m.csumStart + m.csumOffset + 2 <= len);
      if (m.isGso) assert.ok([GSO_TCPV4, GSO_TCPV6].includes(m.gsoType & ~GSO_ECN));
    }
  });
});
