/**
 * Link record framing (net/overlay/codec.ts): byte-exact records, records
 * split anywhere across chunks, and fuzzed input that never throws.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DecodeResult,
  encodeControl,
  HEADER_LEN,
  LinkDecoder,
  MAX_FRAME_BODY,
  TYPE_FRAME,
  writeHeader,
} from '../../src/net/overlay/codec.js';
import { parseHello } from '../../src/net/overlay/stream-channel.js';
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

describe('hello validation', () => {
  const ok = { type: 'hello', proto: 'vmlink-link', version: 1, host: 'a', networks: [{ vni: 100, name: 'lab' }] };

  test('accepts a well-formed hello', () => {
    assert.deepEqual(parseHello(ok), { host: 'a', networks: [{ vni: 100, name: 'lab' }], relay: false });
  });

  test('names what is wrong with a bad hello', () => {
    assert.match(parseHello({ ...ok, proto: 'http' }) as string, /not a vmlink link/);
    assert.match(parseHello({ ...ok, version: 2 }) as string, /version 2 is not supported/);
    assert.match(parseHello({ ...ok, host: '../x' }) as string, /host id/);
    assert.match(parseHello({ ...ok, networks: [{ vni: 0 }] }) as string, /valid vni/);
    assert.match(parseHello({ ...ok, networks: 'x' }) as string, /networks/);
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
        networks: rnd() < 0.5 ? pick() : ok.networks,
        version: rnd() < 0.8 ? 1 : pick(),
      };
      const r = parseHello(m as never);
      assert.ok(typeof r === 'string' || typeof r.host === 'string');
    }
  });
});
