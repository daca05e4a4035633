import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Virtqueue } from '../../src/net/vhost/virtqueue.js';
import { prng } from '../helpers/prng.js';
import { AVAIL, GPA, HDR, NUM, SIZE, setup, USED } from '../helpers/vring-rig.js';

/**
 * What the device makes of the transmit ring (net-device.ts's rules): each
 * frame's bytes, 'malformed' for a frame it counts and drops, or the error
 * that ends it. With the fast path, simple chains go through txBatch first.
 */
let fastFrames = 0;
function drainTx(q: Virtqueue, maxLen: number): (string | Buffer)[] {
  const out: (string | Buffer)[] = [];
  for (let guard = 0; guard < 4 * NUM; guard++) {
    const avail = q.availCount();
    if (avail < 0) return [...out, `error: ${q.error}`];
    if (avail === 0) break;
    const k = q.txBatch(avail, 14, maxLen);
    fastFrames += k;
    for (let i = 0; i < k; i++) {
      const [r, off, len] = [q.txOut[3 * i], q.txOut[3 * i + 1], q.txOut[3 * i + 2]] as number[];
      out.push(Buffer.from(q.regionView(r as number).subarray(off, (off as number) + (len as number))));
    }
    if (k > 0) continue;
    const head = q.pop();
    const segs = head < 0 ? -1 : q.walk(head, false, 0);
    if (segs < 0) return [...out, `error: ${q.error}`];
    const parts = Array.from({ length: segs }, (_, s) =>
      q.view(s).subarray(q.segOff[s] as number, (q.segOff[s] as number) + (q.segLen[s] as number)),
    );
    const all = Buffer.concat(parts);
    const len = all.length - HDR;
    out.push(len < 14 || len > maxLen ? 'malformed' : all.subarray(HDR));
    q.pushUsed(head, 0);
  }
  q.publish();
  return out;
}

test('takes a batch of one-descriptor and header+frame transmit chains, stopping before a chain it leaves to the walk', () => {
  const { q, desc, avail, used, g } = setup(true);
  g.fill(0xaa, 0x8000 + HDR, 0x8000 + HDR + 60);
  desc(0, GPA + 0x8000, HDR + 60, 0);
  g.fill(0xbb, 0x9000, 0x9000 + 100);
  desc(1, GPA + 0x8800, HDR, 1, 2);
  desc(2, GPA + 0x9000, 100, 0);
  desc(3, GPA + 0xa000, HDR + 60, 2); // device-writable in a transmit ring: refused by the walk
  avail(0);
  avail(1);
  avail(3);
  assert.equal(q.txBatch(8, 14, 1514), 2);
  assert.deepEqual(Array.from(q.txOut.subarray(0, 6)), [0, 0x8000 + HDR, 60, 0, 0x9000, 100]);
  assert.equal(q.lastAvail, 2);
  assert.equal(q.usedIdx, 2);
  assert.equal(used().readUInt16LE(2), 0, 'not published yet');
  q.publish();
  assert.equal(used().readUInt16LE(2), 2);
  assert.deepEqual([used().readUInt32LE(4), used().readUInt32LE(12)], [0, 1]);
  assert.equal(q.txBatch(8, 14, 1514), 0, 'the writable chain is left alone');
  assert.equal(q.lastAvail, 2);
  assert.equal(q.walk(q.pop(), false, 0), -1);
  assert.match(q.error, /device-writable in a transmit queue/);
});

