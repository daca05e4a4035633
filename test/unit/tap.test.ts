import assert from 'node:assert/strict';
import { test } from 'node:test';
import { finishChecksum } from '../../src/net/offload/checksum.js';

test('completes an IPv4 header checksum byte-exactly (RFC 1071 sum over the header)', () => {
  // 20-byte IPv4 header with its checksum field zeroed; the right checksum is 0xb861.
  const hdr = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
  assert.equal(finishChecksum(hdr, 0, hdr.length), 0xb861);
  hdr.writeUInt16BE(0xb861, 10);
  assert.equal(finishChecksum(hdr, 0, hdr.length), 0xffff); // a valid header sums to zero: 0 is sent as 0xffff
});

test('pads an odd trailing byte with zero and folds every carry', () => {
  assert.equal(finishChecksum(Buffer.from('ff', 'hex'), 0, 1), 0x00ff);
  assert.equal(finishChecksum(Buffer.from('ffffffff01', 'hex'), 0, 5), 0xfeff);
  // Only the range [from, to) counts.
  assert.equal(finishChecksum(Buffer.from('aaaa0001bbbb', 'hex'), 2, 4), 0xfffe);
});
