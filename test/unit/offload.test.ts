/**
 * Software segmentation and checksum completion (src/net/offload/). The
 * expected segments are byte-exact fixtures built by an independent
 * implementation (Python struct + its own RFC 1071 sum), and every output
 * checksum is verified again here with a naive sum over the pseudo-header.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { finishChecksum } from '../../src/net/offload/checksum.js';
import { OffloadReason, Segmenter } from '../../src/net/offload/segmenter.js';
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP,
  GSO_UDP_L4,
  OffloadMeta,
  readVnetHdr,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  writeVnetHdr,
} from '../../src/net/offload/vnet-hdr.js';
import { prng } from '../helpers/prng.js';

const hex = (s: string) => Buffer.from(s, 'hex');

// 10.0.0.1:40000 -> 10.0.0.2:5001, 20 payload bytes "A".."T", flags CWR|ACK|PSH|FIN, IP id 0x1234, DF;
// the TCP checksum field holds junk (0xdead): segmentation recomputes it.
const TCP4_IN =
  '52540000000252540000000108004500003c12344000400614860a0000010a0000029c401389000003e80102030450990200dead00004142434445464748494a4b4c4d4e4f5051525354';
// gso_size 8: three segments; CWR only on the first, PSH and FIN only on the last; id +1 per segment.
const TCP4_SEGS = [
  '52540000000252540000000108004500003012344000400614920a0000010a0000029c401389000003e80102030450900200d07d00004142434445464748',
  '52540000000252540000000108004500003012354000400614910a0000010a0000029c401389000003f00102030450100200b0d50000494a4b4c4d4e4f50',
  '52540000000252540000000108004500002c12364000400614940a0000010a0000029c401389000003f801020304501902003d57000051525354',
];
// fd00::1 -> fd00::2, seq 0xfffffffc (wraps), ACK|PSH, gso_size 12.
const TCP6_IN =
  '52540000000252540000000186dd6000000000280640fd000000000000000000000000000001fd0000000000000000000000000000029c401389fffffffc0102030450180200beef00004142434445464748494a4b4c4d4e4f5051525354';
const TCP6_SEGS = [
  '52540000000252540000000186dd6000000000200640fd000000000000000000000000000001fd0000000000000000000000000000029c401389fffffffc01020304501002005a4c00004142434445464748494a4b4c',
  '52540000000252540000000186dd60000000001c0640fd000000000000000000000000000001fd0000000000000000000000000000029c401389000000080102030450180200bea300004d4e4f5051525354',
];
// UDP 5353 -> 9999 over IPv4, USO with gso_size 10: two datagrams, each with its own length and checksum.
const UDP4_IN =
  '52540000000252540000000108004500003000074000401126b40a0000010a00000214e9270f001c11114142434445464748494a4b4c4d4e4f5051525354';
const UDP4_SEGS = [
  '52540000000252540000000108004500002600074000401126be0a0000010a00000214e9270f001255704142434445464748494a',
  '52540000000252540000000108004500002600084000401126bd0a0000010a00000214e9270f0012233e4b4c4d4e4f5051525354',
];
// UDP over IPv6 with NEEDS_CSUM: the field holds the pseudo-header sum (0xfa31), as Linux leaves it.
const CSUM6_IN =
  '52540000000252540000000186dd60000000001c1140fd000000000000000000000000000001fd00000000000000000000000000000214e9270f001cfa314142434445464748494a4b4c4d4e4f5051525354';
const CSUM6_OUT =
  '52540000000252540000000186dd60000000001c1140fd000000000000000000000000000001fd00000000000000000000000000000214e9270f001ce2c84142434445464748494a4b4c4d4e4f5051525354';

function meta(fields: Partial<OffloadMeta>): OffloadMeta {
  return Object.assign(new OffloadMeta(), fields);
}

function segments(seg: Segmenter, frame: Buffer, m: OffloadMeta): string[] {
  assert.ok(seg.start(frame, 0, frame.length, m), `refused: reason ${seg.reason}`);
  const out: string[] = [];
  for (let l = seg.next(); l > 0; l = seg.next()) out.push(seg.out.toString('hex', 0, l));
  return out;
}

/** Naive, independent check of one frame's IPv4 header and TCP/UDP checksums; throws on a bad one. */
function verifyChecksums(f: Buffer): void {
  const sum = (b: Buffer) => {
    let s = 0;
    for (let i = 0; i < b.length; i += 2) s += (b[i] as number) * 256 + (b[i + 1] ?? 0);
    while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
    return s;
  };
  let l3 = 14;
  let type = f.readUInt16BE(12);
  if (type === 0x8100) {
    type = f.readUInt16BE(16);
    l3 = 18;
  }
  let pseudo: Buffer;
  let l4: number;
  let proto: number;
  if (type === 0x0800) {
    const ihl = ((f[l3] as number) & 15) * 4;
    assert.equal(sum(f.subarray(l3, l3 + ihl)), 0xffff, 'IPv4 header checksum');
    proto = f[l3 + 9] as number;
    l4 = l3 + ihl;
    assert.equal(f.readUInt16BE(l3 + 2), f.length - l3, 'IPv4 total length');
    pseudo = Buffer.concat([
      f.subarray(l3 + 12, l3 + 20),
      Buffer.from([0, proto, (f.length - l4) >> 8, f.length - l4]),
    ]);
  } else {
    proto = f[l3 + 6] as number;
    l4 = l3 + 40;
    assert.equal(f.readUInt16BE(l3 + 4), f.length - l4, 'IPv6 payload length');
    const len = Buffer.alloc(8);
    len.writeUInt32BE(f.length - l4, 0);
    len[7] = proto;
    pseudo = Buffer.concat([f.subarray(l3 + 8, l3 + 40), len]);
  }
  if (proto === 17) assert.equal(f.readUInt16BE(l4 + 4), f.length - l4, 'UDP length');
  assert.equal(sum(Buffer.concat([pseudo, f.subarray(l4)])), 0xffff, `${proto === 6 ? 'TCP' : 'UDP'} checksum`);
}

