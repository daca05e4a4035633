import assert from 'node:assert/strict';
import { closeSync, fstatSync, ftruncateSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { native } from '../../src/native/index.js';
import { DirtyLog, GuestMemory, parseMemTable } from '../../src/net/vhost/memory.js';

const n = native();

function memfd(size: number): number {
  const fd = n.memfdCreate('vhost-mem-test');
  ftruncateSync(fd, size);
  return fd;
}

const closed = (fd: number) => assert.throws(() => fstatSync(fd), { code: 'EBADF' });

test('parses SET_MEM_TABLE regions (u64 little-endian) byte for byte', () => {
  const p = Buffer.from(
    '01000000 00000000 0000000000000000 00000a0000000000 0000007f55550000 0000000000000000'.replace(/ /g, ''),
    'hex',
  );
  assert.deepEqual(parseMemTable(p), [{ gpa: 0, size: 0xa0000, uva: 0x55557f000000, mmapOffset: 0 }]);
});

test('maps two regions like QEMU 7.2 sends them and translates both address spaces with bounds', () => {
  // Below 640 KiB, and the rest from 0xc0000 with a matching mmap offset into the same file.
  const fd1 = memfd(1 << 20);
  const fd2 = memfd(1 << 20);
  const front2 = Buffer.from(n.mmap(fd2, 1 << 20, 0, true)); // the front-end's own view of the second file
  const mem = GuestMemory.map(
    n,
    [
      { gpa: 0, size: 0xa0000, uva: 0x7000_0000, mmapOffset: 0 },
      { gpa: 0xc0000, size: 0x40000, uva: 0x7000_0000 + 0xc0000, mmapOffset: 0xc0000 },
    ],
    [fd1, fd2],
  );
  try {
    closed(fd1);
    closed(fd2);
    assert.equal(mem.bytes, 0xa0000 + 0x40000);
    assert.equal(mem.gpa(0x1000, 100), 0x1000);
    assert.equal(mem.region, 0);
    assert.equal(mem.gpa(0xc0010, 16), 0x10);
    assert.equal(mem.region, 1);
    assert.equal(mem.gpa(0x9fff0, 32), -1, 'crosses the end of region 0 into the hole');
    assert.equal(mem.gpa(0xb0000, 1), -1, 'in the hole');
    assert.equal(mem.gpa(0xfffff, 2), -1, 'past the end');
    assert.equal(mem.uva(0x7000_0000 + 0xc0000 + 8, 8), 8);
    assert.equal(mem.uva(0x6fff_ffff, 2), -1);
    assert.equal(mem.uvaToGpa(0x7000_0000 + 0xc0004), 0xc0004);
    // Region 1's bytes are the file's from offset 0xc0000 (what the front-end sees there).
    (mem.views[1] as Buffer)[0] = 0x5a;
    assert.equal(front2[0xc0000], 0x5a);
  } finally {
    mem.unmap();
    mem.unmap();
  }
});

test('refuses overlapping, empty and misaligned tables, closing every fd', () => {
  const fds = [memfd(4096), memfd(4096)];
  assert.throws(
    () =>
      GuestMemory.map(
        n,
        [
          { gpa: 0, size: 4096, uva: 0, mmapOffset: 0 },
          { gpa: 2048, size: 4096, uva: 8192, mmapOffset: 0 },
        ],
        fds,
      ),
    { code: 'ERR_VHOST_MEMORY', message: /overlap/ },
  );
  for (const fd of fds) closed(fd);
  const one = memfd(8192);
  assert.throws(() => GuestMemory.map(n, [{ gpa: 0, size: 4096, uva: 0, mmapOffset: 100 }], [one]), {
    message: /not page aligned/,
  });
  closed(one);
  assert.throws(() => GuestMemory.map(n, [], []), { message: /no regions/ });
  assert.throws(() => GuestMemory.map(n, [{ gpa: 0, size: 4096, uva: 0, mmapOffset: 0 }], [-1]), {
    code: 'ERR_VHOST_MEMORY',
    message: /region 0: cannot fstat its fd/,
  });
});

test('refuses a region larger than its file, naming the region, its size and the file size, and closes every fd', () => {
  const small = memfd(16 << 20);
  const ok = memfd(4096);
  assert.throws(
    () =>
      GuestMemory.map(
        n,
        [
          { gpa: 0x100000, size: 4096, uva: 0x1000, mmapOffset: 0 },
          { gpa: 0x4000_0000, size: 1 << 30, uva: 0x7f00_0000_0000, mmapOffset: 0 },
        ],
        [ok, small],
      ),
    {
      code: 'ERR_VHOST_MEMORY',
      message:
        'region 1 (gpa 0x40000000): 1073741824 bytes at fd offset 0 end at byte 1073741824, but its file holds 16777216 bytes; the front-end must size each memory file to cover its regions',
    },
  );
  closed(small);
  closed(ok);
  // The mmap offset counts: a region that starts inside the file but runs past its end is refused too.
  const fd = memfd(8192);
  assert.throws(() => GuestMemory.map(n, [{ gpa: 0, size: 8192, uva: 0, mmapOffset: 4096 }], [fd]), {
    message: /8192 bytes at fd offset 4096 end at byte 12288, but its file holds 8192 bytes/,
  });
});

test('records whether each memory file is sealed against shrinking', () => {
  const sealedFd = n.memfdCreate('vhost-mem-sealed', true);
  ftruncateSync(sealedFd, 8192);
  n.addSeals(sealedFd, n.F_SEAL_SHRINK | n.F_SEAL_GROW);
  const mem = GuestMemory.map(
    n,
    [
      { gpa: 0, size: 8192, uva: 0, mmapOffset: 0 },
      { gpa: 0x10000, size: 4096, uva: 0x10000, mmapOffset: 0 },
    ],
    [sealedFd, memfd(4096)],
  );
  try {
    assert.deepEqual(mem.sealed, [true, false]);
    assert.equal(mem.allSealed, false);
  } finally {
    mem.unmap();
  }
});

test('a memory file shrunk after mapping reads zeros beyond its end instead of killing the process, and the fault names the region', () => {
  const fd = memfd(64 << 10);
  // The front-end keeps its own fd to the file (the session closes the one it was sent).
  const front = openSync(`/proc/self/fd/${fd}`, 'r+');
  const mem = GuestMemory.map(n, [{ gpa: 0x200000, size: 64 << 10, uva: 0, mmapOffset: 0 }], [fd]);
  try {
    const view = mem.views[0] as Buffer;
    view.fill(0x77);
    assert.equal(mem.fault(), undefined);
    ftruncateSync(front, 16 << 10);
    assert.equal(view[100], 0x77, 'below the new end: the file');
    assert.equal(view[40 << 10], 0, 'beyond it: zeros');
    view[40 << 10] = 1; // a write there lands in private memory, also without a fault
    assert.equal(view[(16 << 10) - 1], 0x77);
    const err = mem.fault();
    assert.equal(err?.code, 'ERR_VHOST_MEMORY_FAULT');
    assert.match(
      err?.message ?? '',
      /^guest memory region 0 \(gpa 0x200000, 65536 bytes at fd offset 0\) faulted 1 time/,
    );
  } finally {
    mem.unmap();
    closeSync(front);
  }
  assert.equal(mem.fault(), undefined, 'nothing is reported once unmapped');
});

test('the dirty log sets one bit per 4 KiB page written, and ignores pages beyond it', () => {
  const lfd = memfd(4096);
  const bits = Buffer.from(n.mmap(lfd, 4096, 0, true)); // the front-end's view of the log
  const log = new DirtyLog(n, lfd, 16, 0);
  try {
    closed(lfd);
    log.mark(0x3000, 1); // page 3
    log.mark(0x7ff0, 0x20); // pages 7 and 8
    log.mark(0x1000 * 200, 10); // beyond 16 bytes of log (128 pages): ignored
    log.mark(0x5000, 0); // nothing written, nothing marked
    assert.equal(bits.subarray(0, 4).toString('hex'), '88010000');
    assert.equal(
      bits.subarray(4).every((b) => b === 0),
      true,
    );
  } finally {
    log.unmap();
  }
});

test('refuses a dirty log that ends beyond its file, and counts a fault when the log file shrinks under it', () => {
  const small = memfd(4096);
  assert.throws(() => new DirtyLog(n, small, 8192, 0), {
    code: 'ERR_VHOST_MEMORY',
    message: 'the dirty log (8192 bytes at fd offset 0) ends beyond its file of 4096 bytes',
  });
  closed(small);
  const fd = memfd(16384);
  const front = openSync(`/proc/self/fd/${fd}`, 'r+');
  const log = new DirtyLog(n, fd, 16384, 0);
  try {
    ftruncateSync(front, 4096);
    log.mark(0x1000 * 8 * 8192, 1); // a bit in the log's third page, now beyond the file
    assert.equal(log.fault()?.code, 'ERR_VHOST_MEMORY_FAULT');
  } finally {
    log.unmap();
    closeSync(front);
  }
});
