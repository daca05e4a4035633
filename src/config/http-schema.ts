/**
 * The `http:` section: the daemon's read-only HTTP endpoint (docs/observe.md):
 * Prometheus metrics, the event stream, the web dashboard and the read-only
 * views it draws. Off when the section is absent. Nothing that changes state
 * is served there: changes go through the control socket.
 */
import { z } from 'zod';
import { type Address, parseAddress } from '../util/address.js';
import { limitSchema } from './admission-schema.js';

const httpAddress = z.string().transform((text, ctx): Extract<Address, { type: 'tcp' }> => {
  const a = parseAddress(text, ['tcp']);
  if (typeof a === 'string') {
    ctx.addIssue({ code: 'custom', message: a });
    return z.NEVER;
  }
  return a as Extract<Address, { type: 'tcp' }>;
});

export const httpSchema = z.strictObject({
  /** Where it listens: `tcp:HOST:PORT`, e.g. `tcp:127.0.0.1:9470` (port 0 picks a free one; `vmlink status` shows it). */
  listen: httpAddress,
  /** Connections at once (1-65536); default 256. */
  max_connections: limitSchema('http.max_connections', 'connections', 1, 65536).default(256),
});

export type HttpConfig = z.infer<typeof httpSchema>;
