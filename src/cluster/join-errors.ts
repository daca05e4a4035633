/**
 * Errors of join tokens and of joining a fabric (`vmlink cluster token`,
 * `vmlink cluster join`, the issuer's join endpoint). The issuer answers a
 * refused join with `{error: {code, message}}` and the status below; the
 * joining host raises it as a JoinRefusedError with that code and status
 * (join-client.ts), so both ends name a failure by the same code. Kept apart
 * from errors.ts (the etcd errors) as the join's own area; all extend
 * ClusterError.
 */
import { ClusterError } from './errors.js';

const MAKE_ONE = 'make a new one on a fabric host with `vmlink cluster token`';

/** A join token that is not one: bad format, an id the fabric does not know, or a secret that does not match. */
export class JoinTokenInvalidError extends ClusterError {
  override readonly status = 400;
  constructor(reason: string) {
    super('ERR_JOIN_TOKEN_INVALID', `join token refused: ${reason}; ${MAKE_ONE}`);
  }
}

/** A join token past its lifetime. */
export class JoinTokenExpiredError extends ClusterError {
  override readonly status = 400;
  constructor(id: string, expired: string) {
    super('ERR_JOIN_TOKEN_EXPIRED', `join token ${id} expired at ${expired}; ${MAKE_ONE} (--ttl sets its lifetime)`);
  }
}

/** A join token that a host already used (tokens are single-use). */
export class JoinTokenUsedError extends ClusterError {
  override readonly status = 409;
  constructor(id: string, by: string, at: string) {
    super('ERR_JOIN_TOKEN_USED', `join token ${id} was already used by host "${by}" at ${at}; ${MAKE_ONE}`);
  }
}

/** The host id is a member of the fabric already, with another key; only a token made for its rejoin may replace it. */
export class JoinHostExistsError extends ClusterError {
  override readonly status = 409;
  constructor(host: string) {
    super(
      'ERR_JOIN_HOST_EXISTS',
      `host "${host}" is already a member of the fabric with another key; choose another host id, or, if this ` +
        `is that host reinstalled, make its token with \`vmlink cluster token --rejoin ${host}\``,
    );
  }
}

/** A join request or a token option that is not valid (the field, the value, what is expected). */
export class JoinBadRequestError extends ClusterError {
  override readonly status = 400;
  constructor(reason: string) {
    super('ERR_JOIN_BAD_REQUEST', reason);
  }
}

/** A join request body above the endpoint's limit. */
export class JoinBodyTooLargeError extends ClusterError {
  override readonly status = 413;
  constructor(limit: number) {
    super('ERR_JOIN_BODY_TOO_LARGE', `the join request body is larger than ${limit} bytes`);
  }
}

/** The join endpoint is busy (joins in flight at its limit) or this source failed too often lately: retry later. */
export class JoinBusyError extends ClusterError {
  override readonly status = 503;
  constructor(reason: string) {
    super('ERR_JOIN_BUSY', `the join endpoint refused the request: ${reason}; retry later`);
  }
}

/** No issuer could be reached, or the issuer cannot reach the fabric's store or CA. */
export class JoinUnavailableError extends ClusterError {
  override readonly status = 503;
  constructor(reason: string, options?: ErrorOptions) {
    super('ERR_JOIN_UNAVAILABLE', reason, options);
  }
}

/** The issuer's CA is not the one the token pins (another fabric, or someone in between): nothing was sent. */
export class JoinCaMismatchError extends ClusterError {
  override readonly status = 422;
  constructor(addresses: string[], pinned: string, reasons: string[]) {
    super(
      'ERR_JOIN_CA_MISMATCH',
      `no join address answered with the fabric CA the token pins (sha256 ${pinned}): ${addresses
        .map((a, i) => `${a}: ${reasons[i] ?? '?'}`)
        .join('; ')}; check the token and the addresses, nothing was sent`,
    );
  }
}

/** The join endpoint cannot start: its certificate files or its listen address. */
export class JoinServerError extends ClusterError {
  constructor(reason: string, options?: ErrorOptions) {
    super('ERR_JOIN_SERVER', reason, options);
  }
}

/**
 * The issuer refused the join: its code, message and status as it answered
 * them (one of the codes above; the caller matches the code).
 */
export class JoinRefusedError extends ClusterError {
  override readonly status: number;
  constructor(code: string, message: string, status: number) {
    super(code, message);
    this.status = status;
  }
}
