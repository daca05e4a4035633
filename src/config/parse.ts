/** Validation of an API body or stored item with a config schema. */
import type { z } from 'zod';
import { ConfigError, problemsOf } from './errors.js';

/** Validates `body` with `schema`; ConfigError (400 with problems, naming `what`) when it does not fit. */
export function parseWith<S extends z.ZodType>(schema: S, body: unknown, what: string): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new ConfigError(what, problemsOf(r.error));
  return r.data;
}
