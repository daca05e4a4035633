import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CLASS_BEST_EFFORT,
  CLASS_BULK,
  CLASS_INTERACTIVE,
  CLASS_LATENCY,
  classify,
  effectiveClass,
} from '../../src/qos/classes.js';
import { prng } from '../helpers/prng.js';

const MACS = '525400000002525400000001';
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('QoS classifier', () => {
  it('takes the class of a tagged frame from its PCP (802.1Q Table I-2)', () => {
    // TPID 8100, TCI: PCP 5 VID 100 (0xa064), then IPv4 with DSCP 0.
    assert.equal(classify(hex(`${MACS} 8100 a064 0800 4500 0054`), 0, 22), CLASS_LATENCY);
    assert.equal(classify(hex(`${MACS} 8100 2064 0800 4500 0054`), 0, 22), CLASS_BULK); // PCP 1 background
    assert.equal(classify(hex(`${MACS} 8100 8064 0800 4500 0054`), 0, 22), CLASS_INTERACTIVE); // PCP 4 video
  });

  it('falls back to the DSCP of a PCP 0 or untagged IPv4 or IPv6 frame', () => {
    assert.equal(classify(hex(`${MACS} 0800 45b8 0054`), 0, 18), CLASS_LATENCY); // EF 46
    assert.equal(classify(hex(`${MACS} 0800 4588 0054`), 0, 18), CLASS_INTERACTIVE); // AF41 34
    assert.equal(classify(hex(`${MACS} 0800 4520 0054`), 0, 18), CLASS_BULK); // CS1 8
    assert.equal(classify(hex(`${MACS} 0800 4500 0054`), 0, 18), -1); // default: unmarked
    assert.equal(classify(hex(`${MACS} 8100 0064 0800 45b8 0054`), 0, 22), CLASS_LATENCY);
    // IPv6: version 6, traffic class 0xb8 (EF) spans the first two bytes.
    assert.equal(classify(hex(`${MACS} 86dd 6b80 0000`), 0, 18), CLASS_LATENCY);
    assert.equal(classify(hex(`${MACS} 86dd 6000 0000`), 0, 18), -1);
    assert.equal(classify(hex(`${MACS} 0806 0001 0800`), 0, 18), -1); // ARP
  });

  it('clamps a guest mark to the class its port is allowed, and ignores marks of an untrusted port', () => {
    assert.equal(effectiveClass(CLASS_LATENCY, CLASS_INTERACTIVE, true), CLASS_INTERACTIVE);
    assert.equal(effectiveClass(CLASS_BULK, CLASS_INTERACTIVE, true), CLASS_BULK);
    assert.equal(effectiveClass(-1, CLASS_BEST_EFFORT, true), CLASS_BEST_EFFORT);
    assert.equal(effectiveClass(CLASS_BULK, CLASS_BEST_EFFORT, false), CLASS_BEST_EFFORT);
  });

  it('never throws and returns a class or -1 for seeded random bytes of any length', () => {
    const rnd = prng(3);
    const buf = Buffer.alloc(64);
    for (let i = 0; i < 100_000; i++) {
      const len = Math.floor(rnd() * 40);
      for (let k = 0; k < len; k++) buf[k] = Math.floor(rnd() * 256);
      if (rnd() < 0.5 && len > 14) buf.writeUInt16BE([0x8100, 0x0800, 0x86dd][i % 3] as number, 12);
      const c = classify(buf, 0, len);
      assert.ok(Number.isInteger(c) && c >= -1 && c <= CLASS_BULK, `class ${c} for len ${len}`);
    }
  });
});
