/**
 * Link record framing (net/overlay/codec.ts): byte-exact records, records
 * split anywhere across chunks, and fuzzed input that never throws.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import {
  DecodeResult,
  encodeControl,
  HEADER_LEN,
  LinkDecoder,
  MAX_FRAME_BODY,
  OFFLOAD_HLEN,
  TYPE_FRAME,
  TYPE_FRAME_OFFLOAD,
  writeHeader,
  writeOffloadHeader,
} from '../../src/net/overlay/codec.js';
import { parseHello } from '../../src/net/overlay/hello.js';
import { tsoMeta } from '../helpers/meta-port.js';
import { prng } from '../helpers/prng.js';

type Rec = ['f', number, string] | ['c', string];

function recorder() {
  const out: Rec[] = [];
  const d = new LinkDecoder({
    frame: (vni, buf, off, len) => out.push(['f', vni, buf.toString('hex', off, off + len)]),
    control: (buf, off, len) => out.push(['c', buf.toString('utf8', off, off + len)]),
  });
  return { d, out };
}

function frameRecord(vni: number, frame: Buffer): Buffer {
  const b = Buffer.alloc(HEADER_LEN + frame.length);
  writeHeader(b, 0, frame.length, TYPE_FRAME, vni);
  frame.copy(b, HEADER_LEN);
  return b;
}

const ARP = 'ffffffffffff525400000001080600010800060400015254000000010a000001000000000000' + '0a000002';

describe('link record framing', () => {
  test('a frame record is length, type 1 and the 24-bit VNI, big-endian, then the frame', () => {
    const rec = frameRecord(0x123456, Buffer.from(ARP, 'hex'));
    assert.equal(rec.toString('hex', 0, 8), '0000002a' + '01' + '123456');
    const { d, out } = recorder();
    assert.equal(d.push(rec), DecodeResult.OK);
    assert.deepEqual(out, [['f', 0x123456, ARP]]);
  });

  test('a control record is type 2 with VNI 0 and a JSON body', () => {
    const rec = encodeControl({ type: 'ping', t: 1 });
    assert.equal(rec.toString('hex', 0, 8), '00000015' + '02' + '000000');
    const { d, out } = recorder();
    d.push(rec);
    assert.deepEqual(out, [['c', '{"type":"ping","t":1}']]);
  });

  test('decodes the same records whatever the chunk boundaries (seeded)', () => {
    const rnd = prng(4);
    const recs: Buffer[] = [];
    const want: Rec[] = [];
    for (let i = 0; i < 300; i++) {
      if (rnd() < 0.2) {
        const msg = { type: 'x', i };
        recs.push(encodeControl(msg));
        want.push(['c', JSON.stringify(msg)]);
      } else {
        const len = 14 + Math.floor(rnd() * (rnd() < 0.1 ? 9000 : 1500));
        const f = Buffer.alloc(len, i & 0xff);
        const vni = 1 + Math.floor(rnd() * 0xfffffe);
        recs.push(frameRecord(vni, f));
        want.push(['f', vni, f.toString('hex')]);
      }
    }
    const stream = Buffer.concat(recs);
    for (let round = 0; round < 5; round++) {
      const { d, out } = recorder();
      for (let p = 0; p < stream.length; ) {
        const n = 1 + Math.floor(rnd() * (round === 0 ? 7 : 20000));
        assert.equal(d.push(stream.subarray(p, Math.min(stream.length, p + n))), DecodeResult.OK);
        p += n;
      }
      assert.deepEqual(out, want);
      assert.equal(d.partial, false);
    }
  });

  test('carries a 65535-byte segment whole', () => {
    const f = Buffer.alloc(65535, 7);
    const { d, out } = recorder();
    const rec = frameRecord(100, f);
    d.push(rec.subarray(0, 1000));
    d.push(rec.subarray(1000));
    assert.equal(out.length, 1);
    assert.equal((out[0] as ['f', number, string])[2].length, 65535 * 2);
  });

  test('refuses a record longer than the limit of its type, and an unknown type, and stays refused', () => {
    const { d } = recorder();
    const h = Buffer.alloc(8);
    writeHeader(h, 0, MAX_FRAME_BODY + 1, TYPE_FRAME, 1);
    assert.equal(d.push(h), DecodeResult.TOO_LONG);
    assert.equal(d.badLength, MAX_FRAME_BODY + 1);
    assert.equal(d.push(frameRecord(1, Buffer.alloc(60))), DecodeResult.TOO_LONG);
    const r2 = recorder();
    assert.equal(r2.d.push(Buffer.from('0000000409000000aabbccdd', 'hex')), DecodeResult.BAD_TYPE);
    assert.equal(r2.d.badType, 9);
  });

  test('never throws on random bytes (seeded fuzz)', () => {
    const rnd = prng(99);
    for (let i = 0; i < 2000; i++) {
      const { d } = recorder();
      const len = Math.floor(rnd() * 200);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = Math.floor(rnd() * 256);
      // Bias toward valid types and small lengths so the parser goes deep.
      if (len >= 8 && rnd() < 0.7) {
        b.writeUInt32BE(Math.floor(rnd() * 64), 0);
        b[4] = 1 + Math.floor(rnd() * 2);
      }
      for (let p = 0; p < len; p += 1 + Math.floor(rnd() * 16)) d.push(b.subarray(p, p + 1 + Math.floor(rnd() * 16)));
    }
  });
});

type MRec = { vni: number; hex: string; meta?: Record<string, number> };

function metaRecorder() {
  const out: MRec[] = [];
  const d = new LinkDecoder({
    frame: (vni, buf, off, len, meta) =>
      out.push({ vni, hex: buf.toString('hex', off, off + len), ...(meta ? { meta: { ...meta } } : {}) }),
    control: () => undefined,
  });
  return { d, out };
}

function offloadRecord(vni: number, frame: Buffer, m: OffloadMeta): Buffer {
  const b = Buffer.alloc(HEADER_LEN + OFFLOAD_HLEN + frame.length);
  writeHeader(b, 0, OFFLOAD_HLEN + frame.length, TYPE_FRAME_OFFLOAD, vni);
  writeOffloadHeader(b, HEADER_LEN, m);
  frame.copy(b, HEADER_LEN + OFFLOAD_HLEN);
  return b;
}

const TSO = tsoMeta;

describe('offload records (type 3)', () => {
  test('an offload record is type 3, then flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (big-endian), then the frame', () => {
    const frame = Buffer.from(ARP, 'hex');
    const rec = offloadRecord(100, frame, TSO());
    assert.equal(
      rec.toString('hex', 0, 18),
      '00000034' + '03' + '000064' + '01' + '01' + '0036' + '05a8' + '0022' + '0010',
    );
    const { d, out } = metaRecorder();
    assert.equal(d.push(rec), DecodeResult.OK);
    assert.deepEqual(out, [
      { vni: 100, hex: ARP, meta: { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 } },
    ]);
  });

  test('a 64 KiB segment with its metadata decodes whole across split chunks; plain frames next to it carry none', () => {
    const big = Buffer.alloc(65535, 9);
    const stream = Buffer.concat([offloadRecord(7, big, TSO()), frameRecord(7, Buffer.from(ARP, 'hex'))]);
    const { d, out } = metaRecorder();
    for (let p = 0; p < stream.length; p += 3001) assert.equal(d.push(stream.subarray(p, p + 3001)), DecodeResult.OK);
    assert.equal(out.length, 2);
    assert.equal(out[0]?.hex.length, 65535 * 2);
    assert.equal(out[0]?.meta?.gsoSize, 1448);
    assert.equal(out[1]?.meta, undefined);
  });

  test('refuses an offload record with unknown flags, an unknown GSO type, ECN on UDP, or no room for its header', () => {
    const frame = Buffer.from(ARP, 'hex');
    const bad: Buffer[] = [];
    const r1 = offloadRecord(1, frame, TSO());
    r1[HEADER_LEN] = 0x04; // a flag bit this host never writes
    bad.push(r1);
    const r2 = offloadRecord(1, frame, TSO());
    r2[HEADER_LEN + 1] = 2; // gso_type 2 does not exist
    bad.push(r2);
    const r3 = offloadRecord(1, frame, TSO());
    r3[HEADER_LEN + 1] = 0x85; // ECN on USO
    bad.push(r3);
    const r4 = Buffer.alloc(HEADER_LEN + 4);
    writeHeader(r4, 0, 4, TYPE_FRAME_OFFLOAD, 1);
    bad.push(r4);
    const h = Buffer.alloc(HEADER_LEN);
    writeHeader(h, 0, MAX_FRAME_BODY + OFFLOAD_HLEN + 1, TYPE_FRAME_OFFLOAD, 1);
    for (const rec of bad) {
      const { d, out } = metaRecorder();
      // Split in two so both the in-chunk and the reassembly paths refuse it.
      for (const cut of [rec.length, 5 + HEADER_LEN]) {
        const again = metaRecorder();
        const r = again.d.push(rec.subarray(0, cut));
        const r2b = cut < rec.length ? again.d.push(rec.subarray(cut)) : r;
        assert.equal(r2b, DecodeResult.BAD_OFFLOAD);
        assert.equal(again.out.length, 0);
      }
      assert.equal(d.push(rec), DecodeResult.BAD_OFFLOAD);
      assert.equal(d.badType, TYPE_FRAME_OFFLOAD);
      assert.equal(d.push(frameRecord(1, frame)), DecodeResult.BAD_OFFLOAD, 'stays refused');
      assert.equal(out.length, 0);
    }
    assert.equal(metaRecorder().d.push(h), DecodeResult.TOO_LONG);
  });

  test('never throws on random offload records, and hands on only metadata it accepts (seeded fuzz)', () => {
    const rnd = prng(303);
    let delivered = 0;
    for (let i = 0; i < 3000; i++) {
      const { d, out } = metaRecorder();
      const len = Math.floor(rnd() * 120);
      const b = Buffer.alloc(HEADER_LEN + len);
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
      writeHeader(b, 0, rnd() < 0.9 ? len : Math.floor(rnd() * 200), TYPE_FRAME_OFFLOAD, 5);
      if (rnd() < 0.5) {
        b[HEADER_LEN] = rnd() < 0.5 ? 0 : 1;
        if (b.length > HEADER_LEN + 1) b[HEADER_LEN + 1] = [0, 1, 4, 5, 0x81, 0x84][Math.floor(rnd() * 6)] as number;
      }
      for (let p = 0; p < b.length; p += 1 + Math.floor(rnd() * 16))
        d.push(b.subarray(p, p + 1 + Math.floor(rnd() * 16)));
      // Bytes past a short record may read as a plain frame record (no metadata).
      for (const r of out) {
        if (r.meta === undefined) continue;
        delivered++;
        assert.ok((r.meta['flags'] as number) <= 1);
        assert.ok([0, 1, 4, 5, 0x81, 0x84].includes(r.meta['gsoType'] as number));
      }
    }
    assert.ok(delivered > 100);
  });
});

describe('hello validation', () => {
  const ok = { type: 'hello', proto: 'vmlink-link', version: 2, host: 'a' };

  test('accepts a well-formed hello: identity and version only, no network list', () => {
    assert.deepEqual(parseHello(ok), { host: 'a', relay: false });
    // A list in a hello is not read: networks come after it (network-sync.ts).
    assert.deepEqual(parseHello({ ...ok, networks: [{ vni: 0 }] }), { host: 'a', relay: false });
  });

  test('reads the offloads capability only when it is exactly true', () => {
    assert.equal((parseHello({ ...ok, offloads: true }) as { offloads?: boolean }).offloads, true);
    assert.equal((parseHello({ ...ok, offloads: 'yes' }) as { offloads?: boolean }).offloads, undefined);
  });

  test('names what is wrong with a bad hello', () => {
    assert.match(parseHello({ ...ok, proto: 'http' }) as string, /not a vmlink link/);
    assert.match(parseHello({ ...ok, version: 1 }) as string, /version 1 is not supported \(this host speaks 2\)/);
    assert.match(parseHello({ ...ok, host: '../x' }) as string, /host id/);
    assert.match(parseHello({ type: 'ping' }) as string, /expected a hello/);
  });

  test('never throws on fuzzed hellos (seeded)', () => {
    const rnd = prng(7);
    const values: unknown[] = [null, 0, -1, 1e9, 'x', [], {}, [{}], [{ vni: 5 }], true, 2 ** 24];
    const pick = () => values[Math.floor(rnd() * values.length)];
    for (let i = 0; i < 1000; i++) {
      const m = {
        ...ok,
        host: rnd() < 0.5 ? pick() : 'h',
        networks: pick(),
        version: rnd() < 0.8 ? 2 : pick(),
      };
      const r = parseHello(m as never);
      assert.ok(typeof r === 'string' || typeof r.host === 'string');
    }
  });
});
