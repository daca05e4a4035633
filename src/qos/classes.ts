/**
 * Traffic classes and the classifier: a frame's class from its 802.1p
 * priority (PCP, IEEE 802.1Q-2018 Table I-2 traffic types) or else from the
 * DSCP of its IPv4/IPv6 header (RFC 4594 service classes).
 *
 * Classes are small integers, 0 the highest: a port's allowed class is a
 * ceiling, and clamping a guest's mark to it is `Math.max(mark, allowed)`.
 */
import { QOS_CLASSES } from './names.js';

/** The strict-priority class (rate-capped on every shaped port). */
export const CLASS_LATENCY = 0;
export const CLASS_INTERACTIVE = 1;
export const CLASS_BEST_EFFORT = 2;
export const CLASS_BULK = 3;
export const CLASS_COUNT = QOS_CLASSES.length;

/** DWRR weight multiplier of each class (the latency class is strict priority and has none). */
export const CLASS_WEIGHT: readonly number[] = [1, 4, 2, 1];

/** The class id of a name, or -1. */
export function classId(name: string): number {
  return (QOS_CLASSES as readonly string[]).indexOf(name);
}

/**
 * 802.1Q-2018 Table I-2: PCP 1 background (BK) and 2 (spare) -> bulk; 0 best
 * effort; 3 critical applications and 4 video -> interactive; 5 voice, 6
 * internetwork control, 7 network control -> latency.
 */
const PCP_CLASS = Int8Array.of(
  CLASS_BEST_EFFORT,
  CLASS_BULK,
  CLASS_BULK,
  CLASS_INTERACTIVE,
  CLASS_INTERACTIVE,
  CLASS_LATENCY,
  CLASS_LATENCY,
  CLASS_LATENCY,
);

/**
 * RFC 4594 §3 / RFC 8622: EF (46), VOICE-ADMIT (44), CS5-CS7 -> latency;
 * CS3/AF3x, CS4/AF4x (24-39) -> interactive; LE (1), CS1/AF1x (8-15) ->
 * bulk; anything else -> best effort. DSCP 0 (default) counts as unmarked.
 */
const DSCP_CLASS = (() => {
  const t = new Int8Array(64).fill(CLASS_BEST_EFFORT);
  t[0] = -1;
  t[1] = CLASS_BULK;
  for (let d = 8; d < 16; d++) t[d] = CLASS_BULK;
  for (let d = 24; d < 40; d++) t[d] = CLASS_INTERACTIVE;
  for (const d of [40, 44, 46, 48, 56]) t[d] = CLASS_LATENCY;
  return t;
})();

/**
 * The class a frame is marked with, from the marks the switch read from its
 * headers: `pcp` the outer 802.1Q tag's priority (0-7, or -1 untagged) and
 * `dscp` its IPv4/IPv6 DSCP (0-63, or -1 not IP). A non-zero PCP decides;
 * else the DSCP; -1 when unmarked (PCP 0 or none, and DSCP 0 or none).
 * qos reads no frame itself (it imports nothing of net): the switch reads
 * the marks with the accessors of src/net/frame/.
 */
export function classify(pcp: number, dscp: number): number {
  if (pcp > 0) return PCP_CLASS[pcp & 7] as number;
  if (dscp < 0) return -1;
  return DSCP_CLASS[dscp & 63] as number;
}

/**
 * The class a port's frame travels in: its mark clamped to the port's allowed
 * class (a guest cannot mark itself above what it was granted), or the port's
 * class when unmarked or when the port does not trust marks.
 */
export function effectiveClass(mark: number, allowed: number, trust: boolean): number {
  if (mark < 0 || !trust) return allowed;
  return Math.max(mark, allowed);
}
