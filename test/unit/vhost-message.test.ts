import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FLAG_NEED_REPLY, Req } from '../../src/net/vhost/constants.js';
import {
  encodeMessage,
  encodeU64Reply,
  type Message,
  MessageReader,
  needsReply,
  validateMessage,
} from '../../src/net/vhost/message.js';
import { prng } from '../helpers/prng.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function feedAll(r: MessageReader, chunks: [Buffer, number[]][]): { msgs: Message[]; err: Error | null } {
  const msgs: Message[] = [];
  for (const [c, fds] of chunks) {
    const err = r.feed(c, 0, c.length, fds, (m) => msgs.push(m));
    if (err) return { msgs, err };
  }
  return { msgs, err: null };
}

test('encodes requests and replies byte for byte', () => {
  assert.deepEqual(encodeMessage(Req.GET_FEATURES, 0), hex('01000000 01000000 00000000'));
  assert.deepEqual(
    encodeMessage(Req.SET_VRING_NUM, FLAG_NEED_REPLY, hex('01000000 00010000')),
    hex('08000000 09000000 08000000 01000000 00010000'),
  );
  assert.deepEqual(
    encodeU64Reply(Req.GET_FEATURES, 2 ** 32 + 2 ** 30),
    hex('01000000 05000000 08000000 00000040 01000000'),
  );
});

test('parses a message split anywhere, and hands the fds to the message holding the chunk end', () => {
  const a = encodeMessage(Req.SET_OWNER, 0);
  const b = encodeMessage(Req.SET_VRING_CALL, 0, hex('0100000000000000'));
  const whole = Buffer.concat([a, b]);
  // Chunk 1 ends inside b and carries b's fd (the kernel stops after the skb with fds).
  const { msgs, err } = feedAll(new MessageReader(), [
    [whole.subarray(0, 15), [42]],
    [whole.subarray(15), []],
  ]);
  assert.equal(err, null);
  assert.deepEqual(
    msgs.map((m) => [m.request, m.fds]),
    [
      [Req.SET_OWNER, []],
      [Req.SET_VRING_CALL, [42]],
    ],
  );
  const one = feedAll(new MessageReader(), [[whole, [7]]]);
  assert.deepEqual(
    one.msgs.map((m) => m.fds),
    [[], [7]],
  );
});

test('refuses a wrong version, a reply flag on a request and an oversized payload', () => {
  const bad = (flags: number, size: number) => {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(Req.SET_FEATURES, 0);
    h.writeUInt32LE(flags, 4);
    h.writeUInt32LE(size, 8);
    return feedAll(new MessageReader(), [[h, []]]).err;
  };
  assert.match(String(bad(2, 8)), /protocol version 2/);
  assert.match(String(bad(1 | 4, 8)), /reply flag on a request/);
  assert.match(String(bad(1, 1 << 20)), /exceeds 4096/);
  assert.equal((bad(1, 1 << 20) as unknown as { code: string }).code, 'ERR_VHOST_PROTOCOL');
});

test('validates payload sizes and fd counts per request', () => {
  const m = (request: number, size: number, fds: number[] = [], flags = 1): Message => ({
    request,
    flags,
    payload: Buffer.alloc(size),
    fds,
  });
  assert.equal(validateMessage(m(Req.SET_FEATURES, 8)), null);
  assert.match(String(validateMessage(m(Req.SET_FEATURES, 4))), /payload of 4 bytes, expected 8/);
  assert.match(String(validateMessage(m(77, 0))), /unknown request 77/);
  assert.match(String(validateMessage(m(Req.SET_VRING_KICK, 8))), /0 fds received, expected 1/);
  const nofd = m(Req.SET_VRING_KICK, 8);
  nofd.payload.writeUInt32LE(0x100);
  assert.equal(validateMessage(nofd), null);
  const table = m(Req.SET_MEM_TABLE, 8 + 64, [3]);
  table.payload.writeUInt32LE(2);
  assert.equal((validateMessage(table) as unknown as { code: string }).code, 'ERR_VHOST_FDS');
  table.payload.writeUInt32LE(3);
  assert.match(String(validateMessage(table)), /3 regions announced but 2 sent/);
  assert.equal(needsReply(m(Req.SET_OWNER, 0, [], 1 | FLAG_NEED_REPLY)), true);
});

test('fuzz: valid streams cut at random points parse identically; random bytes never throw', () => {
  const rnd = prng(0x5eed);
  const int = (n: number) => Math.floor(rnd() * n);
  for (let round = 0; round < 300; round++) {
    const sent: Buffer[] = [];
    for (let i = 0; i < 1 + int(6); i++) {
      const p = Buffer.alloc(int(300));
      for (let j = 0; j < p.length; j++) p[j] = int(256);
      sent.push(encodeMessage(1 + int(40), int(2) ? FLAG_NEED_REPLY : 0, p));
    }
    const all = Buffer.concat(sent);
    const chunks: [Buffer, number[]][] = [];
    for (let at = 0; at < all.length; ) {
      const n = 1 + int(64);
      chunks.push([all.subarray(at, at + n), []]);
      at += n;
    }
    const { msgs, err } = feedAll(new MessageReader(), chunks);
    assert.equal(err, null);
    assert.deepEqual(
      msgs.map((m) => encodeMessage(m.request, m.flags & ~1, m.payload)),
      sent,
    );
    for (const m of msgs) validateMessage(m); // returns, never throws
    // Garbage: the reader returns an error or messages, and never throws.
    const junk = Buffer.alloc(int(200));
    for (let j = 0; j < junk.length; j++) junk[j] = int(4) === 0 ? int(256) : int(3);
    const r = new MessageReader();
    const res = feedAll(r, [[junk, []]]);
    for (const m of res.msgs) validateMessage(m);
  }
});
