import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  blockStatusChunk,
  errorChunk,
  type NbdRequest,
  noneChunk,
  offsetDataHeader,
  offsetHoleChunk,
  RequestParser,
  simpleReply,
} from '../../src/storage/nbd/transmission.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function parser() {
  const reqs: NbdRequest[] = [];
  const errors: string[] = [];
  const p = new RequestParser(
    (r) => reqs.push(r),
    (e) => errors.push(e),
  );
  return { p, reqs, errors };
}

// READ, flags FUA, cookie 0x0102030405060708, offset 0x1000, length 0x200
const READ = '25609513 0001 0000 0102030405060708 0000000000001000 00000200';
// WRITE, cookie 9, offset 0, length 4, payload deadbeef
const WRITE = '25609513 0000 0001 0000000000000009 0000000000000000 00000004 deadbeef';

describe('NBD transmission parser and replies', () => {
  it('parses a request header into type, flags, cookie, offset and length', () => {
    const { p, reqs } = parser();
    p.feed(hex(READ));
    assert.deepEqual(reqs, [
      { type: 0, flags: 1, cookie: 0x0102030405060708n, offset: 0x1000, length: 0x200, data: undefined },
    ]);
  });

  it('parses many requests from one chunk and a write payload split across chunks', () => {
    const { p, reqs } = parser();
    const all = hex(READ + WRITE + READ);
    p.feed(all.subarray(0, 40));
    p.feed(all.subarray(40, 58));
    p.feed(all.subarray(58));
    assert.deepEqual(
      reqs.map((r) => r.type),
      [0, 1, 0],
    );
    assert.equal(reqs[1]?.data?.toString('hex'), 'deadbeef');
    assert.equal(p.buffered, 0);
  });

  it('hands out a write payload that arrived whole as a view of the received bytes', () => {
    const { p, reqs } = parser();
    const buf = hex(WRITE);
    p.feed(buf);
    assert.equal(reqs[0]?.data?.buffer, buf.buffer);
  });

  it('reports a bad magic once and ignores everything after it', () => {
    const { p, reqs, errors } = parser();
    p.feed(hex('25609514' + '00'.repeat(24) + READ));
    p.feed(hex(READ));
    assert.equal(reqs.length, 0);
    assert.deepEqual(errors, ['bad request magic 0x25609514']);
  });

  it('reports a write payload larger than 32 MiB as malformed', () => {
    const { p, errors } = parser();
    p.feed(hex('25609513 0000 0001 0000000000000001 0000000000000000 02000001'));
    assert.match(errors[0] ?? '', /write payload of 33554433 bytes exceeds/);
  });

  it('encodes simple and structured replies byte for byte', () => {
    assert.equal(simpleReply(7n, 22).toString('hex'), '67446698' + '00000016' + '0000000000000007');
    assert.equal(noneChunk(7n).toString('hex'), '668e33ef' + '0001' + '0000' + '0000000000000007' + '00000000');
    assert.equal(
      offsetDataHeader(7n, true, 4096, 512).toString('hex'),
      '668e33ef' + '0001' + '0001' + '0000000000000007' + '00000208' + '0000000000001000',
    );
    assert.equal(
      offsetHoleChunk(7n, false, 0, 65536).toString('hex'),
      '668e33ef' + '0000' + '0002' + '0000000000000007' + '0000000c' + '0000000000000000' + '00010000',
    );
    assert.equal(
      blockStatusChunk(7n, 1, [
        { length: 512, flags: 0 },
        { length: 1024, flags: 3 },
      ]).toString('hex'),
      '668e33ef' +
        '0001' +
        '0005' +
        '0000000000000007' +
        '00000014' +
        '00000001' +
        '00000200' +
        '00000000' +
        '00000400' +
        '00000003',
    );
    assert.equal(
      errorChunk(7n, 5, 'io').toString('hex'),
      '668e33ef' + '0001' + '8001' + '0000000000000007' + '00000008' + '00000005' + '0002' + '696f',
    );
  });
});
