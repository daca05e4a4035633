/**
 * The Internet checksum (RFC 1071) over bytes in place: 16-bit ones'-complement
 * sums, folded. No allocation. Long ranges are summed by the native addon
 * (src/native/c/csum.c) when it is built.
 */
import { native } from '../../native/index.js';

/** Ranges at least this long are summed by the native addon when it is built (a call costs about as much as 64 bytes in JavaScript). */
const NATIVE_MIN = 128;
/** The addon's inetSum; null when the addon is missing (then JavaScript sums everything). */
let nativeSum: ((buf: Uint8Array, from: number, to: number) => number) | null | undefined;

function loadNativeSum(): void {
  try {
    const n = native();
    nativeSum = (buf, from, to) => n.inetSum(buf, from, to);
  } catch {
    nativeSum = null;
  }
}

/**
 * Sum of the big-endian 16-bit words of `buf[from .. to)` (an odd last byte is
 * padded with zero), plus `initial`, not necessarily folded (long ranges come
 * back folded from the addon: the same value once folded). Safe for any
 * frame: 64 KiB of 0xffff words stays far below 2^53.
 */
export function sum16(buf: Buffer, from: number, to: number, initial = 0): number {
  if (to - from >= NATIVE_MIN && to <= buf.length && from >= 0) {
    if (nativeSum === undefined) loadNativeSum();
    if (nativeSum) return initial + nativeSum(buf, from, to);
  }
  return sum16Js(buf, from, to, initial);
}

/** {@link sum16} in JavaScript only (unfolded). */
export function sum16Js(buf: Buffer, from: number, to: number, initial = 0): number {
  let sum = initial;
  let i = from;
  // Hot loop on segmentation: direct indexing, four words per turn.
  for (; i + 7 < to; i += 8) {
    sum +=
      (((buf[i] as number) << 8) | (buf[i + 1] as number)) +
      (((buf[i + 2] as number) << 8) | (buf[i + 3] as number)) +
      (((buf[i + 4] as number) << 8) | (buf[i + 5] as number)) +
      (((buf[i + 6] as number) << 8) | (buf[i + 7] as number));
  }
  for (; i + 1 < to; i += 2) sum += ((buf[i] as number) << 8) | (buf[i + 1] as number);
  if (i < to) sum += (buf[i] as number) << 8;
  return sum;
}

/** Folds a sum from {@link sum16} to 16 bits (end-around carry). */
export function fold(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The checksum field value for a folded or unfolded sum: its complement, 16 bits. */
export function complement(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/**
 * Ones'-complement sum of buf[from .. to) folded into the 16-bit Internet
 * checksum, complemented; 0 becomes 0xffff (RFC 768: a UDP checksum of 0 means
 * none; for TCP the two are the same number in ones'-complement).
 */
export function finishChecksum(buf: Buffer, from: number, to: number): number {
  const c = complement(sum16(buf, from, to));
  return c === 0 ? 0xffff : c;
}
