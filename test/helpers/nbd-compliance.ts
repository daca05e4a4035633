/**
 * The BlockBackend compliance suite: every backend kind passes the same
 * tests (read/write round trips, zeroes, trim, extents, range and read-only
 * errors, flush). Call {@link backendCompliance} inside a describe().
 */
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { hasCode } from '../../src/errors.js';
import type { BlockBackend } from '../../src/storage/backend.js';
import { BackendError } from '../../src/storage/errors.js';
import { NBD_ERR, STATE_ZERO } from '../../src/storage/nbd/constants.js';

export interface BackendFactory {
  /** A fresh writable backend of `size` bytes, initially reading as zeroes. */
  writable(size: number): Promise<BlockBackend>;
  /** A fresh read-only backend of `size` bytes (optional). */
  readOnly?(size: number): Promise<BlockBackend>;
}

const SIZE = 4 * 1024 * 1024;

/** Deterministic pseudo-random bytes. */
export function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

async function rejectsWith(p: Promise<unknown>, errno: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    assert.equal(err.errno, errno, `errno ${err.errno} (${err.message})`);
    return true;
  });
}

export function backendCompliance(f: BackendFactory): void {
  const opened: BlockBackend[] = [];
  const make = async (size = SIZE): Promise<BlockBackend> => {
    const b = await f.writable(size);
    opened.push(b);
    return b;
  };
  after(async () => {
    await Promise.allSettled(opened.map((b) => b.close()));
  });

  it('reports its size and reads zeroes before anything is written', async () => {
    const b = await make();
    assert.equal(b.size, SIZE);
    assert.deepEqual(await b.read(SIZE - 100_000, 100_000), Buffer.alloc(100_000));
  });

  it('reads back what was written, across block boundaries and at unaligned offsets', async () => {
    const b = await make();
    const data = pattern(200_001, 7);
    await b.write(65_535, data, false);
    await b.write(SIZE - 3, Buffer.from('xyz'), true);
    assert.deepEqual(await b.read(65_535, data.length), data);
    assert.deepEqual(await b.read(65_530, 10), Buffer.concat([Buffer.alloc(5), data.subarray(0, 5)]));
    assert.equal((await b.read(SIZE - 3, 3)).toString(), 'xyz');
  });

  it('keeps both of two concurrent writes to different parts of one block', async () => {
    const b = await make();
    await Promise.all([b.write(100, Buffer.alloc(100, 1), false), b.write(1000, Buffer.alloc(100, 2), false)]);
    const r = await b.read(0, 2000);
    assert.deepEqual(r.subarray(100, 200), Buffer.alloc(100, 1));
    assert.deepEqual(r.subarray(1000, 1100), Buffer.alloc(100, 2));
    assert.equal(r[99], 0);
  });

  it('makes a range read as zeroes with writeZeroes, with and without NO_HOLE', async () => {
    const b = await make();
    await b.write(0, pattern(300_000, 3), false);
    await b.writeZeroes(1000, 150_000, { noHole: false, fastZero: false, fua: false });
    await b.writeZeroes(200_000, 10, { noHole: true, fastZero: false, fua: true });
    const r = await b.read(0, 300_000);
    assert.deepEqual(r.subarray(1000, 151_000), Buffer.alloc(150_000));
    assert.deepEqual(r.subarray(200_000, 200_010), Buffer.alloc(10));
    assert.deepEqual(r.subarray(0, 1000), pattern(300_000, 3).subarray(0, 1000));
    assert.deepEqual(r.subarray(151_000, 200_000), pattern(300_000, 3).subarray(151_000, 200_000));
  });

  it('either zeroes fast or refuses FAST_ZERO with ENOTSUP without changing the data', async () => {
    const b = await make();
    await b.write(0, Buffer.alloc(4096, 9), false);
    try {
      await b.writeZeroes(0, 4096, { noHole: false, fastZero: true, fua: false });
      assert.deepEqual(await b.read(0, 4096), Buffer.alloc(4096));
    } catch (err) {
      assert.ok(hasCode(err, 'ERR_NBD_NOT_FAST'), String(err));
      assert.equal((err as BackendError).errno, NBD_ERR.ENOTSUP);
      assert.deepEqual(await b.read(0, 4096), Buffer.alloc(4096, 9));
    }
  });

  it('accepts trim anywhere in range and a write afterwards reads back', async () => {
    const b = await make();
    await b.write(0, pattern(256 * 1024, 5), false);
    await b.trim(0, 256 * 1024, false);
    await b.trim(SIZE - 65536, 65536, true);
    await b.write(4096, Buffer.alloc(4096, 0x5a), false);
    assert.deepEqual(await b.read(4096, 4096), Buffer.alloc(4096, 0x5a));
  });

  it('describes allocation with extents that cover the range in order and agree with the data', async () => {
    const b = await make();
    await b.write(1 << 20, pattern(65536, 11), false);
    let pos = 0;
    while (pos < SIZE) {
      const ext = await b.extents(pos, SIZE - pos);
      assert.ok(ext.length > 0, 'at least one extent');
      for (const e of ext) {
        assert.ok(e.length > 0 && pos + e.length <= SIZE, `extent ${e.length} at ${pos}`);
        if (e.flags & STATE_ZERO) {
          const r = await b.read(pos, e.length);
          assert.ok(
            r.every((x) => x === 0),
            `extent at ${pos} says zero but is not`,
          );
        }
        pos += e.length;
      }
    }
    assert.equal(pos, SIZE);
  });

  it('refuses ranges beyond the end: EINVAL for read, trim and extents, ENOSPC for writes', async () => {
    const b = await make();
    await rejectsWith(b.read(SIZE - 1, 2), NBD_ERR.EINVAL);
    await rejectsWith(b.write(SIZE, Buffer.alloc(1), false), NBD_ERR.ENOSPC);
    await rejectsWith(b.writeZeroes(SIZE - 1, 2, { noHole: false, fastZero: false, fua: false }), NBD_ERR.ENOSPC);
    await rejectsWith(b.trim(SIZE, 1, false), NBD_ERR.EINVAL);
    await rejectsWith(b.extents(SIZE, 1), NBD_ERR.EINVAL);
  });

  it('flushes without error, twice in a row', async () => {
    const b = await make();
    await b.write(0, Buffer.alloc(10, 1), false);
    await b.flush();
    await b.flush();
  });

  if (f.readOnly) {
    const ro = f.readOnly.bind(f);
    it('refuses writes, zeroes and trims with EPERM when read-only, and still reads', async () => {
      const b = await ro(SIZE);
      opened.push(b);
      assert.equal(b.readOnly, true);
      await rejectsWith(b.write(0, Buffer.alloc(1), false), NBD_ERR.EPERM);
      await rejectsWith(b.writeZeroes(0, 1, { noHole: false, fastZero: false, fua: false }), NBD_ERR.EPERM);
      await rejectsWith(b.trim(0, 1, false), NBD_ERR.EPERM);
      assert.equal((await b.read(0, 10)).length, 10);
    });
  }
}
