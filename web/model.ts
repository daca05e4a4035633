/** Numbers for people: bits/s, frames/s and bytes with SI or binary prefixes. */
const SI = ['', 'k', 'M', 'G', 'T'];

/** 1234567 -> "1.23 M" (SI, three significant digits). */
export function si(n: number): string {
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1000 && i < SI.length - 1) {
    v /= 1000;
    i++;
  }
  const s =
    v === 0
      ? '0'
      : i === 0
        ? v.toFixed(Math.abs(v) >= 10 ? 0 : 1)
        : Math.abs(v) >= 100
          ? v.toFixed(0)
          : v.toPrecision(3);
  return `${s} ${SI[i]}`;
}

export const bits = (bps: number): string => `${si(bps)}bit/s`;
export const perSec = (n: number, unit: string): string => `${si(n)}${unit}/s`;

/** Bytes in binary units: 1536 -> "1.5 KiB". */
export function bytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toPrecision(3)} ${u[i]}`;
}