describe('Segmenter', () => {
  const seg = new Segmenter(70_000);

  test('cuts a TCP/IPv4 large segment into gso_size segments byte-exactly (seq, id, flags, checksums)', () => {
    const out = segments(seg, hex(TCP4_IN), meta({ gsoType: GSO_TCPV4, gsoSize: 8, flags: 1, csumStart: 34 }));
    assert.deepEqual(out, TCP4_SEGS);
    assert.equal(seg.hdrLen, 54);
    for (const s of out) verifyChecksums(hex(s));
  });

  test('cuts a TCP/IPv6 large segment, the sequence number wrapping past 2^32', () => {
    const out = segments(seg, hex(TCP6_IN), meta({ gsoType: GSO_TCPV6 | GSO_ECN, gsoSize: 12, flags: 1 }));
    assert.deepEqual(out, TCP6_SEGS);
    for (const s of out) verifyChecksums(hex(s));
  });

  test('cuts a UDP/IPv4 datagram train (USO) with a length and checksum per datagram', () => {
    const out = segments(seg, hex(UDP4_IN), meta({ gsoType: GSO_UDP_L4, gsoSize: 10 }));
    assert.deepEqual(out, UDP4_SEGS);
    for (const s of out) verifyChecksums(hex(s));
  });

  test('completes a partial checksum (NEEDS_CSUM) from csum_start to the end of the frame', () => {
    const m = meta({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 54, csumOffset: 6 });
    const input = hex(CSUM6_IN);
    assert.deepEqual(segments(seg, input, m), [CSUM6_OUT]);
    assert.equal(input.toString('hex'), CSUM6_IN, 'the input frame is left as it was');
    verifyChecksums(hex(CSUM6_OUT));
  });

  test('a large segment that fits in one segment comes out as one complete frame', () => {
    const out = segments(seg, hex(TCP4_IN), meta({ gsoType: GSO_TCPV4, gsoSize: 1400 }));
    assert.equal(out.length, 1);
    const f = hex(out[0] as string);
    assert.equal(f.length, hex(TCP4_IN).length);
    assert.equal(f[47], 0x99, 'flags kept: it is the first and the last segment');
    verifyChecksums(f);
  });

  test('segments a frame with a guest 802.1Q tag, keeping the tag in every segment', () => {
    const tag = (h: string) => `${h.slice(0, 24)}81000064${h.slice(24)}`;
    const out = segments(seg, hex(tag(TCP4_IN)), meta({ gsoType: GSO_TCPV4, gsoSize: 8 }));
    assert.deepEqual(out, TCP4_SEGS.map(tag));
  });

  test('refuses bad metadata and headers with a reason, never throwing', () => {
    const t4 = hex(TCP4_IN);
    const cases: [string, Buffer, Partial<OffloadMeta>, number][] = [
      ['unknown gso_type', t4, { gsoType: 9, gsoSize: 8 }, OffloadReason.GSO_TYPE],
      ['UFO', hex(UDP4_IN), { gsoType: GSO_UDP, gsoSize: 8 }, OffloadReason.GSO_TYPE],
      ['gso_size 0', t4, { gsoType: GSO_TCPV4, gsoSize: 0 }, OffloadReason.GSO_SIZE],
      ['TCPV6 on an IPv4 frame', t4, { gsoType: GSO_TCPV6, gsoSize: 8 }, OffloadReason.L3],
      ['USO on a TCP frame', t4, { gsoType: GSO_UDP_L4, gsoSize: 8 }, OffloadReason.L3],
      ['truncated IP header', t4.subarray(0, 30), { gsoType: GSO_TCPV4, gsoSize: 8 }, OffloadReason.L3],
      ['truncated TCP header', t4.subarray(0, 50), { gsoType: GSO_TCPV4, gsoSize: 8 }, OffloadReason.L4],
      ['checksum beyond the frame', t4, { flags: 1, csumStart: 80, csumOffset: 16 }, OffloadReason.CSUM_RANGE],
      ['checksum field past the end', t4, { flags: 1, csumStart: 34, csumOffset: 40 }, OffloadReason.CSUM_RANGE],
      [
        'large segment with its checksum field past the end',
        t4,
        { flags: 1, gsoType: GSO_TCPV4, gsoSize: 8, csumStart: 34, csumOffset: 40 },
        OffloadReason.CSUM_RANGE,
      ],
    ];
    const frag = Buffer.from(t4);
    frag.writeUInt16BE(0x2000, 20); // MF: an IPv4 fragment
    cases.push(['IPv4 fragment', frag, { gsoType: GSO_TCPV4, gsoSize: 8 }, OffloadReason.L3]);
    const doff = Buffer.from(t4);
    doff[46] = 0x30; // TCP data offset 12 bytes
    cases.push(['TCP data offset below 5', doff, { gsoType: GSO_TCPV4, gsoSize: 8 }, OffloadReason.L4]);
    const small = new Segmenter(60);
    assert.equal(small.start(t4, 0, t4.length, meta({ gsoType: GSO_TCPV4, gsoSize: 8 })), false);
    assert.equal(small.reason, OffloadReason.GSO_SIZE, 'segments beyond the largest frame');
    for (const [what, frame, fields, reason] of cases) {
      assert.equal(seg.start(frame, 0, frame.length, meta(fields)), false, what);
      assert.equal(seg.reason, reason, what);
      assert.equal(seg.next(), 0, `${what}: nothing to write`);
    }
  });

  test('fuzz: 5000 seeded mutations of headers and metadata never throw; what is accepted segments soundly', () => {
    const rand = prng(0x0ff1_0ad);
    const bases: [Buffer, number][] = [
      [hex(TCP4_IN), GSO_TCPV4],
      [hex(TCP6_IN), GSO_TCPV6],
      [hex(UDP4_IN), GSO_UDP_L4],
      [hex(CSUM6_IN), GSO_NONE],
    ];
    const small = new Segmenter(200);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const [base, type] = bases[Math.floor(rand() * bases.length)] as [Buffer, number];
      const f = Buffer.from(
        base.subarray(0, Math.max(0, base.length - Math.floor(rand() * 3) * Math.floor(rand() * 40))),
      );
      for (let k = Math.floor(rand() * 4); k > 0; k--) f[Math.floor(rand() * f.length)] = Math.floor(rand() * 256);
      const m = meta({
        gsoType: rand() < 0.8 ? type : Math.floor(rand() * 256),
        gsoSize: rand() < 0.8 ? 1 + Math.floor(rand() * 30) : Math.floor(rand() * 70_000),
        flags: Math.floor(rand() * 4),
        csumStart: rand() < 0.5 ? 54 : Math.floor(rand() * 70_000),
        csumOffset: rand() < 0.5 ? 6 : Math.floor(rand() * 70_000),
        hdrLen: Math.floor(rand() * 70_000),
      });
      const s = rand() < 0.5 ? seg : small;
      if (!s.start(f, 0, f.length, m)) {
        assert.notEqual(s.reason, OffloadReason.OK);
        continue;
      }
      accepted++;
      let n = 0;
      let payload = 0;
      for (let l = s.next(); l > 0; l = s.next()) {
        n++;
        assert.ok(l <= s.out.length);
        if (m.isGso) {
          assert.ok(l - s.hdrLen <= m.gsoSize);
          payload += l - s.hdrLen;
          // Only frames whose IP header survived the mutations can be checked end to end.
          if (f.readUInt16BE(12) === 0x0800 && (f[14] as number) === 0x45) verifyChecksums(s.out.subarray(0, l));
        }
      }
      assert.equal(n, s.segments);
      if (m.isGso) assert.equal(payload, f.length - s.hdrLen);
    }
    assert.ok(accepted > 500, `only ${accepted} of 5000 accepted: the fuzz does not reach segmentation`);
  });
});

describe('virtio_net_hdr', () => {
  test('reads and writes the little-endian header byte-exactly', () => {
    const wire = hex('0104360000051a00100000ff');
    const m = new OffloadMeta();
    readVnetHdr(wire, 0, m);
    assert.deepEqual(
      { ...m },
      { flags: 1, gsoType: GSO_TCPV6, hdrLen: 0x36, gsoSize: 0x500, csumStart: 0x1a, csumOffset: 16 },
    );
    assert.equal(m.active, true);
    const out = Buffer.alloc(12, 0xee);
    writeVnetHdr(m, out, 0, 12);
    assert.equal(out.toString('hex'), '0104360000051a0010000000');
    writeVnetHdr(undefined, out, 0, 12);
    assert.equal(out.toString('hex'), '000000000000000000000000');
    readVnetHdr(hex('0200000000000000000000'), 0, m);
    assert.equal(m.active, false, 'DATA_VALID alone asks for no work');
  });

  test('finishChecksum folds every carry and sends 0 as 0xffff', () => {
    assert.equal(finishChecksum(hex('ffffffff01'), 0, 5), 0xfeff);
    assert.equal(finishChecksum(hex('0000'), 0, 2), 0xffff);
  });
});
