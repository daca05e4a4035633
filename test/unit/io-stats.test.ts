import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatExport } from '../../src/cli/export.js';
import { IO_OPS, IoStats, LATENCY_BOUNDS_SECONDS, opIndex } from '../../src/storage/io-stats.js';
import { CMD } from '../../src/storage/nbd/constants.js';

describe('IoStats', () => {
  test('maps every NBD command to its operation, and unknown ones to other', () => {
    assert.equal(IO_OPS[opIndex(CMD.READ)], 'read');
    assert.equal(IO_OPS[opIndex(CMD.WRITE)], 'write');
    assert.equal(IO_OPS[opIndex(CMD.FLUSH)], 'flush');
    assert.equal(IO_OPS[opIndex(CMD.TRIM)], 'trim');
    assert.equal(IO_OPS[opIndex(CMD.CACHE)], 'cache');
    assert.equal(IO_OPS[opIndex(CMD.WRITE_ZEROES)], 'write_zeroes');
    assert.equal(IO_OPS[opIndex(CMD.BLOCK_STATUS)], 'block_status');
    assert.equal(IO_OPS[opIndex(99)], 'other');
  });

  test('puts a latency equal to a bound in that bound’s bucket, one above it in the next, beyond 10 s in the last', () => {
    const s = new IoStats();
    const read = opIndex(CMD.READ);
    for (const ms of [0, 0.05, 0.0501, 1, 10_000, 10_001]) {
      s.begin();
      s.end(read, ms, false);
    }
    const v = s.view().ops.read;
    assert.equal(v.buckets.length, LATENCY_BOUNDS_SECONDS.length + 1);
    assert.equal(v.buckets[0], 2, '0 and 0.05 ms: at most 50 µs');
    assert.equal(v.buckets[1], 1, '0.0501 ms: at most 100 µs');
    assert.equal(v.buckets[LATENCY_BOUNDS_SECONDS.indexOf(0.001)], 1, '1 ms');
    assert.equal(v.buckets[LATENCY_BOUNDS_SECONDS.length - 1], 1, '10 s');
    assert.equal(v.buckets[LATENCY_BOUNDS_SECONDS.length], 1, 'slower than 10 s');
    assert.equal(v.requests, 6);
    assert.ok(Math.abs(v.seconds - 20.0021001) < 1e-9);
  });

  test('counts errors per operation and keeps the most requests in flight at once', () => {
    const s = new IoStats();
    s.begin();
    s.begin();
    s.begin();
    s.end(opIndex(CMD.WRITE), 1, true);
    s.end(opIndex(CMD.WRITE), 1, false);
    s.begin();
    const v = s.view();
    assert.equal(v.in_flight, 2);
    assert.equal(v.max_in_flight, 3);
    assert.equal(v.ops.write.requests, 2);
    assert.equal(v.ops.write.errors, 1);
    assert.equal(v.ops.read.requests, 0);
  });

  test('vmlink export show prints requests in flight and one line per operation used, with mean and bucket bounds', () => {
    const s = new IoStats();
    for (let i = 0; i < 100; i++) {
      s.begin();
      s.end(opIndex(CMD.READ), i < 99 ? 0.2 : 30, false);
    }
    const text = formatExport({
      name: 'disk',
      source: 'api',
      state: 'up',
      reason: 'served',
      backend: { type: 'memory', size: 1024 },
      size: 1024,
      read_only: false,
      weight: 1,
      description: '',
      clients: 0,
      counters: { requests: 100, errors: 0, bytes_read: 0, bytes_written: 0 },
      io: s.view(),
      uri: null,
      spec: {},
    });
    assert.match(text, /in flight\s+0 \(max 1\)/);
    assert.match(text, /read\s+100 requests, 0 errors, mean 498us, p50 <= 250us, p99 <= 250us/);
    assert.doesNotMatch(text, /write\s+\d+ requests/);
  });
});
