/**
 * Receive coalescing of the VXLAN transport (vxlan-gro.ts): frames cut from
 * one TCP segment merge back into it, with offload metadata that the
 * Segmenter cuts into the same frames again; anything else passes unchanged
 * and in order; fuzzed frames never throw.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fold, sum16 } from '../../src/net/offload/checksum.js';
import { Segmenter } from '../../src/net/offload/segmenter.js';
import { GSO_TCPV4, OffloadMeta, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../src/net/offload/vnet-hdr.js';
import { TcpCoalescer } from '../../src/net/overlay/vxlan-gro.js';
import { prng } from '../helpers/prng.js';

// 10.0.0.1:40000 -> 10.0.0.2:5001, ACK|PSH, IP id 0x1234, DF, 12 bytes of TCP options (NOP NOP timestamp).
const HDR =
  '525400000002525400000001080045000000123440004006000' +
  '00a0000010a0000029c401389000003e80102030480180200000000000101080a0000000100000002';

/** A large TCPv4 segment of `pay` payload bytes with NEEDS_CSUM metadata, as a vnet_hdr TAP gives it. */
function tso(pay: number, mss: number, seq = 1000, flags = 0x18): { frame: Buffer; meta: OffloadMeta } {
  const h = Buffer.from(HDR.replace(/\s/g, ''), 'hex');
  h.writeUInt32BE(seq, 38);
  h[47] = flags;
  const frame = Buffer.alloc(h.length + pay);
  h.copy(frame);
  for (let i = 0; i < pay; i++) frame[h.length + i] = (i * 7) & 0xff;
  frame.writeUInt16BE(frame.length - 14, 16);
  frame.writeUInt16BE(fold(sum16(frame, 26, 34, 6 + frame.length - 34)), 34 + 16);
  const meta = Object.assign(new OffloadMeta(), {
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: GSO_TCPV4,
    hdrLen: h.length,
    gsoSize: mss,
    csumStart: 34,
    csumOffset: 16,
  });
  return { frame, meta };
}

function cut(frame: Buffer, meta: OffloadMeta): Buffer[] {
  const seg = new Segmenter(70_000);
  assert.ok(seg.start(frame, 0, frame.length, meta), `refused: ${seg.reason}`);
  const out: Buffer[] = [];
  for (let l = seg.next(); l > 0; l = seg.next()) out.push(Buffer.from(seg.out.subarray(0, l)));
  return out;
}

type Out = { ch: string; vni: number; frame: Buffer; meta: OffloadMeta | undefined };

function coalescer(): { c: TcpCoalescer<string>; got: Out[] } {
  const got: Out[] = [];
  const c = new TcpCoalescer<string>((ch, vni, buf, off, len, meta) => {
    got.push({
      ch,
      vni,
      frame: Buffer.from(buf.subarray(off, off + len)),
      meta: meta && Object.assign(new OffloadMeta(), meta),
    });
  });
  return { c, got };
}

