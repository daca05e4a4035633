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

describe('QoS classifier', () => {
  it('takes the class of a tagged frame from its PCP (802.1Q Table I-2), whatever its DSCP', () => {
    assert.equal(classify(5, 0), CLASS_LATENCY);
    assert.equal(classify(1, 46), CLASS_BULK); // PCP 1 background
    assert.equal(classify(2, -1), CLASS_BULK);
    assert.equal(classify(4, 8), CLASS_INTERACTIVE); // PCP 4 video
    assert.equal(classify(7, -1), CLASS_LATENCY);
  });

  it('falls back to the DSCP (RFC 4594) of a PCP 0 or untagged IP frame', () => {
    assert.equal(classify(-1, 46), CLASS_LATENCY); // EF
    assert.equal(classify(0, 46), CLASS_LATENCY);
    assert.equal(classify(-1, 34), CLASS_INTERACTIVE); // AF41
    assert.equal(classify(-1, 8), CLASS_BULK); // CS1
    assert.equal(classify(-1, 1), CLASS_BULK); // LE
    assert.equal(classify(-1, 18), CLASS_BEST_EFFORT); // AF21
    assert.equal(classify(-1, 0), -1); // default: unmarked
    assert.equal(classify(0, -1), -1); // not IP
    assert.equal(classify(-1, -1), -1);
  });

  it('gives a class or -1 for every PCP and DSCP value', () => {
    for (let pcp = -1; pcp < 8; pcp++)
      for (let dscp = -1; dscp < 64; dscp++) {
        const c = classify(pcp, dscp);
        assert.ok(Number.isInteger(c) && c >= -1 && c <= CLASS_BULK, `class ${c} for PCP ${pcp} DSCP ${dscp}`);
      }
  });

  it('clamps a guest mark to the class its port is allowed, and ignores marks of an untrusted port', () => {
    assert.equal(effectiveClass(CLASS_LATENCY, CLASS_INTERACTIVE, true), CLASS_INTERACTIVE);
    assert.equal(effectiveClass(CLASS_BULK, CLASS_INTERACTIVE, true), CLASS_BULK);
    assert.equal(effectiveClass(-1, CLASS_BEST_EFFORT, true), CLASS_BEST_EFFORT);
    assert.equal(effectiveClass(CLASS_BULK, CLASS_BEST_EFFORT, false), CLASS_BEST_EFFORT);
  });
});
