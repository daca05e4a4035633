/**
 * What a failed dial means, in words an operator can act on: the reason a
 * link shows in `vmlink link list` while it cannot come up.
 */
import { describeError } from '../../errors.js';

/** OpenSSL and socket error codes and what they mean for a link. */
const MEANINGS: Record<string, string> = {
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA:
    "peer refused: this host's certificate is not from the peer's CA (overlay.tls.ca on both hosts must be the fabric's CA)",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: "peer refused this host's certificate (overlay.tls.cert)",
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'peer refused: it needs a certificate from this host (overlay.tls)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the peer's certificate is not from overlay.tls.ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "the peer's certificate is not from overlay.tls.ca",
  SELF_SIGNED_CERT_IN_CHAIN: "the peer's certificate is not from overlay.tls.ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "the peer's certificate is self-signed, not from overlay.tls.ca",
  CERT_HAS_EXPIRED: "the peer's certificate has expired (issue a new one: vmlink host cert)",
  CERT_NOT_YET_VALID: "the peer's certificate is not valid yet (check both hosts' clocks)",
  ECONNREFUSED:
    "connection refused: nothing listens there (is the peer's daemon running, with overlay.listen on that port?)",
  EHOSTUNREACH: 'no route to the peer',
  ENETUNREACH: 'no route to the peer',
  ETIMEDOUT: 'the peer did not answer (a firewall may drop the connection)',
};

/** The reason of a failed dial: the error's meaning when known, with its code, else its own text. */
export function explainDial(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const meaning = typeof code === 'string' ? MEANINGS[code] : undefined;
  if (meaning !== undefined) return `${meaning} (${code})`;
  if (err instanceof Error && /socket hang up|ECONNRESET/.test(err.message))
    return `the peer closed the connection during the handshake (it may not take this host's certificate, or speaks TLS and this host does not): ${describeError(err)}`;
  return describeError(err);
}
