/**
 * Properties of the TypeScript ring walk (virtqueue.ts) over guest memory
 * a guest filled arbitrarily, with fast-check: descriptors (indirect tables
 * and chains included) and available-ring entries of any value never make
 * it throw; it either refuses with a reason, or returns segments that all
 * lie inside guest memory, in the right number and direction. The C fast
 * path has libFuzzer harnesses of its own (fuzz/vring-*.c).
 */
import assert from 'node:assert/strict';
import { ftruncateSync } from 'node:fs';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { native } from '../../src/native/index.js';
import { DESC_F_INDIRECT } from '../../src/net/vhost/constants.js';
import { GuestMemory } from '../../src/net/vhost/memory.js';
import { Virtqueue } from '../../src/net/vhost/virtqueue.js';

const n = native();
const GPA = 0x10000;
const UVA = 0x7000_0000;
const SIZE = 0x10000;
const NUM = 16;
const AVAIL = 0x1000;
const USED = 0x2000;
/** Where indirect tables and buffers may be: the rest of the 64 KiB. */
const DATA = 0x3000;

const fd = n.memfdCreate('vq-props');
ftruncateSync(fd, SIZE);
const ab = n.mmap(fd, SIZE, 0, true);
const g = Buffer.from(ab);
const mem = GuestMemory.map(n, [{ gpa: GPA, size: SIZE, uva: UVA, mmapOffset: 0 }], [fd]);
after(() => {
  mem.unmap();
  n.munmap(ab);
});

/** A descriptor as a guest may write it: addresses often near memory (and its edges), flags from the meaningful bits. */
const descArb = fc.record({
  addr: fc.oneof(
    fc.integer({ min: GPA - 64, max: GPA + SIZE + 64 }),
    fc.constantFrom(0, 2 ** 53 - 1, 2 ** 32, GPA + SIZE - 16),
  ),
  len: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(16, 32, 2 ** 32 - 1, 2 ** 31)),
  flags: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff })),
  next: fc.oneof(fc.integer({ min: 0, max: NUM }), fc.integer({ min: 0, max: 0xffff })),
});

function writeDesc(at: number, d: { addr: number; len: number; flags: number; next: number }): void {
  g.writeBigUInt64LE(BigInt(d.addr), at);
  g.writeUInt32LE(d.len >>> 0, at + 8);
  g.writeUInt16LE(d.flags, at + 12);
  g.writeUInt16LE(d.next, at + 14);
}

test('walking arbitrary descriptor tables (chains, loops, indirect tables) never throws; what it accepts lies inside guest memory', () => {
  fc.assert(
    fc.property(
      fc.array(descArb, { minLength: NUM, maxLength: NUM }),
      fc.array(descArb, { minLength: 1, maxLength: 24 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: NUM }),
      fc.boolean(),
      fc.boolean(),
      (table, indirect, heads, writable, fast) => {
        g.fill(0, 0, DATA + 16 * 24);
        for (const [i, d] of table.entries()) writeDesc(16 * i, d);
        for (const [i, d] of indirect.entries()) writeDesc(DATA + 16 * i, d);
        // Descriptor 0 points at the indirect table, so heads of 0 walk into it.
        writeDesc(0, { addr: GPA + DATA, len: 16 * indirect.length, flags: DESC_F_INDIRECT, next: 0 });
        for (const [i, h] of heads.entries()) g.writeUInt16LE(h, AVAIL + 4 + 2 * i);
        g.writeUInt16LE(heads.length, AVAIL + 2);
        const q = new Virtqueue(writable ? 0 : 1, fast ? n : undefined);
        q.setNum(NUM);
        q.addrs = { flags: 0, desc: UVA, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
        q.attach(mem);
        try {
          assert.equal(q.availCount(), heads.length);
          for (let k = 0; k < heads.length; k++) {
            const head = q.pop();
            if (head < 0) {
              assert.match(q.error, /beyond queue size/);
              continue;
            }
            const segs = q.walk(head, writable, 0);
            if (segs < 0) {
              assert.match(q.error, /^ring \d+: ./);
              continue;
            }
            assert.ok(segs <= NUM, `at most a queue size of buffers (${segs})`);
            for (let s = 0; s < segs; s++) {
              const off = q.segOff[s] as number;
              const len = q.segLen[s] as number;
              assert.ok(len > 0 && off >= 0 && off + len <= q.view(s).length, `segment ${s} inside memory`);
              assert.equal((q.segGpa[s] as number) - GPA, off);
            }
            q.pushUsed(head, 0);
          }
          q.publish();
        } finally {
          q.detach();
        }
      },
    ),
    { numRuns: 1500 },
  );
});

test('an available index anywhere never makes availCount or pop throw: a jump beyond the queue size is refused with a reason', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), (idx, last) => {
      g.writeUInt16LE(idx, AVAIL + 2);
      const q = new Virtqueue(1);
      q.setNum(NUM);
      q.addrs = { flags: 0, desc: UVA, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
      q.attach(mem);
      q.lastAvail = last;
      const c = q.availCount();
      const ahead = (idx - last) & 0xffff;
      if (ahead > NUM) {
        assert.equal(c, -1);
        assert.match(q.error, /entries ahead/);
      } else {
        assert.equal(c, ahead);
        for (let k = 0; k < c; k++) assert.ok(q.pop() >= -1);
      }
      q.detach();
    }),
    { numRuns: 2000 },
  );
});
