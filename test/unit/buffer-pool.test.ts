import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../src/storage/buffer-pool.js';
import { type NbdRequest, RequestParser } from '../../src/storage/nbd/transmission.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('BufferPool', () => {
  it('hands back released memory of the same size class and ignores foreign or repeated releases', () => {
    const pool = new BufferPool(4 << 20);
    const a = pool.acquire(1000_000);
    assert.equal(a.length, 1000_000);
    assert.equal(a.buffer.byteLength, 1 << 20, 'power-of-two class');
    pool.release(a);
    pool.release(a);
    assert.equal(pool.retained, 1 << 20, 'a second release is ignored');
    const b = pool.acquire(600_000);
    assert.equal(b.buffer, a.buffer, 'the same memory again');
    assert.equal(pool.retained, 0);
    pool.release(Buffer.alloc(1 << 20));
    pool.release(b.subarray(10));
    assert.equal(pool.retained, 0, 'buffers it did not hand out (or views into them) are not taken');
  });

  it('keeps at most its retention limit and leaves small sizes to plain allocation', () => {
    const pool = new BufferPool(1 << 20);
    const x = pool.acquire(1 << 20);
    const y = pool.acquire(1 << 20);
    pool.release(x);
    pool.release(y);
    assert.equal(pool.retained, 1 << 20);
    const small = pool.acquire(100);
    pool.release(small);
    assert.equal(pool.retained, 1 << 20);
  });
});

describe('RequestParser over a reused (transient) read buffer', () => {
  it('copies write payloads and the unparsed tail, so reusing the buffer changes nothing parsed', () => {
    const reqs: NbdRequest[] = [];
    const p = new RequestParser(
      (r) => reqs.push(r),
      (e) => assert.fail(e),
      true,
    );
    const shared = Buffer.alloc(256);
    const feed = (b: Buffer): void => {
      b.copy(shared);
      p.feed(shared.subarray(0, b.length));
      shared.fill(0xff);
    };
    // A whole write with its payload, then the first 10 bytes of a READ header.
    const write = hex('25609513 0000 0001 0000000000000009 0000000000000000 00000004 deadbeef');
    const read = hex('25609513 0000 0000 0000000000000007 0000000000001000 00000200');
    feed(Buffer.concat([write, read.subarray(0, 10)]));
    feed(read.subarray(10));
    assert.equal(reqs.length, 2);
    assert.equal(reqs[0]?.data?.toString('hex'), 'deadbeef');
    assert.equal(reqs[1]?.cookie, 7n);
    assert.equal(reqs[1]?.offset, 0x1000);
  });
});
