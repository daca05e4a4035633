/**
 * The receive window of link connections (net/overlay/link-reader.ts) with
 * the decoder's in-place parse: reads land after the held bytes, records are
 * handed over in place whatever the read boundaries, only an incomplete tail
 * is moved, and bad or random input stops the parse without throwing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { OffloadMeta } from '../../src/net/offload/vnet-hdr.js';
import {
  DecodeResult,
  encodeControl,
  HEADER_LEN,
  LinkDecoder,
  OFFLOAD_HLEN,
  TYPE_FRAME,
  TYPE_FRAME_OFFLOAD,
  writeHeader,
  writeOffloadHeader,
} from '../../src/net/overlay/codec.js';
import { LinkReader } from '../../src/net/overlay/link-reader.js';
import { tsoMeta } from '../helpers/meta-port.js';
import { prng } from '../helpers/prng.js';

function record(vni: number, frame: Buffer, meta?: OffloadMeta): Buffer {
  const ohl = meta ? OFFLOAD_HLEN : 0;
  const b = Buffer.alloc(HEADER_LEN + ohl + frame.length);
  writeHeader(b, 0, ohl + frame.length, meta ? TYPE_FRAME_OFFLOAD : TYPE_FRAME, vni);
  if (meta) writeOffloadHeader(b, HEADER_LEN, meta);
  frame.copy(b, HEADER_LEN + ohl);
  return b;
}

const TSO = tsoMeta();

/** A reader bound to a decoder; `read(bytes)` plays the socket: copies into the offered room and reports it. */
function rig(bytes?: number) {
  const got: { vni: number; len: number; first: number; last: number; gso: number; inPlace: boolean }[] = [];
  const controls: string[] = [];
  const reader = new LinkReader(bytes);
  let room = reader.onread.buffer();
  const decoder = new LinkDecoder({
    frame: (vni, buf, off, len, meta) =>
      got.push({
        vni,
        len,
        first: buf[off] as number,
        last: buf[off + len - 1] as number,
        gso: meta?.gsoSize ?? 0,
        inPlace: buf.buffer === room.buffer,
      }),
    control: (buf, off, len) => controls.push(buf.toString('utf8', off, off + len)),
  });
  reader.bind((buf, start, end) => decoder.parse(buf, start, end));
  /** Hands `data` to the reader in reads of at most `max` bytes (at most the room offered); returns the reads. */
  const read = (data: Buffer, max = Number.POSITIVE_INFINITY): Buffer[] => {
    const rooms: Buffer[] = [];
    for (let p = 0; p < data.length; ) {
      const n = Math.min(max, room.length, data.length - p);
      data.copy(room, 0, p, p + n);
      rooms.push(room);
      p += n;
      assert.equal(reader.onread.callback(n), true);
      room = reader.onread.buffer();
    }
    return rooms;
  };
  return { reader, decoder, got, controls, read, room: () => room };
}

describe('link receive window', () => {
  test('a record split across reads is parsed in place: the next read lands right after the held bytes', () => {
    const r = rig();
    const seg = Buffer.alloc(65_000, 7);
    seg[0] = 1;
    const rec = record(5, seg, TSO);
    const rooms = r.read(rec, 20_000);
    assert.equal(rooms.length, 4);
    for (let i = 1; i < rooms.length; i++)
      assert.equal((rooms[i] as Buffer).byteOffset, (rooms[i - 1] as Buffer).byteOffset + 20_000);
    assert.deepEqual(r.got, [{ vni: 5, len: 65_000, first: 1, last: 7, gso: 1448, inPlace: true }]);
    // Nothing is held any more: the next read starts at the front again.
    assert.equal(r.reader.partial, false);
    assert.equal(r.room().byteOffset, rooms[0]?.byteOffset);
  });

  test('decodes the same records whatever the read sizes, over many buffer lengths of traffic (seeded)', () => {
    const rnd = prng(4242);
    const recs: Buffer[] = [];
    const want: { vni: number; len: number; first: number; last: number; gso: number }[] = [];
    let total = 0;
    for (let i = 0; total < 6_000_000; i++) {
      if (i % 97 === 0) {
        recs.push(encodeControl({ type: 'ping', t: i }));
        total += recs.at(-1)?.length ?? 0;
        continue;
      }
      const big = rnd() < 0.3;
      const len = big ? 60_000 + Math.floor(rnd() * 5_500) : 60 + Math.floor(rnd() * 1_450);
      const f = Buffer.alloc(len, i & 0xff);
      f[0] = (i * 7) & 0xff;
      const vni = 1 + (i % 3);
      recs.push(record(vni, f, big ? TSO : undefined));
      want.push({ vni, len, first: f[0] as number, last: i & 0xff, gso: big ? 1448 : 0 });
      total += recs.at(-1)?.length ?? 0;
    }
    const stream = Buffer.concat(recs);
    const r = rig(256 * 1024);
    for (let p = 0; p < stream.length; ) {
      const n = 1 + Math.floor(rnd() * (rnd() < 0.5 ? 64 : 300_000));
      r.read(stream.subarray(p, Math.min(stream.length, p + n)));
      p += n;
    }
    assert.equal(r.decoder.error, DecodeResult.OK);
    assert.deepEqual(
      r.got.map(({ inPlace: _, ...x }) => x),
      want,
    );
    assert.ok(r.got.every((x) => x.inPlace));
    assert.equal(r.controls.length, Math.ceil(recs.length / 98));
    assert.equal(r.reader.partial, false);
  });

  test('a record longer than its type allows stops the parse; later reads are ignored and nothing throws', () => {
    const r = rig();
    const bad = Buffer.alloc(HEADER_LEN);
    writeHeader(bad, 0, 1 << 20, TYPE_FRAME, 1);
    r.read(Buffer.concat([record(1, Buffer.alloc(60, 1)), bad]));
    assert.equal(r.decoder.error, DecodeResult.TOO_LONG);
    assert.equal(r.decoder.badLength, 1 << 20);
    r.read(record(1, Buffer.alloc(60, 2)));
    assert.equal(r.got.length, 1);
    assert.equal(r.reader.partial, false);
  });

  test('bytes read before the channel binds are parsed in a later turn', async () => {
    const reader = new LinkReader();
    const room = reader.onread.buffer();
    const rec = record(9, Buffer.alloc(100, 3));
    rec.copy(room);
    reader.onread.callback(rec.length);
    const seen: number[] = [];
    const d = new LinkDecoder({ frame: (vni) => seen.push(vni), control: () => undefined });
    reader.bind((buf, start, end) => d.parse(buf, start, end));
    assert.deepEqual(seen, []);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, [9]);
  });

  test('never throws on random bytes in random reads (seeded fuzz)', () => {
    const rnd = prng(77);
    for (let i = 0; i < 500; i++) {
      const r = rig(256 * 1024);
      const len = Math.floor(rnd() * 3000);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = Math.floor(rnd() * 256);
      // Bias toward valid types and small lengths so the parser goes deep.
      for (let p = 0; p + 8 <= len && rnd() < 0.8; p += 8 + Math.floor(rnd() * 40)) {
        b.writeUInt32BE(Math.floor(rnd() * 48), p);
        b[p + 4] = 1 + Math.floor(rnd() * 3);
      }
      r.read(b, 1 + Math.floor(rnd() * 64));
    }
  });
});
