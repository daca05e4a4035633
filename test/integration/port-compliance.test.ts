/**
 * The Port compliance suite: one set of behaviours every port kind and mode
 * must show, through real sockets and a real Switch. Each kind supplies a
 * harness (test/helpers/port-peers.ts, dgram-peers.ts, fd-port-peers.ts) that
 * plays QEMU's side, or the device's. The kernel-device and VDE kinds need root
 * (a TAP, a veth pair and vde_plug made by the harness).
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { WriteResult } from '../../src/net/port.js';
import { type Address, parseAddress } from '../../src/util/address.js';
import { dgramHarness, unixDgramHarness } from '../helpers/dgram-peers.js';
import { hostHarness, tapHarness, vdeHarness } from '../helpers/fd-port-peers.js';
import { connectHarness, type Harness, listenHarness, type Peer } from '../helpers/port-peers.js';
import { BROADCAST, frame, macOf, Rig, until } from '../helpers/port-rig.js';
import { vhostUserHarness } from '../helpers/vhost-peer.js';

const T = { timeout: 60_000 };

/** A seeded PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Frames flow from `from` (MAC `src`) to `to`: a broadcast with a fresh tag arrives byte-exact. */
async function flows(from: Peer, src: string, to: Peer, tag: string): Promise<void> {
  const f = frame(BROADCAST, src, tag, 100);
  from.send(f);
  await until(to, f);
}

