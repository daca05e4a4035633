/**
 * How the link listener reports connections it refused or that failed
 * before their hello (docs/overlay.md "Admission"). A client that went away
 * before its hello proves nothing about it, and a warning each would let
 * anyone who can connect write the log: those are counted and logged at
 * debug level. A failed TLS handshake, or a TLS peer that closed without a
 * hello (it most likely refused this host's certificate), is a warning, at
 * most one line per 10 s with the lines held back counted in the next.
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { type LinkCloseCause, LinkProtocolError } from './errors.js';

/** Failed TLS handshakes are logged at most once per this many ms. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

export class RefusalLog {
  readonly #log: Logger;
  #lastAt = Number.NEGATIVE_INFINITY;
  #held = 0;

  constructor(logger: Logger) {
    this.#log = logger;
  }

  /**
   * A TLS handshake that failed (the server's `tlsClientError`); `bytesRead`:
   * what the raw socket had read (0: the client only knocked).
   */
  tlsFailed(remote: string, err: Error, bytesRead: number): void {
    const why = describeError(err);
    if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      // Nothing read: a connection that only knocked (a scan, a flood), at debug level. A peer
      // that sent its TLS hello and then hung up most likely refused this host's certificate.
      if (bytesRead === 0) {
        this.#log.debug({ peer: remote, reason: why }, `link connection from ${remote} hung up before its hello`);
        return;
      }
      this.#warn(
        remote,
        why,
        `refused link peer ${remote}: TLS handshake failed (${why} after its TLS hello): its certificate is not from this fabric's CA, or it did not take this host's (both hosts' overlay.tls must come from the same CA)`,
      );
      return;
    }
    this.#warn(
      remote,
      why,
      `refused link peer ${remote}: TLS handshake failed (${why}); it needs a certificate from this fabric's CA`,
    );
  }

  /** An accepted connection that failed before its hello was taken: logged by its close cause. */
  helloFailed(remote: string, err: unknown): void {
    const why = describeError(err);
    const cause: LinkCloseCause | undefined = err instanceof LinkProtocolError ? err.closeCause : undefined;
    if (cause === 'cert-refused') this.#warn(remote, why, `refused link peer ${remote}: ${why}`);
    else if (cause === 'hung-up')
      this.#log.debug({ peer: remote, reason: why }, `link connection from ${remote} hung up before its hello`);
    else this.#log.info({ peer: remote, reason: why }, `link connection from ${remote} not established`);
  }

  /** A refusal at warn level, rate-limited (a peer that keeps failing, or an attacker, cannot flood the log). */
  #warn(remote: string, reason: string, msg: string): void {
    const now = Date.now();
    if (now - this.#lastAt < REFUSAL_LOG_INTERVAL_MS) {
      this.#held++;
      return;
    }
    const held = this.#held;
    this.#lastAt = now;
    this.#held = 0;
    this.#log.warn(
      { peer: remote, reason, ...(held ? { held_back: held } : {}) },
      held ? `${msg} (and ${held} more failed TLS handshakes since the last such line)` : msg,
    );
  }
}
