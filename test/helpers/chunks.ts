/**
 * Cuts `bytes` at the given points (taken modulo its length + 1, deduplicated
 * and sorted) into chunks, each a fresh Buffer: the same bytes fed to a
 * parser in different pieces, for property tests.
 */
export function chunked(bytes: Uint8Array, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    out.push(Buffer.from(bytes.subarray(prev, c)));
    prev = c;
  }
  return out;
}
