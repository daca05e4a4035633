/** Small helpers shared by benchmark scenarios. */
import { parseMac } from '../src/net/frame.js';

export function parseMacOrThrow(text: string | undefined): number {
  const mac = parseMac(text ?? '');
  if (mac === undefined) throw new Error(`"${text}" is not a MAC address`);
  return mac;
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}
