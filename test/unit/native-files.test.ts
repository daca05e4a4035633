/**
 * The native addon's block file calls: reads and writes that never wait, holes, and batches on
 * the thread pool.
 */
import assert from 'node:assert/strict';
import { ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { catchErr, nativeFixture } from '../helpers/native-fixture.js';

const { n, dir, own } = nativeFixture();

describe('block files', () => {
  const file = (size: number): number => {
    const path = join(dir, `blk-${Math.random().toString(36).slice(2)}.img`);
    const fd = own(openSync(path, 'w+'));
    ftruncateSync(fd, size);
    return fd;
  };

  test('preadNoWait reads what the page cache holds and returns 0 at the end of the file', () => {
    const fd = file(8192);
    writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, 4096);
    const buf = Buffer.alloc(4096);
    assert.equal(n.preadNoWait(fd, buf, 0, 4096, 4096), 4096);
    assert.ok(buf.every((b) => b === 0xab));
    assert.equal(n.preadNoWait(fd, buf, 0, 4096, 8192), 0);
    assert.equal(catchErr(() => n.preadNoWait(fd, buf, 1, 4096, 0)).code, 'ERR_OUT_OF_RANGE');
    assert.equal(catchErr(() => n.preadNoWait(fd, buf, 0, 16, -1)).code, 'ERR_OUT_OF_RANGE');
    assert.equal(catchErr(() => n.preadNoWait(-1, buf, 0, 16, 0)).code, 'EBADF');
  });

  test('pwriteNoWait writes, or answers -1/-2 when it would block or the file system cannot', () => {
    const fd = file(8192);
    const r = n.pwriteNoWait(fd, Buffer.alloc(512, 1), 0, 512, 0);
    assert.ok(r === 512 || r === -1 || r === -2, String(r));
    if (r === 512) {
      const back = Buffer.alloc(512);
      readSync(fd, back, 0, 512, 0);
      assert.ok(back.every((b) => b === 1));
    }
  });

  test('fallocate punches a hole that SEEK_DATA and SEEK_HOLE then report', () => {
    const fd = file(1 << 20);
    writeSync(fd, Buffer.alloc(1 << 20, 7), 0, 1 << 20, 0);
    assert.equal(n.seekData(fd, 0), 0);
    assert.equal(n.seekHole(fd, 0), 1 << 20);
    n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, 256 << 10, 256 << 10);
    assert.equal(n.seekHole(fd, 0), 256 << 10);
    assert.equal(n.seekData(fd, 256 << 10), 512 << 10);
    const back = Buffer.alloc(4096, 1);
    readSync(fd, back, 0, 4096, 300 << 10);
    assert.ok(
      back.every((b) => b === 0),
      'a punched hole reads as zeroes',
    );
    n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, 512 << 10, 512 << 10);
    assert.equal(n.seekData(fd, 256 << 10), -1, 'only a hole follows: ENXIO gives -1');
    assert.equal(catchErr(() => n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE, 0, 4096)).code, 'EOPNOTSUPP');
    assert.equal(catchErr(() => n.seekData(-1, 0)).syscall, 'lseek SEEK_DATA');
  });

  test('fallocate ZERO_RANGE zeroes in place', () => {
    const fd = file(65536);
    writeSync(fd, Buffer.alloc(65536, 9), 0, 65536, 0);
    n.fallocate(fd, n.FALLOC_FL_ZERO_RANGE | n.FALLOC_FL_KEEP_SIZE, 4096, 8192);
    const back = Buffer.alloc(16384);
    readSync(fd, back, 0, 16384, 0);
    assert.ok(back.subarray(0, 4096).every((b) => b === 9));
    assert.ok(back.subarray(4096, 12288).every((b) => b === 0));
    assert.ok(back.subarray(12288).every((b) => b === 9));
  });

  test('fileBatch runs a batch of pwrites then preads on the pool and reports bytes and errnos', async () => {
    const fd = file(1 << 20);
    const bufs = [Buffer.alloc(4096, 1), Buffer.alloc(100, 2), Buffer.alloc(65536, 3)];
    const pos = Float64Array.of(0, 8192, 500_000);
    const res = new Float64Array(3);
    await new Promise<void>((resolve) => n.fileBatch(fd, true, bufs, pos, res, () => resolve()));
    assert.deepEqual([...res], [4096, 100, 65536]);
    const back = [Buffer.alloc(4096), Buffer.alloc(100), Buffer.alloc(100)];
    await new Promise<void>((resolve) =>
      n.fileBatch(fd, false, back, Float64Array.of(0, 8192, (1 << 20) - 40), res, () => resolve()),
    );
    assert.deepEqual([...res], [4096, 100, 40], 'a read at the end of the file stops short');
    assert.ok(back[0]?.every((b) => b === 1) && back[1]?.every((b) => b === 2));
    await new Promise<void>((resolve) =>
      n.fileBatch(-1, false, [Buffer.alloc(1)], Float64Array.of(0), res, () => resolve()),
    );
    assert.equal(res[0], -9, 'EBADF as -errno');
    assert.equal(
      catchErr(() => n.fileBatch(fd, true, [], new Float64Array(1), res, () => {})).code,
      'ERR_OUT_OF_RANGE',
    );
    assert.equal(
      catchErr(() =>
        n.fileBatch(fd, true, [Buffer.alloc(1)], new Float64Array(1), new Uint32Array(1) as never, () => {}),
      ).code,
      'ERR_INVALID_ARG_TYPE',
    );
  });
});
