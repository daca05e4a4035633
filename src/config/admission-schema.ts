/**
 * Fields of connection admission shared by the NBD server (`storage:`), the
 * link listener (`overlay:`) and the control API (`host:`): connection
 * caps, handshake deadlines and a listener's `allowed_clients`
 * (src/util/admission.ts; docs/storage.md, docs/overlay.md, docs/api.md "Admission").
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * A whole number in [min, max] of `unit`; the error names the field, the
 * range and the value given.
 */
export function limitSchema(field: string, unit: string, min: number, max: number) {
  const error = (iss: { input?: unknown }) =>
    `${field} must be a whole number of ${unit} from ${min} to ${max}, not ${JSON.stringify(iss.input) ?? String(iss.input)}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** True when `s` is an IP address or a CIDR network (`10.0.0.0/8`, `fd00::/64`). */
export function isClient(s: string): boolean {
  const [addr, prefix, extra] = s.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  const n = /^\d{1,3}$/.test(prefix) ? Number(prefix) : -1;
  return n >= 0 && n <= (family === 4 ? 32 : 128);
}

/** A listener's `allowed_clients`: TCP client addresses or networks that may connect at all. */
export function allowedClientsSchema(field: string) {
  return z
    .array(
      z.string().refine(isClient, {
        error: (iss) =>
          `${field}: ${JSON.stringify(iss.input)} is not an IP address or a CIDR network like 10.0.0.0/8 or fd00::/64`,
      }),
    )
    .max(1024, `${field} holds at most 1024 entries`);
}
