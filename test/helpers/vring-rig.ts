/**
 * A split virtqueue over a fresh memfd as guest memory, for the vring unit
 * tests: the test plays the driver (writes descriptors and the available
 * ring), the Virtqueue is the device.
 */
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { after } from 'node:test';
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/net/vhost/memory.js';
import { Virtqueue } from '../../src/net/vhost/virtqueue.js';

const n = native();
export const GPA = 0x10000;
const UVA = 0x7000_0000;
export const SIZE = 1 << 16;
export const NUM = 8;
export const AVAIL = 0x1000;
export const USED = 0x2000;
/** virtio_net_hdr_v1 bytes in front of every frame. */
export const HDR = 12;
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

/** A ring in fresh guest memory: `g` is the driver's mapping; `fast` gives the Virtqueue the addon's fast path. */
export function setup(fast: boolean) {
  const fd = n.memfdCreate('vring-test');
  ftruncateSync(fd, SIZE);
  // The driver's own fd to the file (the mapping closes the one it is given): to shrink it under the device.
  const own = openSync(`/proc/self/fd/${fd}`, 'r+');
  const ab = n.mmap(fd, SIZE, 0, true);
  const g = Buffer.from(ab);
  const mem = GuestMemory.map(n, [{ gpa: GPA, size: SIZE, uva: UVA, mmapOffset: 0 }], [fd]);
  const q = new Virtqueue(1, fast ? n : undefined);
  q.setNum(NUM);
  q.addrs = { flags: 0, desc: UVA, avail: UVA + AVAIL, used: UVA + USED, log: 0 };
  q.attach(mem);
  cleanups.push(() => {
    mem.unmap();
    n.munmap(ab);
    closeSync(own);
  });
  let availIdx = 0;
  return {
    g,
    q,
    desc(i: number, addr: number, len: number, flags: number, next = 0) {
      g.writeBigUInt64LE(BigInt(addr), 16 * i);
      g.writeUInt32LE(len, 16 * i + 8);
      g.writeUInt16LE(flags, 16 * i + 12);
      g.writeUInt16LE(next, 16 * i + 14);
    },
    avail(head: number) {
      g.writeUInt16LE(head, AVAIL + 4 + 2 * (availIdx % NUM));
      availIdx++;
      g.writeUInt16LE(availIdx & 0xffff, AVAIL + 2);
    },
    used: () => g.subarray(USED, USED + 4 + 8 * NUM),
    mem,
    /** Shrinks the file (as a front-end that did not seal it can). */
    shrink: (len: number) => ftruncateSync(own, len),
  };
}
