import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PcapWriter, pcapHeader, writePcapRecord } from '../../src/net/switch/pcap.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// Broadcast ARP-typed frame from 52:54:00:00:00:01, 22 bytes.
const FRAME = hex('ffffffffffff 525400000001 0806 0001080006040001');

describe('pcap writer', () => {
  test('writes the classic little-endian file header: magic a1b2c3d4, v2.4, snaplen 262144, Ethernet', () => {
    assert.equal(
      pcapHeader().toString('hex'),
      'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + '00000400' + '01000000',
    );
  });

  test('writes a record header with seconds, microseconds, captured and original length, then the bytes', () => {
    const out = Buffer.alloc(64, 0xee);
    const n = writePcapRecord(out, 4, FRAME, 0, FRAME.length, 1_700_000_000_123_456);
    assert.equal(n, 16 + 22);
    assert.equal(
      out.subarray(4, 4 + n).toString('hex'),
      '00f15365' + '40e20100' + '16000000' + '16000000' + FRAME.toString('hex'),
    );
    assert.equal(out[3], 0xee, 'nothing written before the offset');
    assert.equal(out[4 + n], 0xee, 'nothing written after the record');
  });

  test('truncates a frame longer than the snap length but records its original length', () => {
    const out = Buffer.alloc(64);
    const n = writePcapRecord(out, 0, FRAME, 2, 18, 0, 8);
    assert.equal(n, 16 + 8);
    assert.equal(
      out.subarray(0, n).toString('hex'),
      '00000000' + '00000000' + '08000000' + '12000000' + 'ffffffff52540000',
    );
  });

  test('gathers records into one chunk and hands them out once', () => {
    let t = 5_000_001;
    const w = new PcapWriter({ clock: () => t++ });
    assert.equal(w.take(), undefined);
    w.record(FRAME, 0, 14);
    w.record(FRAME, 6, 14);
    assert.equal(w.pending, 60);
    const got = w.take();
    assert.equal(
      got?.toString('hex'),
      '05000000' +
        '01000000' +
        '0e000000' +
        '0e000000' +
        'ffffffffffff5254000000010806' +
        '05000000' +
        '02000000' +
        '0e000000' +
        '0e000000' +
        '5254000000010806000108000604',
    );
    assert.equal(w.pending, 0);
    assert.equal(w.take(), undefined);
  });

  test('starts a new chunk when a record does not fit and keeps earlier records intact', () => {
    const w = new PcapWriter({ chunkSize: 40, clock: () => 0 });
    w.record(FRAME, 0, 22); // 38 bytes: fits the first chunk
    w.record(FRAME, 0, 22); // does not fit the 2 bytes left: a new chunk
    const first = w.take();
    w.record(FRAME, 0, 14);
    const second = w.take();
    assert.equal(first?.length, 76);
    assert.deepEqual(first?.subarray(16, 38), FRAME);
    assert.deepEqual(first?.subarray(54, 76), FRAME);
    assert.equal(second?.length, 30);
    assert.deepEqual(second?.subarray(16, 30), FRAME.subarray(0, 14));
    assert.deepEqual(first?.subarray(54, 76), FRAME, 'a later record does not overwrite a taken one');
  });
});
