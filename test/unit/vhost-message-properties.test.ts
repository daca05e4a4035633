/**
 * Properties of the vhost-user message parser (message.ts) and of a session
 * fed by it (session.ts), with fast-check: whatever bytes and fds a
 * front-end sends, in whatever pieces, nothing throws out of them into the
 * event loop, no fd is lost, and every well-formed message comes out as it
 * went in.
 */
import assert from 'node:assert/strict';
import { closeSync, readdirSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { native } from '../../src/native/index.js';
import { FLAG_NEED_REPLY, MAX_REGIONS, Req } from '../../src/net/vhost/constants.js';
import { parseMemTable } from '../../src/net/vhost/memory.js';
import { encodeMessage, type Message, MessageReader, validateMessage } from '../../src/net/vhost/message.js';
import { VhostSession } from '../../src/net/vhost/session.js';

/** Splits `b` at the given cut points (sorted, deduplicated, inside it). */
function split(b: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, b.length]) {
    if (c > prev) out.push(b.subarray(prev, c));
    prev = Math.max(prev, c);
  }
  return out;
}

/** Stand-ins for fds: numbers far above any real one (the parser only carries them). */
const fakeFd = fc.integer({ min: 100_000, max: 199_999 });

test('arbitrary bytes in arbitrary pieces never make the reader throw; every fd ends in a message or in takeFds()', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.array(fakeFd, { maxLength: 3 })), {
        maxLength: 12,
      }),
      fc.boolean(),
      (chunks, replies) => {
        const r = new MessageReader(replies);
        const seen: number[] = [];
        const given: number[] = [];
        let err: Error | null = null;
        for (const [bytes, fds] of chunks) {
          given.push(...fds);
          const b = Buffer.from(bytes);
          err = r.feed(b, 0, b.length, fds, (m) => {
            seen.push(...m.fds);
            // What the session does next with any message: neither may throw.
            const bad = validateMessage(m);
            if (!bad && m.request === Req.SET_MEM_TABLE) parseMemTable(m.payload);
          });
          if (err) break;
        }
        if (err) assert.match((err as Error & { code: string }).code, /^ERR_VHOST_/);
        const left = r.takeFds();
        if (!err) assert.deepEqual([...seen, ...left].sort(), given.sort());
        else assert.ok([...seen, ...left].length <= given.length);
      },
    ),
    { numRuns: 2000 },
  );
});

/** A valid request: a known request with a payload of an allowed size and the fds it must carry. */
const validRequest = fc.oneof(
  fc.record({
    request: fc.constantFrom(Req.GET_FEATURES, Req.SET_OWNER, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM),
    payload: fc.constantFrom(0, 8).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    fds: fc.constant<number[]>([]),
  }),
  fc.record({
    request: fc.constantFrom(
      Req.SET_FEATURES,
      Req.SET_VRING_NUM,
      Req.SET_VRING_BASE,
      Req.SET_VRING_ENABLE,
      Req.NET_SET_MTU,
    ),
    payload: fc.uint8Array({ minLength: 8, maxLength: 8 }),
    fds: fc.constant<number[]>([]),
  }),
  fc.record({
    request: fc.constant(Req.SET_VRING_ADDR),
    payload: fc.uint8Array({ minLength: 40, maxLength: 40 }),
    fds: fc.constant<number[]>([]),
  }),
  fc.integer({ min: 1, max: MAX_REGIONS }).chain((n) =>
    fc.record({
      request: fc.constant(Req.SET_MEM_TABLE),
      payload: fc.uint8Array({ minLength: 8 + 32 * n, maxLength: 8 + 32 * n }).map((p) => {
        Buffer.from(p.buffer, p.byteOffset).writeUInt32LE(n, 0);
        return p;
      }),
      fds: fc.array(fakeFd, { minLength: n, maxLength: n }),
    }),
  ),
  fc.record({
    request: fc.constant(Req.SET_VRING_KICK),
    payload: fc.integer({ min: 0, max: 15 }).map((i) => {
      const p = new Uint8Array(8);
      p[0] = i;
      return p;
    }),
    fds: fc.array(fakeFd, { minLength: 1, maxLength: 1 }),
  }),
);