test('receives a frame into one writable buffer with a header of num_buffers 1, and leaves every other chain to the walk', () => {
  const { q, desc, avail, used, g } = setup(true);
  const frame = Buffer.alloc(60, 0x5a);
  assert.equal(q.rxOne(frame, 0, 60), 1, 'no buffer yet');
  desc(0, GPA + 0x8000, 2048, 2);
  desc(1, GPA + 0x9000, 40, 2); // too small for header + frame
  desc(2, GPA + 0xa000, 2048, 2 | 1, 3); // chained
  desc(3, GPA + 0xb000, 2048, 2);
  desc(4, GPA + 0xc000, 2048, 0); // device-readable
  desc(5, GPA + SIZE - 100, 2048, 2); // runs past guest memory
  desc(6, GPA + 0xd000, 16, 4 | 2); // indirect
  for (const h of [0, 1, 2, 4, 5, 6, 9]) avail(h);
  assert.equal(q.rxOne(frame, 0, 60), 0);
  assert.deepEqual(g.subarray(0x8000, 0x8000 + HDR), Buffer.from('000000000000000000000100', 'hex'));
  assert.deepEqual(g.subarray(0x8000 + HDR, 0x8000 + HDR + 60), frame);
  assert.deepEqual([used().readUInt16LE(2), used().readUInt32LE(4), used().readUInt32LE(8)], [1, 0, HDR + 60]);
  for (const head of [1, 2, 4, 5, 6, 9]) {
    const at = q.lastAvail;
    assert.equal(q.rxOne(frame, 0, 60), 2, `head ${head}`);
    assert.equal(q.lastAvail, at, 'nothing taken');
    assert.equal(q.usedIdx, 1);
    q.lastAvail = at + 1; // step over it as the walk would
  }
  assert.throws(() => q.rxOne(frame, 10, 60), { code: 'ERR_OUT_OF_RANGE' });
});

test('a transmit chain whose header asks for an offload (NEEDS_CSUM or a gso_type) is left to the walk', () => {
  for (const [flags, gso] of [
    [1, 0],
    [0, 1],
    [0, 4],
    [3, 0],
  ] as const) {
    const { q, desc, avail, g } = setup(true);
    g[0x8000] = flags;
    g[0x8001] = gso;
    desc(0, GPA + 0x8000, HDR + 60, 0);
    avail(0);
    assert.equal(q.txBatch(8, 14, 1514), 0, `flags ${flags} gso_type ${gso}`);
    assert.equal(q.lastAvail, 0);
  }
  const { q, desc, avail, g } = setup(true);
  g[0x8000] = 2; // DATA_VALID only: means nothing on transmit, the frame is plain
  desc(0, GPA + 0x8000, HDR + 60, 0);
  avail(0);
  assert.equal(q.txBatch(8, 14, 1514), 1);
});

test('an available index that ran ahead, or a detached ring, takes nothing', () => {
  const { q, desc, g } = setup(true);
  desc(0, GPA + 0x8000, 2048, 2);
  g.writeUInt16LE(NUM + 1, AVAIL + 2);
  assert.equal(q.txBatch(8, 14, 1514), 0);
  assert.equal(q.rxOne(Buffer.alloc(60), 0, 60), 2);
  assert.equal(q.availCount(), -1);
  g.writeUInt16LE(1, AVAIL + 2);
  q.detach();
  assert.equal(q.rxOne(Buffer.alloc(60), 0, 60), 2);
  assert.equal(q.txBatch(8, 14, 1514), 0);
  assert.equal(q.lastAvail, 0);
});

