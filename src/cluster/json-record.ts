/** Values read from etcd: the JSON object a key holds, or why it is not one (reported by key, then skipped). */
export function jsonObject(buf: Buffer): Record<string, unknown> | string {
  let v: unknown;
  try {
    v = JSON.parse(buf.toString());
  } catch {
    return 'not JSON';
  }
  if (!v || typeof v !== 'object') return 'not an object';
  return v as Record<string, unknown>;
}