test('valid requests round-trip: encoded, cut anywhere (fds with the piece that ends each message), parsed back the same and valid', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(validRequest, fc.boolean(), fc.array(fc.nat(), { maxLength: 4 })), {
        minLength: 1,
        maxLength: 6,
      }),
      (msgs) => {
        const r = new MessageReader();
        const out: Message[] = [];
        for (const [m, needReply, cuts] of msgs) {
          const wire = encodeMessage(m.request, needReply ? FLAG_NEED_REPLY : 0, Buffer.from(m.payload));
          const pieces = split(wire, cuts);
          pieces.forEach((p, i) => {
            const fds = i === pieces.length - 1 ? m.fds : [];
            assert.equal(
              r.feed(p, 0, p.length, fds, (x) => out.push(x)),
              null,
            );
          });
        }
        assert.equal(out.length, msgs.length);
        out.forEach((got, i) => {
          const [m, needReply] = msgs[i] as (typeof msgs)[number];
          assert.equal(got.request, m.request);
          assert.equal(got.flags, 1 | (needReply ? FLAG_NEED_REPLY : 0));
          assert.deepEqual(got.payload, Buffer.from(m.payload));
          assert.deepEqual(got.fds, m.fds);
          assert.equal(validateMessage(got), null);
        });
        assert.deepEqual(r.takeFds(), []);
      },
    ),
    { numRuns: 1000 },
  );
});

/**
 * This process's open eventfds (the only kind of fd the test sends). Counting
 * every fd would also see what the test runner and libuv open or close
 * meanwhile (pipes, sockets, files closed by the garbage collector).
 */
function openEventfds(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]') out.add(fd);
    } catch {
      // closed between the listing and the readlink
    }
  }
  return out;
}

test('a session fed arbitrary bytes (with eventfds as fds) through its real socket never throws, ends once when the front-end hangs up, and leaves no fd open', () => {
  const n = native();
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.oneof(
            fc.uint8Array({ minLength: 1, maxLength: 300 }),
            // Mostly valid headers, so the payload reaches the handlers.
            fc
              .tuple(fc.integer({ min: 0, max: 45 }), fc.uint8Array({ maxLength: 80 }))
              .map(([req, p]) => new Uint8Array(encodeMessage(req, 0, Buffer.from(p)))),
          ),
          fc.integer({ min: 0, max: 2 }),
        ),
        { minLength: 1, maxLength: 8 },
      ),
      (sends) => {
        const before = openEventfds();
        const [front, back] = n.socketpair(n.SOCK_STREAM);
        const closes: string[] = [];
        const s = new VhostSession(
          n,
          back,
          { onKick: () => {}, onRings: () => {}, onRarp: () => {}, onClose: (reason) => closes.push(reason) },
          { maxMtu: 9000 },
        );
        try {
          for (const [bytes, nfds] of sends) {
            const fds = Array.from({ length: nfds }, () => n.eventfd(0, false));
            try {
              n.sendFds(front, bytes, fds);
            } catch {
              // the session already hung up on us
            } finally {
              for (const fd of fds) closeSync(fd);
            }
            s.drain();
          }
          closeSync(front);
          s.drain();
          assert.equal(s.closed, true);
          assert.equal(closes.length, 1);
        } finally {
          s.close('test over');
        }
        const left = [...openEventfds()].filter((fd) => !before.has(fd));
        assert.deepEqual(left, [], 'every eventfd the session received was closed');
      },
    ),
    {
      numRuns: 300,
      // A found leak: a message that closes the session, then a bad header in the same chunk as an fd.
      examples: [
        [
          [
            [Uint8Array.from([0, 0, 0, 0, 41, 0, 0, 0]), 0],
            [Uint8Array.from([0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]), 1],
            [Uint8Array.from([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), 0],
          ],
        ],
      ],
    },
  );
});
