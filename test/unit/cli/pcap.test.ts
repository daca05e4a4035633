import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PcapSplitter } from '../../../src/cli/pcap.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// Little-endian classic pcap header (v2.4, snaplen 262144, Ethernet), then two records of 14 and 2 bytes.
const HEADER = hex('d4c3b2a1 0200 0400 00000000 00000000 00000400 01000000');
const REC1 = hex('01000000 00000000 0e000000 0e000000 ffffffffffff 525400000001 0806');
const REC2 = hex('02000000 00000000 02000000 3c000000 abcd');
const STREAM = Buffer.concat([HEADER, REC1, REC2]);

function feed(s: PcapSplitter, chunks: Buffer[]): Buffer {
  const out: Buffer[] = [];
  for (const c of chunks) {
    const whole = s.push(c);
    if (whole) out.push(whole);
  }
  return Buffer.concat(out);
}

describe('pcap splitter', () => {
  test('passes a stream fed one byte at a time through unchanged, record by record', () => {
    const s = new PcapSplitter();
    const bytes = [...STREAM].map((b) => Buffer.from([b]));
    assert.deepEqual(feed(s, bytes), STREAM);
    assert.equal(s.records, 2);
  });

  test('holds back a partial record, so output cut at any point is header plus whole records', () => {
    for (let cut = 0; cut <= STREAM.length; cut++) {
      const s = new PcapSplitter();
      const out = feed(s, [STREAM.subarray(0, cut)]);
      const expected =
        cut < HEADER.length
          ? Buffer.alloc(0)
          : cut < HEADER.length + REC1.length
            ? HEADER
            : cut < STREAM.length
              ? Buffer.concat([HEADER, REC1])
              : STREAM;
      assert.deepEqual(out, expected, `cut at ${cut}`);
    }
  });

  test('stops after the record limit and passes nothing more', () => {
    const s = new PcapSplitter(1);
    assert.deepEqual(feed(s, [STREAM]), Buffer.concat([HEADER, REC1]));
    assert.equal(s.full, true);
    assert.equal(s.push(REC2), undefined);
    assert.equal(s.records, 1);
  });

  test('reads big-endian files (magic a1b2c3d4 in network order)', () => {
    const be = Buffer.concat([
      hex('a1b2c3d4 0002 0004 00000000 00000000 00040000 00000001'),
      hex('00000001 00000000 00000002 00000002 abcd'),
    ]);
    const s = new PcapSplitter();
    assert.deepEqual(feed(s, [be]), be);
    assert.equal(s.records, 1);
  });

  test('refuses a stream that does not start with a pcap magic', () => {
    const s = new PcapSplitter();
    assert.throws(() => s.push(Buffer.from('{"error":{"code":"ERR_X","message":"no"}}')), { code: 'ERR_PCAP_STREAM' });
  });

  test('refuses a record length no frame can have', () => {
    const s = new PcapSplitter();
    assert.throws(() => s.push(Buffer.concat([HEADER, hex('01000000 00000000 00002000 00002000')])), {
      code: 'ERR_PCAP_STREAM',
    });
  });
});