function portCompliance(h: Harness): void {
  // Byte-stream transports (length-prefixed frames on a connection); the others carry one frame per datagram,
  // device read or ring buffer chain.
  const streamy = h.mode === 'listen' || h.mode === 'connect';

  describe(`port compliance: ${h.label}`, () => {
    test('delivers frames byte-exact in both directions between ports of one network', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const b = await rig.add('b', 2, 'red');
      const c = await rig.add('c', 3, 'red');
      const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
      // Full-size frame (MTU 1500 + 14) to a MAC nobody learned yet: flooded to b and c.
      const f1 = frame(b.mac, a.mac, 'a to b', 1514);
      pa.send(f1);
      assert.deepEqual(await pb.next(), f1);
      assert.deepEqual(await pc.next(), f1);
      // b answers a, whose MAC is now learned: only a gets it.
      const f2 = frame(a.mac, b.mac, 'b to a', 60);
      pb.send(f2);
      assert.deepEqual(await pa.next(), f2);
      const marker = frame(BROADCAST, a.mac, 'marker');
      pa.send(marker);
      assert.deepEqual(await pc.next(), marker, 'c got the unicast meant for a');
      assert.equal(a.sp.counters.rxFrames, 2);
      assert.equal(a.sp.counters.txFrames, 1);
    });

    test('floods a broadcast to every other port of the network and never back to its sender', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const b = await rig.add('b', 2, 'red');
      const c = await rig.add('c', 3, 'red');
      const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
      const bc = frame(BROADCAST, a.mac, 'hello all');
      pa.send(bc);
      assert.deepEqual(await pb.next(), bc);
      assert.deepEqual(await pc.next(), bc);
      const marker = frame(BROADCAST, b.mac, 'from b');
      pb.send(marker);
      assert.deepEqual(await pa.next(), marker, 'a got its own broadcast back');
    });

    test('never lets a frame cross into another network', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const b = await rig.add('b', 2, 'red');
      const d = await rig.add('d', 4, 'blue');
      const e = await rig.add('e', 5, 'blue');
      const [pa, pb, pd, pe] = [await rig.connect(a), await rig.connect(b), await rig.connect(d), await rig.connect(e)];
      const bc = frame(BROADCAST, a.mac, 'red bcast');
      const uni = frame(d.mac, a.mac, 'red to d');
      pa.send(bc);
      pa.send(uni);
      assert.deepEqual(await pb.next(), bc);
      assert.deepEqual(await pb.next(), uni);
      const marker = frame(BROADCAST, e.mac, 'blue marker');
      pe.send(marker);
      assert.deepEqual(await pd.next(), marker, 'a red frame reached a blue port');
    });

    test('a frame over the network MTU is dropped and counted, and the connection stays', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const b = await rig.add('b', 2, 'red');
      const [pa, pb] = [await rig.connect(a), await rig.connect(b)];
      // MTU 1500: a 1501-byte payload is one too many; the transport carries it fine.
      pa.send(frame(BROADCAST, a.mac, 'too long', 14 + 1501));
      await flows(pa, a.mac, pb, 'after the long one');
      assert.equal(a.sp.counters.mtu, 1);
      assert.equal(a.sp.counters.malformed, 0);
      await flows(pb, b.mac, pa, 'back');
    });

    test('garbage bytes on one port leave the other ports working', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const b = await rig.add('b', 2, 'red');
      const c = await rig.add('c', 3, 'red');
      const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
      const rand = prng(42);
      const junk = Buffer.alloc(4096);
      for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(rand() * 256);
      pa.raw(junk);
      if (streamy) await pa.closed;
      await flows(pb, b.mac, pc, 'b after garbage');
      await flows(pc, c.mac, pb, 'c after garbage');
      const k = a.sp.counters;
      assert.ok(k.malformed + k.runt + k.mtu + k.bad_src > 0, 'the garbage was not counted on port a');
    });

    test(
      'an oversized frame closes only that connection (or drops that datagram), and the port carries on',
      T,
      async (t) => {
        const rig = new Rig(h);
        t.after(() => rig.close());
        const a = await rig.add('a', 1, 'red', { maxFrameLen: 1600 });
        const b = await rig.add('b', 2, 'red');
        const c = await rig.add('c', 3, 'red');
        const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
        await flows(pa, a.mac, pb, 'before');
        if (streamy) {
          // A length prefix one byte over the port's transport maximum.
          pa.raw(Buffer.from('00000641', 'hex'));
          await pa.closed;
        } else {
          pa.raw(frame(BROADCAST, a.mac, 'too big', 1601));
        }
        await flows(pb, b.mac, pc, 'others unaffected');
        const pa2 = streamy ? await rig.connect(a) : pa;
        await flows(pa2, a.mac, pb, 'a again');
        await flows(pb, b.mac, pa2, 'to a again');
        assert.equal(a.sp.counters.malformed, 1);
        assert.equal(b.sp.counters.malformed + c.sp.counters.malformed, 0);
      },
    );

    test('a peer that stops reading fills the queue: excess frames are queue_full drops, then frames flow again', {
      ...T,
      skip: h.noBackpressure ?? false,
    }, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const queueLen = streamy ? 32 : 8;
      const a = await rig.add('a', 1, 'red', { queueLen });
      const b = await rig.add('b', 2, 'red');
      const c = await rig.add('c', 3, 'red');
      const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
      await flows(pa, a.mac, pb, 'learn a');
      pa.pause();
      // Sample the queue after every frame the port accepted.
      let maxQueued = 0;
      a.sp.taps.push({ frame: () => (maxQueued = Math.max(maxQueued, a.port.queued)) });
      for (let round = 0; round < 500; round++) {
        for (let i = 0; i < 100; i++) pb.send(frame(a.mac, b.mac, `r${round} f${i}`, 1514));
        // c reads normally: when it sees this marker, vmlink has handled the round.
        await flows(pb, b.mac, pc, `round ${round}`);
        const full = a.sp.counters.queue_full > 0;
        // A stream peer that does not read makes frames pile up in the port until the bound.
        if (full && (!streamy || a.port.queued >= queueLen)) break;
      }
      assert.ok(a.sp.counters.queue_full > 0, 'no queue_full drops counted');
      assert.ok(maxQueued <= queueLen, `port queued ${maxQueued} frames, more than its bound ${queueLen}`);
      if (streamy) assert.equal(a.port.queued, queueLen);
      if (streamy) assert.equal(a.port.write(Buffer.alloc(60), 0, 60), WriteResult.QUEUE_FULL);
      pa.resume();
      // The queue drains now; until it has room a probe may still be dropped: send one per round trip until one arrives.
      let got = false;
      const reader = (async () => {
        for (;;) {
          const f = await pa.next();
          if (f.toString('latin1', 14, 19) === 'probe') return;
        }
      })().then(() => {
        got = true;
      });
      for (let k = 0; !got && k < 10_000; k++) {
        pb.send(frame(a.mac, b.mac, `probe ${k}`, 200));
        await flows(pb, b.mac, pc, `sync ${k}`);
      }
      await reader;
    });

    test('close() flushes queued frames, is idempotent, and frees the address', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const pa = await rig.connect(a);
      const local = String(a.port.describe()['local'] ?? '');
      const fs = [1, 2, 3].map((i) => frame(BROADCAST, macOf(9), `queued ${i}`, 300));
      for (const f of fs) assert.equal(a.port.write(f, 0, f.length), WriteResult.OK);
      const closing = [a.port.close(), a.port.close()];
      await Promise.all(closing);
      await a.port.close();
      await a.port.destroy();
      assert.equal(a.port.state, 'closed');
      assert.equal(a.states.filter((s) => s === 'closed').length, 1);
      // Where the peer may leave before reading them (see the harness), the frames were at least sent to it.
      if (h.closeDropsInFlight) assert.equal(a.port.describe()['tx_frames'], 3);
      else for (const f of fs) assert.deepEqual(await pa.next(), f);
      if (streamy) await pa.closed;
      assert.equal(a.port.write(fs[0] as Buffer, 0, 10), WriteResult.DOWN);
      const spec = a.ep.spec as { listen?: Address; local?: Address };
      const listen = spec.listen ?? spec.local;
      if (listen?.type === 'unix') {
        assert.equal(existsSync(listen.path), false, 'the socket file is still there');
      } else if (h.mode === 'listen') {
        const addr = parseAddress(local, ['tcp']);
        assert.ok(typeof addr !== 'string' && addr.type === 'tcp');
        const s = createServer();
        s.listen(addr.port, addr.host);
        await once(s, 'listening');
        await new Promise((r) => s.close(r));
      } else if (h.mode === 'dgram') {
        const addr = parseAddress(local, ['udp']);
        assert.ok(typeof addr !== 'string' && addr.type === 'udp');
        const s = createSocket('udp4');
        s.bind(addr.port, addr.host);
        await once(s, 'listening');
        await new Promise<void>((r) => s.close(r));
      }
    });

    test('destroy() is immediate and idempotent', T, async (t) => {
      const rig = new Rig(h);
      t.after(() => rig.close());
      const a = await rig.add('a', 1, 'red');
      const pa = await rig.connect(a);
      await Promise.all([a.port.destroy(), a.port.destroy(), a.port.close()]);
      assert.equal(a.port.state, 'closed');
      assert.equal(a.port.queued, 0);
      if (streamy) await pa.closed;
    });

    if (h.mode === 'listen') {
      test(
        'takes a new connection after its peer disconnects, and a newer connection replaces an older one',
        T,
        async (t) => {
          const rig = new Rig(h);
          t.after(() => rig.close());
          const a = await rig.add('a', 1, 'red');
          const b = await rig.add('b', 2, 'red');
          const pb = await rig.connect(b);
          const pa = await rig.connect(a);
          await flows(pb, b.mac, pa, 'first');
          const listening = rig.state(a, 'listening', true);
          await pa.close();
          await listening;
          assert.equal(a.port.write(Buffer.alloc(60), 0, 60), WriteResult.DOWN);
          const pa2 = await rig.connect(a);
          await flows(pb, b.mac, pa2, 'second');
          await flows(pa2, a.mac, pb, 'second back');
          const pa3 = await rig.connect(a);
          await pa2.closed;
          await flows(pb, b.mac, pa3, 'third');
          assert.equal(a.port.describe()['connections'], 3);
        },
      );
    }

    if (h.mode === 'connect') {
      test('re-dials with backoff when the peer goes away and comes back, and frames flow again', T, async (t) => {
        const rig = new Rig(h);
        t.after(() => rig.close());
        const a = await rig.add('a', 1, 'red');
        const b = await rig.add('b', 2, 'red');
        const [pa, pb] = [await rig.connect(a), await rig.connect(b)];
        await flows(pb, b.mac, pa, 'before');
        const connecting = rig.state(a, 'connecting', true);
        await a.ep.stopServer?.();
        await pa.closed;
        await connecting;
        await a.ep.startServer?.();
        const pa2 = await rig.connect(a);
        await flows(pb, b.mac, pa2, 'after');
        await flows(pa2, a.mac, pb, 'after back');
        assert.equal(a.port.describe()['reconnects'], 1);
      });
    }

    if (h.holdable) {
      test(
        'hold() stops reading from the peer until release(), and what the peer sent meanwhile is delivered then',
        T,
        async (t) => {
          const rig = new Rig(h);
          t.after(() => rig.close());
          const a = await rig.add('a', 1, 'red');
          const b = await rig.add('b', 2, 'red');
          const c = await rig.add('c', 3, 'red');
          const [pa, pb, pc] = [await rig.connect(a), await rig.connect(b), await rig.connect(c)];
          await flows(pa, a.mac, pb, 'before');
          const port = a.port as typeof a.port & { hold(): void; release(): void };
          port.hold();
          const held = frame(b.mac, a.mac, 'sent while held', 200);
          pa.send(held);
          // c's frame, sent after a's, reaches b first: a's port does not read.
          const marker = frame(b.mac, c.mac, 'marker');
          pc.send(marker);
          assert.equal(await until(pb, marker), 0, 'a frame from the held port reached b');
          assert.equal(a.port.describe()['read_held'], true);
          port.release();
          await until(pb, held);
          assert.equal(a.port.describe()['read_holds'], 1);
          await flows(pb, b.mac, pa, 'after');
        },
      );
    }

    if (h.mode === 'dgram' || h.mode === 'vhost-user' || h.mode === 'plug' || h.mode === 'device') {
      test('keeps working when its peer restarts on the same address', T, async (t) => {
        const rig = new Rig(h);
        t.after(() => rig.close());
        const a = await rig.add('a', 1, 'red');
        const b = await rig.add('b', 2, 'red');
        const [pa, pb] = [await rig.connect(a), await rig.connect(b)];
        await flows(pb, b.mac, pa, 'before');
        await pa.close();
        const pa2 = await rig.connect(a);
        await flows(pb, b.mac, pa2, 'after');
        await flows(pa2, a.mac, pb, 'after back');
      });
    }
  });
}

for (const h of [
  listenHarness('stream', 'unix'),
  connectHarness('stream', 'unix'),
  listenHarness('stream', 'tcp'),
  connectHarness('stream', 'tcp'),
  listenHarness('socket', 'tcp'),
  connectHarness('socket', 'tcp'),
  dgramHarness(),
  unixDgramHarness(),
  vhostUserHarness(),
  tapHarness(),
  hostHarness(),
  vdeHarness(),
])
  portCompliance(h);
