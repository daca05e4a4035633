/**
 * The bounds of the issuer's join endpoint (join.ts), which faces the
 * network: its limits, the per-source failure window and a bounded body
 * reader.
 */
import type { IncomingMessage } from 'node:http';
import { JoinBodyTooLargeError } from './join-errors.js';

/** Bounds of the join endpoint. */
export interface JoinLimits {
  /** Connections at once; default 32. */
  maxConnections: number;
  /** Connections at once from one source (an IPv4 address or IPv6 /64); default 4. */
  maxPerSource: number;
  /** Largest request body, bytes; default 16384. */
  maxBodyBytes: number;
  /** Joins being checked and signed at once; more are refused with ERR_JOIN_BUSY; default 4. */
  maxInFlight: number;
  /** Time allowed to check, sign and record one join, ms; longer is answered ERR_JOIN_UNAVAILABLE; default 10000. */
  joinTimeoutMs: number;
  /** Refused requests from one source per minute before it is refused outright for the rest of it; default 10. */
  maxFailuresPerMinute: number;
}

export const DEFAULT_LIMITS: JoinLimits = {
  maxConnections: 32,
  maxPerSource: 4,
  maxBodyBytes: 16_384,
  maxInFlight: 4,
  maxFailuresPerMinute: 10,
  joinTimeoutMs: 10_000,
};
/** Sources whose failures are remembered at once. */
const MAX_TRACKED_SOURCES = 1024;

/** Counts refusals per source over a one-minute window (bounded map). */
export class FailureWindow {
  readonly #bySource = new Map<string, { since: number; count: number }>();
  constructor(readonly max: number) {}

  blocked(source: string, now: number): boolean {
    const e = this.#bySource.get(source);
    if (!e) return false;
    if (now - e.since >= 60_000) {
      this.#bySource.delete(source);
      return false;
    }
    return e.count >= this.max;
  }

  /** Counts a failure; true when this one made the source blocked. */
  fail(source: string, now: number): boolean {
    let e = this.#bySource.get(source);
    if (!e || now - e.since >= 60_000) {
      if (e) this.#bySource.delete(source);
      if (this.#bySource.size >= MAX_TRACKED_SOURCES) {
        const oldest = this.#bySource.keys().next().value as string;
        this.#bySource.delete(oldest);
      }
      e = { since: now, count: 0 };
      this.#bySource.set(source, e);
    }
    e.count++;
    return e.count === this.max;
  }
}

/** Reads a request body up to `limit` bytes; larger is a JoinBodyTooLargeError. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(new JoinBodyTooLargeError(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        reject(new JoinBodyTooLargeError(limit));
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}
