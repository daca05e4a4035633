/** Loads and validates the YAML configuration file. */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { describeError } from '../errors.js';
import { ConfigError, problemsOf } from './errors.js';
import { type Config, configSchema } from './schema.js';

/** Validates a parsed document; throws {@link ConfigError} listing every problem. */
export function validateConfig(doc: unknown, source = 'configuration'): Config {
  const r = configSchema.safeParse(doc);
  if (!r.success) throw new ConfigError(source, problemsOf(r.error));
  return r.data;
}

/** Parses YAML text and validates it. */
export function parseConfig(text: string, source = 'configuration'): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({ path: '', message: `YAML syntax: ${e.message.split('\n')[0]}` })),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // toJS resolves aliases: an alias to no anchor (`*a` before `&a`) or one expanding too far throws here.
    throw new ConfigError(source, [{ path: '', message: `YAML: ${describeError(err)}` }]);
  }
  return validateConfig(value ?? {}, source);
}

/** Reads, parses and validates a config file. */
export async function loadConfig(file: string): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read the file: ${describeError(err)}` }]);
  }
  return parseConfig(text, file);
}