describe('VXLAN receive coalescing', () => {
  test('merges the frames of one cut TCP segment into one large segment that cuts back into the same frames', () => {
    const { frame, meta } = tso(45 * 1398 + 300, 1398);
    const frames = cut(frame, meta);
    assert.equal(frames.length, 46);
    const { c, got } = coalescer();
    for (const f of frames) c.push('a', 7, f, 0, f.length);
    c.flush();
    assert.equal(got.length, 1);
    const m = got[0]?.meta as OffloadMeta;
    assert.deepEqual(
      [m.gsoType, m.gsoSize, m.hdrLen, m.flags, m.csumStart, m.csumOffset],
      [GSO_TCPV4, 1398, 66, VIRTIO_NET_HDR_F_NEEDS_CSUM, 34, 16],
    );
    assert.deepEqual(cut(got[0]?.frame as Buffer, m), frames);
    assert.deepEqual([c.merged, c.segments], [46, 1]);
  });

  test('keeps frames apart across channels, VNIs, a gap in the sequence, a bad checksum, and non-TCP frames, in order', () => {
    const { frame, meta } = tso(6 * 100, 100);
    const f = cut(frame, meta);
    const bad = Buffer.from(f[3] as Buffer);
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 1, bad.length - 1);
    const arp = Buffer.from('ffffffffffff525400000001080600010800060400010000000000000a000001', 'hex');
    const { c, got } = coalescer();
    const seq: [string, number, Buffer][] = [
      ['a', 1, f[0] as Buffer],
      ['a', 1, f[1] as Buffer],
      ['b', 1, f[2] as Buffer], // another channel
      ['b', 2, f[3] as Buffer], // another VNI
      ['b', 2, bad], // corrupted: passes alone (the receiver's stack drops it)
      ['b', 2, arp],
      ['b', 2, f[5] as Buffer], // f[4] missing: a gap
    ];
    for (const [ch, vni, x] of seq) c.push(ch, vni, x, 0, x.length);
    c.flush();
    assert.deepEqual(
      got.map((g) => [g.ch, g.vni, g.frame.length, g.meta === undefined]),
      [
        ['a', 1, 66 * 2 + 200 - 66, false],
        ['b', 1, 166, true],
        ['b', 2, 166, true],
        ['b', 2, 166, true],
        ['b', 2, arp.length, true],
        ['b', 2, 166, true],
      ],
    );
    assert.ok(got[2]?.frame.equals(f[3] as Buffer) && got[3]?.frame.equals(bad));
  });

  test('a PSH or a shorter payload ends a segment; the IP length stays within 65535', () => {
    const a = tso(40 * 1400, 1400, 1000, 0x10); // no PSH
    const b = tso(20 * 1400 + 10, 1400, 1000 + 40 * 1400); // PSH on its last frame
    const f = [...cut(a.frame, a.meta), ...cut(b.frame, b.meta)];
    const { c, got } = coalescer();
    for (const x of f) c.push('a', 1, x, 0, x.length);
    c.flush();
    // 46 payloads of 1400 fill an IPv4 packet; the rest (14 full, then 10 bytes) is the second segment.
    assert.deepEqual(
      got.map((g) => g.frame.length - 66),
      [46 * 1400, 14 * 1400 + 10],
    );
    assert.deepEqual(cut(got[1]?.frame as Buffer, got[1]?.meta as OffloadMeta), f.slice(46));
  });

  test('keeps apart frames whose TCP options, ack or addresses differ from the first', () => {
    const { frame, meta } = tso(4 * 100, 100, 1000, 0x10);
    const f = cut(frame, meta);
    /** f[1] with a byte changed at `at` and its checksum made right again. */
    const changed = (at: number): Buffer => {
      const x = Buffer.from(f[1] as Buffer);
      x.writeUInt8((x.readUInt8(at) + 1) & 0xff, at);
      x.writeUInt16BE(0, 50);
      x.writeUInt16BE(~fold(sum16(x, 34, x.length, sum16(x, 26, 34, 6 + x.length - 34))) & 0xffff, 50);
      return x;
    };
    for (const [what, at] of [
      ['timestamp option', 66 - 1],
      ['ack', 34 + 8 + 3],
      ['destination address', 14 + 19],
    ] as const) {
      const { c, got } = coalescer();
      const x = changed(at);
      for (const y of [f[0] as Buffer, x]) c.push('a', 1, y, 0, y.length);
      c.flush();
      assert.equal(got.length, 2, what);
      assert.ok(got[1]?.frame.equals(x), what);
    }
  });

  test('never throws on fuzzed frames, and delivers each pushed frame once (merged or not)', () => {
    const rnd = prng(1071);
    const { frame, meta } = tso(8 * 200, 200);
    const base = cut(frame, meta);
    const { c, got } = coalescer();
    let pushedBytes = 0;
    for (let i = 0; i < 3000; i++) {
      const src = base[Math.floor(rnd() * base.length)] as Buffer;
      const x = Buffer.from(src.subarray(0, Math.floor(rnd() * (src.length + 1))));
      const flips = Math.floor(rnd() * 3);
      for (let k = 0; k < flips && x.length > 0; k++) x[Math.floor(rnd() * x.length)] = Math.floor(rnd() * 256);
      c.push('a', 1, x, 0, x.length);
      pushedBytes += x.length;
      if (rnd() < 0.1) c.flush();
    }
    c.flush();
    assert.ok(got.length > 0 && c.merged <= 3000);
    assert.ok(got.reduce((n, g) => n + g.frame.length, 0) <= pushedBytes);
  });
});
