/** Configuration errors. */
import type { z } from 'zod';
import { VmlinkError } from '../errors.js';

/** One problem found in a config document: the field path and what is wrong. */
export interface ConfigProblem {
  /** Dotted path of the field, e.g. `ports[0].listen`; empty for the document itself. */
  path: string;
  message: string;
}

export class ConfigError extends VmlinkError {
  override readonly status = 400;
  /** Every problem found (the message lists them too). */
  readonly problems: ConfigProblem[];

  constructor(source: string, problems: ConfigProblem[]) {
    const lines = problems.map((p) => `  ${p.path || '(document)'}: ${p.message}`);
    super('ERR_CONFIG_INVALID', `${source} is not a valid vmlink configuration:\n${lines.join('\n')}`);
    this.problems = problems;
  }
}

/** `ports[0].trunk.vlans.10` from a zod issue path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : s ? `.${String(k)}` : String(k);
  return s;
}

/** Top-level sections of the config file, each a `### \`name\`` heading of docs/daemon.md's reference. */
const SECTIONS = ['host', 'networks', 'ports', 'storage', 'exports', 'overlay', 'links', 'log'];

/** Where the fields at `path` are documented: `docs/daemon.md "Configuration reference", section ports`. */
function docPointer(path: readonly PropertyKey[]): string {
  const top = path[0];
  const section = typeof top === 'string' && SECTIONS.includes(top) ? `, section ${top}` : '';
  return `docs/daemon.md "Configuration reference"${section}`;
}

/** Problems from a zod error, with messages that name the value where zod's do not. */
export function problemsOf(err: z.ZodError): ConfigProblem[] {
  return err.issues.map((i) => {
    let message = i.message;
    if (i.code === 'unrecognized_keys')
      message = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')} (check the spelling; the fields are in ${docPointer(i.path)})`;
    else if (i.code === 'invalid_type' && /received undefined/.test(i.message))
      message = `required field is missing (expected ${i.expected})`;
    return { path: formatPath(i.path), message };
  });
}
