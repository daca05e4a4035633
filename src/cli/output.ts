/**
 * Output for people and scripts: aligned tables, `key value` blocks, JSON.
 * Colour only when stdout is a TTY and NO_COLOR is unset.
 */

/** A table column: header text and alignment (numbers read best right-aligned). */
export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** True when output may use ANSI colour. */
export function useColour(stream: { isTTY?: boolean } = process.stdout): boolean {
  return stream.isTTY === true && !process.env['NO_COLOR'] && process.env['TERM'] !== 'dumb';
}

const ANSI = { bold: '\x1b[1m', dim: '\x1b[2m', green: '\x1b[32m', yellow: '\x1b[33m', red: '\x1b[31m' } as const;

/** Wraps `text` in an ANSI style when colour is on. */
export function style(text: string, s: keyof typeof ANSI, colour = useColour()): string {
  return colour ? `${ANSI[s]}${text}\x1b[0m` : text;
}

/** A port state, coloured by health when colour is on. */
export function styleState(state: string, colour = useColour()): string {
  if (state === 'up') return style(state, 'green', colour);
  if (state === 'down' || state === 'closed') return style(state, 'red', colour);
  return style(state, 'yellow', colour);
}

/** Visible width of a string (ignores ANSI escapes). */
function width(s: string): number {
  return s.replace(/\x1b\[[0-9;]*m/g, '').length;
}

function pad(s: string, w: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, w - width(s)));
  return align === 'right' ? fill + s : s + fill;
}

/**
 * Renders rows under headers, columns separated by two spaces, each padded to
 * its widest cell. No trailing spaces. An empty table prints only the header.
 */
export function formatTable(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  colour = useColour(),
): string {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => {
        const align = columns[i]?.align ?? 'left';
        // A left-aligned last column needs no padding (no trailing spaces).
        return pad(cell, i === cells.length - 1 && align === 'left' ? 0 : (widths[i] ?? 0), align);
      })
      .join('  ')
      .trimEnd();
  const head = line(columns.map((c, i) => pad(c.header, widths[i] ?? 0, c.align ?? 'left')));
  const out = [colour ? style(head, 'bold', true) : head];
  for (const r of rows) out.push(line(columns.map((_, i) => r[i] ?? '')));
  return `${out.join('\n')}\n`;
}

/** `key  value` lines with the keys aligned; nested items are indented under a key with an empty value. */
export function formatPairs(pairs: readonly (readonly [string, string])[], colour = useColour()): string {
  const w = Math.max(0, ...pairs.filter(([, v]) => v !== '').map(([k]) => k.length));
  return `${pairs.map(([k, v]) => (v === '' ? style(k, 'bold', colour) : `${k.padEnd(w)}  ${v}`).trimEnd()).join('\n')}\n`;
}

/**
 * Flattens a JSON object into `[dotted.key, text]` pairs for display:
 * `{ listen: 'unix:/a', peer: { addr: 'x' } }` -> `listen unix:/a`, `peer.addr x`.
 */
export function flatten(obj: Record<string, unknown>, prefix = ''): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix + k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0) {
      out.push(...flatten(v as Record<string, unknown>, `${key}.`));
    } else {
      out.push([key, displayValue(v)]);
    }
  }
  return out;
}

/** A scalar or array as people read it: strings bare, arrays comma-separated, the rest as JSON. */
export function displayValue(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.length ? v.map(displayValue).join(', ') : '-';
  return JSON.stringify(v);
}

/** Seconds as `3d 4h`, `5m 2s`, `42s`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** Pretty JSON with a trailing newline, as `--json` prints it. */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Writes to stdout. */
export function print(text: string): void {
  process.stdout.write(text);
}

/**
 * `--libvirt` output: the elements the domain needs (vhost-user's shared
 * memory) as an XML comment, then the device element, on stdout; each note on
 * stderr. `json`: the API answer as JSON instead.
 */
export function printLibvirt(x: { xml: string; domain?: string; notes: string[] }, json: boolean): void {
  if (json) {
    print(formatJson(x));
    return;
  }
  const head = x.domain ? `<!-- the <domain> needs:\n${x.domain}-->\n` : '';
  print(`${head}${x.xml}`);
  for (const n of x.notes) process.stderr.write(`note: ${n}\n`);
}
