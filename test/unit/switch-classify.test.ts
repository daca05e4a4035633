/**
 * The switch reads a frame's QoS marks in place (the outer tag's PCP, the
 * IPv4/IPv6 DSCP) and hands them to the classifier (checks.ts frameClass).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { frameClass } from '../../src/net/switch/checks.js';
import { CLASS_BULK, CLASS_INTERACTIVE, CLASS_LATENCY } from '../../src/qos/classes.js';
import { prng } from '../helpers/prng.js';

const MACS = '525400000002525400000001';
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('frame classification in the switch', () => {
  it('takes the class of a tagged frame from its PCP (802.1Q Table I-2)', () => {
    // TPID 8100, TCI: PCP 5 VID 100 (0xa064), then IPv4 with DSCP 0.
    assert.equal(frameClass(hex(`${MACS} 8100 a064 0800 4500 0054`), 0, 22), CLASS_LATENCY);
    assert.equal(frameClass(hex(`${MACS} 8100 2064 0800 4500 0054`), 0, 22), CLASS_BULK); // PCP 1 background
    assert.equal(frameClass(hex(`${MACS} 8100 8064 0800 4500 0054`), 0, 22), CLASS_INTERACTIVE); // PCP 4 video
    assert.equal(frameClass(hex(`${MACS} 88a8 a064 8100 0064 0800 4500`), 0, 24), CLASS_LATENCY); // S-tag PCP 5
  });

  it('falls back to the DSCP of a PCP 0 or untagged IPv4 or IPv6 frame', () => {
    assert.equal(frameClass(hex(`${MACS} 0800 45b8 0054`), 0, 18), CLASS_LATENCY); // EF 46
    assert.equal(frameClass(hex(`${MACS} 0800 4588 0054`), 0, 18), CLASS_INTERACTIVE); // AF41 34
    assert.equal(frameClass(hex(`${MACS} 0800 4520 0054`), 0, 18), CLASS_BULK); // CS1 8
    assert.equal(frameClass(hex(`${MACS} 0800 4500 0054`), 0, 18), -1); // default: unmarked
    assert.equal(frameClass(hex(`${MACS} 8100 0064 0800 45b8 0054`), 0, 22), CLASS_LATENCY);
    // IPv6: version 6, traffic class 0xb8 (EF) spans the first two bytes.
    assert.equal(frameClass(hex(`${MACS} 86dd 6b80 0000`), 0, 18), CLASS_LATENCY);
    assert.equal(frameClass(hex(`${MACS} 86dd 6000 0000`), 0, 18), -1);
    assert.equal(frameClass(hex(`${MACS} 0806 0001 0800`), 0, 18), -1); // ARP
    assert.equal(frameClass(hex(`${MACS} 0800 55b8 0054`), 0, 18), -1); // not version 4
  });

  it('never throws and returns a class or -1 for seeded random bytes of any length', () => {
    const rnd = prng(3);
    const buf = Buffer.alloc(64);
    for (let i = 0; i < 100_000; i++) {
      const len = 14 + Math.floor(rnd() * 30);
      for (let k = 0; k < len; k++) buf[k] = Math.floor(rnd() * 256);
      if (rnd() < 0.5) buf.writeUInt16BE([0x8100, 0x0800, 0x86dd, 0x88a8][i % 4] as number, 12);
      const c = frameClass(buf, 0, len);
      assert.ok(Number.isInteger(c) && c >= -1 && c <= CLASS_BULK, `class ${c} for len ${len}`);
    }
  });
});
