/**
 * One place for each fact: every field of the configuration schema
 * (src/config/*.ts) is documented in docs/daemon.md "Configuration
 * reference", in the section of its top-level key (`### \`ports\``). A
 * field counts as documented when its name appears in code (`vnet_hdr`, or
 * inside `{ min, max }`) in that section. A new field without documentation
 * fails here, naming the field and where to write it.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { schemaFields } from '../helpers/schema-fields.js';
import { REPO_ROOT } from '../helpers/vm.js';

const DOC = 'docs/daemon.md';

/** The `### ` sections of the doc's "Configuration reference", by heading line. */
function sections(md: string): { heading: string; body: string }[] {
  const ref = md.split(/^## Configuration reference$/m)[1]?.split(/^## /m)[0] ?? '';
  return ref
    .split(/^(?=### )/m)
    .filter((s) => s.startsWith('### '))
    .map((s) => ({ heading: s.split('\n')[0] as string, body: s }));
}

/** Every word inside inline code spans and fenced blocks of `text`. */
function codeWords(text: string): Set<string> {
  const words = new Set<string>();
  const spans = [...text.matchAll(/```[\s\S]*?```|`[^`\n]+`/g)].map((m) => m[0]);
  for (const s of spans) for (const w of s.match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? []) words.add(w);
  return words;
}

test('every config field is documented in docs/daemon.md, in the section of its top-level key', async () => {
  const md = await readFile(join(REPO_ROOT, DOC), 'utf8');
  const secs = sections(md);
  const problems: string[] = [];
  for (const field of schemaFields(configSchema)) {
    const top = field.split(/[.[]/)[0] as string;
    const sec = secs.find((s) => s.heading.includes(`\`${top}\``));
    if (!sec) {
      problems.push(
        `config section "${top}" has no "### \`${top}\`" heading under "## Configuration reference" in ${DOC}`,
      );
      continue;
    }
    const leaf = field.split('.').pop()?.replace('[]', '') as string;
    if (leaf === '*' || leaf === top) continue;
    if (!codeWords(sec.body).has(leaf)) {
      problems.push(
        `config field "${field}" is not documented: add \`${leaf}\` (default and meaning) to ${DOC}, section "${sec.heading}"`,
      );
    }
  }
  assert.deepEqual(problems, [], `\n${problems.join('\n')}`);
});