test('fuzz: with the fast path, random transmit rings give the same frames, refusals and used ring as the walk alone', () => {
  const rnd = prng(0x5eed_0005);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  for (let round = 0; round < 400; round++) {
    const a = setup(false);
    const b = setup(true);
    const content = Buffer.alloc(SIZE);
    for (let i = 0; i < 64; i++) content[0x8000 + Math.floor(rnd() * 0x4000)] = Math.floor(rnd() * 256);
    content.copy(a.g);
    content.copy(b.g);
    for (const s of [a, b]) s.g.fill(0, 0, USED + 8 * NUM + 8);
    const descs = Array.from({ length: NUM }, () => {
      const good = rnd() < 0.8; // mostly simple chains, so both paths get exercised
      const addr = good
        ? GPA + 0x8000 + Math.floor(rnd() * 0x4000)
        : pick([GPA + SIZE - 40, 0, GPA - 8, 2 ** 52, GPA + SIZE]);
      const len = good ? pick([HDR, HDR + 14, HDR + 60, 100]) : pick([HDR + 13, HDR + 1515, 0, 0xffffffff, 11]);
      const flags = good ? pick([0, 0, 0, 1]) : pick([1, 2, 4, 3, 5, 0]);
      const next = pick([0, 1, 2, 7, 8, 100]);
      return [addr, len, flags, next] as const;
    });
    const heads = Array.from({ length: Math.floor(rnd() * (NUM + 2)) }, () => pick([0, 1, 2, 3, 4, 5, 6, 7, 8]));
    for (const s of [a, b]) {
      descs.forEach(([addr, len, flags, next], i) => {
        s.desc(i, addr, len, flags, next);
      });
      for (const h of heads) s.avail(h);
    }
    const ra = drainTx(a.q, 1514);
    const rb = drainTx(b.q, 1514);
    assert.deepEqual(rb, ra, `round ${round}`);
    assert.deepEqual(b.used(), a.used(), `round ${round}: used ring`);
    assert.equal(b.q.lastAvail, a.q.lastAvail);
  }
  assert.ok(fastFrames > 100, `only ${fastFrames} frames took the fast path`);
});

/**
 * The receive side as net-device.ts #rxFrame does it with the walk: as many
 * chains as the frame needs with MRG_RXBUF (one without), header with
 * num_buffers, then frame, used lengths per chain. 'drop' leaves the ring as it was.
 */
function rxWalk(q: Virtqueue, frame: Buffer, mrg: boolean): string {
  const need = HDR + frame.length;
  const avail = q.availCount();
  if (avail < 0) return `error: ${q.error}`;
  if (avail === 0) return 'empty';
  const start = q.lastAvail;
  const heads: number[] = [];
  const caps: number[] = [];
  let cap = 0;
  let segs = 0;
  while (cap < need) {
    if (heads.length === avail || (heads.length === 1 && !mrg)) {
      q.lastAvail = start;
      return avail === NUM || !mrg ? 'drop' : 'empty';
    }
    const head = q.pop();
    const next = head < 0 ? -1 : q.walk(head, true, segs);
    if (next < 0) return `error: ${q.error}`;
    let c = 0;
    for (let s = segs; s < next; s++) c += q.segLen[s] as number;
    heads.push(head);
    caps.push(c);
    cap += c;
    segs = next;
  }
  const hdr = Buffer.alloc(HDR);
  hdr.writeUInt16LE(heads.length, 10);
  const all = Buffer.concat([hdr, frame]);
  let at = 0;
  for (let s = 0; s < segs && at < all.length; s++) {
    const n = Math.min(q.segLen[s] as number, all.length - at);
    all.copy(q.view(s), q.segOff[s] as number, at, at + n);
    at += n;
  }
  let left = need;
  heads.forEach((h, k) => {
    const w = Math.min(left, caps[k] as number);
    q.pushUsed(h, w);
    left -= w;
  });
  q.publish();
  return 'ok';
}

