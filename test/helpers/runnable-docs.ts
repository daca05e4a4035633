/**
 * Examples in the docs that run: fenced blocks whose info string has the word
 * `runnable`, taken from a Markdown file in order and turned into one bash
 * script, so an example that no longer works fails the test suite.
 *
 * - ` ```sh runnable ` — shell lines, run as written;
 * - ` ```console runnable ` — a transcript: the lines that start with `$ ` are
 *   run, the rest (the output shown) is not checked;
 * - ` ```yaml runnable file=/etc/vmlink/vmlink.yaml ` — written to that file.
 *
 * The system paths the docs use (`/etc/vmlink`, `/run/vmlink`,
 * `/var/lib/vmlink`) are mapped into a scratch directory, so the examples run
 * beside a real installation; `vmlink` is this checkout's command.
 */

/** One runnable block: where it starts (1-based line) and what it is. */
export interface RunnableBlock {
  line: number;
  kind: 'sh' | 'console' | 'file';
  /** Shell text (sh, console) or file content (file). */
  text: string;
  /** For `file`: the path to write. */
  file?: string;
}

/** The system directories the docs name, mapped under the scratch directory. */
export const MAPPED_DIRS = ['/etc/vmlink', '/run/vmlink', '/var/lib/vmlink'] as const;

/** Every runnable block of a Markdown text, in order. */
export function runnableBlocks(markdown: string): RunnableBlock[] {
  const blocks: RunnableBlock[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w+)(.*)$/.exec(lines[i] as string);
    if (!open) continue;
    const end = lines.indexOf('```', i + 1);
    if (end < 0) throw new Error(`line ${i + 1}: a fenced block that is never closed`);
    const words = (open[2] as string).trim().split(/\s+/);
    const body = lines.slice(i + 1, end).join('\n');
    if (words.includes('runnable')) {
      const lang = open[1] as string;
      const file = words.find((w) => w.startsWith('file='))?.slice(5);
      if (file !== undefined) blocks.push({ line: i + 1, kind: 'file', text: `${body}\n`, file });
      else if (lang === 'console') blocks.push({ line: i + 1, kind: 'console', text: body });
      else if (lang === 'sh' || lang === 'bash') blocks.push({ line: i + 1, kind: 'sh', text: body });
      else throw new Error(`line ${i + 1}: a runnable ${lang} block needs file=PATH`);
    }
    i = end;
  }
  return blocks;
}

/** `text` with the docs' system directories moved under `scratch`. */
export function mapPaths(text: string, scratch: string): string {
  let out = text;
  for (const d of MAPPED_DIRS) out = out.replaceAll(d, `${scratch}${d}`);
  return out;
}

/**
 * One bash script that runs the blocks in order in `scratch`: stops at the
 * first failing command (naming the block), and stops every background job
 * (the daemons the examples start) on the way out.
 */
export function scriptOf(doc: string, blocks: readonly RunnableBlock[], scratch: string): string {
  const out = [
    'set -euo pipefail',
    `cd '${scratch}'`,
    `mkdir -p ${MAPPED_DIRS.map((d) => `'${scratch}${d}'`).join(' ')}`,
    // Background jobs (daemons) get SIGTERM and are waited for, so they stop gracefully.
    "trap 'for p in $(jobs -p); do kill $p 2>/dev/null || true; done; wait' EXIT",
  ];
  for (const b of blocks) {
    out.push(`echo "== ${doc}:${b.line}" >&2`);
    if (b.kind === 'file') {
      const path = mapPaths(b.file as string, scratch);
      out.push(
        `mkdir -p "$(dirname '${path}')"`,
        `cat > '${path}' <<'VMLINK_DOC_EOF'`,
        mapPaths(b.text, scratch).trimEnd(),
        'VMLINK_DOC_EOF',
      );
    } else if (b.kind === 'sh') {
      out.push(mapPaths(b.text, scratch));
    } else {
      for (const l of b.text.split('\n')) {
        if (l.startsWith('$ '))
          out.push(`echo '+ ${l.slice(2).replaceAll("'", `'\\''`)}' >&2`, mapPaths(l.slice(2), scratch));
      }
    }
  }
  return `${out.join('\n')}\n`;
}
