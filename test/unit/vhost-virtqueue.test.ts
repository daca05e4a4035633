import assert from 'node:assert/strict';
import { ftruncateSync } from 'node:fs';
import { after, test } from 'node:test';
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/net/vhost/memory.js';
import { Virtqueue } from '../../src/net/vhost/virtqueue.js';
import { prng } from '../helpers/prng.js';

const n = native();
const GPA = 0x10000;
const UVA = 0x7000_0000;
const SIZE = 1 << 20;
const NUM = 8;
const DESC = 0;
const AVAIL = 0x1000;
const USED = 0x2000;

/** Guest memory seen from both sides: `g` is the driver's mapping, `mem` the device's. */
function setup(eventIdx = false) {
  const fd = n.memfdCreate('vq-test');
  ftruncateSync(fd, SIZE);
  const ab = n.mmap(fd, SIZE, 0, true);
  const g = Buffer.from(ab);
  const mem = GuestMemory.map(n, [{ gpa: GPA, size: SIZE, uva: UVA, mmapOffset: 0 }], [fd]);
  const q = new Virtqueue(1);
  q.setNum(NUM);
  q.addrs = { flags: 0, desc: UVA + DESC, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
  q.eventIdx = eventIdx;
  q.attach(mem);
  let availIdx = 0;
  const desc = (i: number, off: number, len: number, flags: number, next = 0, table = DESC) => {
    g.writeBigUInt64LE(BigInt(GPA + off), table + 16 * i);
    g.writeUInt32LE(len, table + 16 * i + 8);
    g.writeUInt16LE(flags, table + 16 * i + 12);
    g.writeUInt16LE(next, table + 16 * i + 14);
  };
  const avail = (head: number) => {
    g.writeUInt16LE(head, AVAIL + 4 + 2 * (availIdx % NUM));
    availIdx++;
    g.writeUInt16LE(availIdx & 0xffff, AVAIL + 2);
  };
  cleanups.push(() => {
    mem.unmap();
    n.munmap(ab);
  });
  return { g, q, desc, avail };
}
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

const segs = (q: Virtqueue, count: number) =>
  Array.from({ length: count }, (_, s) => [q.segOff[s], q.segLen[s], (q.segGpa[s] as number) - GPA]);

test('walks a chained descriptor list into segments with offsets in guest memory', () => {
  const { q, desc, avail } = setup();
  desc(0, 0x8000, 12, 1, 3);
  desc(3, 0x9000, 100, 0);
  avail(0);
  assert.equal(q.availCount(), 1);
  const head = q.pop();
  assert.equal(head, 0);
  assert.equal(q.walk(head, false, 0), 2);
  assert.deepEqual(segs(q, 2), [
    [0x8000, 12, 0x8000],
    [0x9000, 100, 0x9000],
  ]);
});

test('follows an indirect table, and refuses nesting, INDIRECT with NEXT, and a misaligned table length', () => {
  const { q, desc, avail } = setup();
  const T = 0x4000;
  desc(0, 0xa000, 64, 3, 1, T);
  desc(1, 0xb000, 1500, 2, 0, T);
  desc(2, T, 32, 4);
  avail(2);
  assert.equal(q.walk(q.pop(), true, 0), 2);
  assert.deepEqual(segs(q, 2), [
    [0xa000, 64, 0xa000],
    [0xb000, 1500, 0xb000],
  ]);
  desc(0, T, 16, 4, 0, T); // an indirect entry inside the indirect table
  assert.equal(q.walk(2, true, 0), -1);
  assert.match(q.error, /nested indirect/);
  desc(2, T, 32, 4 | 1, 3);
  assert.equal(q.walk(2, true, 0), -1);
  assert.match(q.error, /both INDIRECT and NEXT/);
  desc(2, T, 20, 4);
  assert.equal(q.walk(2, true, 0), -1);
  assert.match(q.error, /indirect table of 20 bytes/);
});

test('publishes used entries before the used index, and counts interrupts with EVENT_IDX', () => {
  const { g, q, desc, avail } = setup(true);
  for (let i = 0; i < 4; i++) {
    desc(i, 0x8000 + 0x800 * i, 100, 0);
    avail(i);
  }
  g.writeUInt16LE(1, AVAIL + 4 + 2 * NUM); // used_event: interrupt once used idx passes 1
  for (let i = 0; i < 2; i++) q.pushUsed(q.pop(), 0);
  assert.equal(g.readUInt16LE(USED + 2), 0, 'nothing visible before publish');
  q.publish();
  assert.equal(g.readUInt16LE(USED + 2), 2);
  assert.deepEqual([g.readUInt32LE(USED + 4), g.readUInt32LE(USED + 12)], [0, 1]);
  assert.equal(q.needsCall(), true, 'used idx went 0 -> 2, past used_event 1');
  q.pushUsed(q.pop(), 0);
  q.publish();
  assert.equal(q.needsCall(), false, 'used_event 1 was already passed');
  assert.equal(q.armKick(), false, 'the available index did not move');
  // Not 3 (the next slot to read): the driver already made that one available and would never kick again.
  assert.equal(g.readUInt16LE(USED + 4 + 8 * NUM), 4, 'avail_event = the available index: the next buffer added kicks');
});

test('without EVENT_IDX, honours the NO_INTERRUPT flag', () => {
  const { g, q, desc, avail } = setup(false);
  desc(0, 0x8000, 10, 0);
  avail(0);
  g.writeUInt16LE(1, AVAIL);
  q.pushUsed(q.pop(), 0);
  q.publish();
  assert.equal(q.needsCall(), false);
});

test('refuses loops, out-of-memory buffers, wrong directions and runaway indexes', () => {
  const { g, q, desc, avail } = setup();
  desc(0, 0x8000, 10, 1, 1);
  desc(1, 0x8000, 10, 1, 0);
  assert.equal(q.walk(0, false, 0), -1);
  assert.match(q.error, /longer than 8/);
  desc(0, SIZE - 4, 10, 0);
  assert.equal(q.walk(0, false, 0), -1);
  assert.match(q.error, /outside guest memory/);
  desc(0, 0x8000, 10, 2);
  assert.equal(q.walk(0, false, 0), -1);
  assert.match(q.error, /device-writable in a transmit queue/);
  desc(0, 0x8000, 10, 1, 9);
  assert.equal(q.walk(0, false, 0), -1);
  assert.match(q.error, /next index 9/);
  avail(0);
  g.writeUInt16LE(NUM + 2, AVAIL + 2);
  assert.equal(q.availCount(), -1);
  assert.match(q.error, /entries ahead/);
});

test('refuses rings outside memory or misaligned', () => {
  const { q } = setup();
  q.addrs = { flags: 0, desc: UVA + SIZE - 16, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
  const mem = GuestMemory.map(n, [{ gpa: GPA, size: SIZE, uva: UVA, mmapOffset: 0 }], [memfd()]);
  cleanups.push(() => mem.unmap());
  assert.throws(() => q.attach(mem), { code: 'ERR_VHOST_RING', message: /outside the memory table/ });
  q.addrs = { flags: 0, desc: UVA + 8, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
  assert.throws(() => q.attach(mem), { code: 'ERR_VHOST_RING', message: /not 16-byte aligned/ });
});

test('fuzz: random descriptor tables and indexes never throw and never yield a segment outside memory', () => {
  const { g, q } = setup();
  const rnd = prng(0xfeed);
  const int = (k: number) => Math.floor(rnd() * k);
  for (let round = 0; round < 3000; round++) {
    for (let i = 0; i < NUM; i++) {
      const d = DESC + 16 * i;
      const addr = int(4) === 0 ? int(2 ** 40) : GPA + int(SIZE);
      g.writeBigUInt64LE(BigInt(addr), d);
      g.writeUInt32LE(int(3) === 0 ? int(2 ** 32) : int(4096), d + 8);
      g.writeUInt16LE(int(8), d + 12);
      g.writeUInt16LE(int(NUM + 2), d + 14);
    }
    // Indirect tables point into the same table area sometimes.
    g.writeUInt16LE(int(NUM * 2), AVAIL + 4 + 2 * int(NUM));
    g.writeUInt16LE(int(0x10000), AVAIL + 2);
    const c = q.availCount();
    if (c <= 0) continue;
    const head = q.pop();
    if (head < 0) continue;
    const count = q.walk(head, int(2) === 1, 0);
    if (count < 0) {
      assert.ok(q.error.length > 0);
      continue;
    }
    for (let s = 0; s < count; s++) {
      const gpa = q.segGpa[s] as number;
      assert.ok(gpa >= GPA && gpa + (q.segLen[s] as number) <= GPA + SIZE);
      assert.equal(q.segOff[s], gpa - GPA);
    }
  }
});

function memfd(): number {
  const fd = n.memfdCreate('vq-test-2');
  ftruncateSync(fd, SIZE);
  return fd;
}