test('with mergeable buffers, a frame fills as many one-buffer chains as it needs, num_buffers in its header', () => {
  const { q, desc, avail, used, g } = setup(true);
  q.mrgRx = true;
  const frame = Buffer.alloc(3000);
  for (let i = 0; i < frame.length; i++) frame[i] = i & 0xff;
  for (let i = 0; i < 4; i++) desc(i, GPA + 0x8000 + 0x800 * i, 1024, 2);
  avail(0);
  avail(1);
  assert.equal(q.rxOne(frame, 0, 3000), 1, 'two buffers are not enough: wait for more');
  assert.equal(q.lastAvail, 0);
  assert.equal(used().readUInt16LE(2), 0);
  avail(2);
  avail(3);
  assert.equal(q.rxOne(frame, 0, 3000), 0);
  assert.equal(q.lastAvail, 3);
  assert.equal(used().readUInt16LE(2), 3);
  const lens = [0, 1, 2].map((k) => [used().readUInt32LE(4 + 8 * k), used().readUInt32LE(8 + 8 * k)]);
  assert.deepEqual(lens, [
    [0, 1024],
    [1, 1024],
    [2, HDR + 3000 - 2048],
  ]);
  assert.deepEqual(g.subarray(0x8000, 0x8000 + HDR), Buffer.from('000000000000000000000300', 'hex'));
  const got = Buffer.concat([
    g.subarray(0x8000 + HDR, 0x8000 + 1024),
    g.subarray(0x8800, 0x8800 + 1024),
    g.subarray(0x9000, 0x9000 + HDR + 3000 - 2048),
  ]);
  assert.deepEqual(got, frame);
  desc(4, GPA + 0xa000, 1024, 2 | 1, 5); // a chained receive buffer: the walk's
  avail(4);
  assert.equal(q.rxOne(frame, 0, 100), 0, 'a short frame: the one buffer left');
  assert.equal(q.rxOne(frame, 0, 100), 2);
  q.mrgRx = false;
  assert.equal(q.rxOne(frame, 0, 3000), 2, 'without MRG_RXBUF one chain only: the walk drops it');
});

test('fuzz: with mergeable buffers or not, random receive rings get the same bytes, used ring and refusals from the fast path as from the walk', () => {
  const rnd = prng(0x5eed_0006);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  let fast = 0;
  for (let round = 0; round < 400; round++) {
    const a = setup(false);
    const b = setup(true);
    const mrg = rnd() < 0.7;
    a.q.mrgRx = mrg;
    b.q.mrgRx = mrg;
    for (const s of [a, b]) s.g.fill(0);
    const descs = Array.from({ length: NUM }, () => {
      const good = rnd() < 0.85;
      const addr = good
        ? GPA + 0x8000 + Math.floor(rnd() * 0x6000)
        : pick([GPA + SIZE - 40, 0, GPA - 8, 2 ** 52, GPA + SIZE]);
      const len = good ? pick([16, 100, 700, 1024, 2048]) : pick([0, 0xffffffff, 4096]);
      const flags = good ? pick([2, 2, 2, 2, 3]) : pick([0, 1, 2, 3, 4, 6]);
      return [addr, len, flags, pick([0, 1, 5, 7, 8, 100])] as const;
    });
    const heads = Array.from({ length: Math.floor(rnd() * (NUM + 2)) }, () => pick([0, 1, 2, 3, 4, 5, 6, 7, 9]));
    for (const s of [a, b]) {
      descs.forEach(([addr, len, flags, next], i) => {
        s.desc(i, addr, len, flags, next);
      });
      for (const h of heads) s.avail(h);
    }
    const ra: string[] = [];
    const rb: string[] = [];
    for (let k = 0; k < 6; k++) {
      const frame = Buffer.alloc(pick([14, 60, 600, 1500, 3000, 9000]), (round + k) & 0xff);
      const x = rxWalk(a.q, frame, mrg);
      let y = ['ok', 'empty', 'slow'][b.q.rxOne(frame, 0, frame.length)] as string;
      if (y === 'ok') fast++;
      if (y === 'slow') y = rxWalk(b.q, frame, mrg);
      ra.push(x);
      rb.push(y);
      if (x !== 'ok') break;
    }
    assert.deepEqual(rb, ra, `round ${round}`);
    assert.deepEqual(b.g, a.g, `round ${round}: guest memory`);
    assert.equal(b.q.lastAvail, a.q.lastAvail);
    assert.equal(b.q.usedIdx, a.q.usedIdx);
  }
  assert.ok(fast > 100, `only ${fast} frames took the fast path`);
});
