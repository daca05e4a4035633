/**
 * Why a link could not be dialled, in words an operator can act on: the
 * reason a link shows in `vmlink link list` while it cannot come up. OpenSSL's
 * verification codes and alerts (`SELF_SIGNED_CERT_IN_CHAIN`,
 * `ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`) and socket errors become what is wrong and
 * what to do, with the code kept at the end for searching. Anything else is
 * described as it is.
 */
import { describeError } from '../../errors.js';

const NOT_OUR_CA =
  "this peer's certificate is not from your overlay.tls.ca: both hosts need certificates from the same fabric CA (vmlink host cert HOST-ID --ca-dir CA_DIR); docs/overlay.md";
const NOT_TLS = 'the peer does not speak TLS here (is it in plain mode, or not a vmlink link listener?)';

/** Codes Node gives on the dialling side, and what each means for a link. */
const MEANINGS: Record<string, string> = {
  SELF_SIGNED_CERT_IN_CHAIN: NOT_OUR_CA,
  DEPTH_ZERO_SELF_SIGNED_CERT: NOT_OUR_CA,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: NOT_OUR_CA,
  UNABLE_TO_GET_ISSUER_CERT: NOT_OUR_CA,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: NOT_OUR_CA,
  CERT_SIGNATURE_FAILURE: NOT_OUR_CA,
  CERT_UNTRUSTED: NOT_OUR_CA,
  CERT_HAS_EXPIRED: "this peer's certificate has expired: issue it a new one (vmlink host cert HOST-ID --force)",
  CERT_NOT_YET_VALID: "this peer's certificate is not valid yet: check both hosts' clocks",
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA:
    "the peer refused this host's certificate: it is not from the peer's overlay.tls.ca (both hosts need certificates from the same fabric CA)",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: "the peer refused this host's certificate (overlay.tls.cert)",
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    "the peer says this host's certificate has expired: issue a new one (vmlink host cert HOST-ID --force)",
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'the peer wants a client certificate: give overlay.tls.cert and key',
  ERR_SSL_WRONG_VERSION_NUMBER: NOT_TLS,
  ERR_SSL_PACKET_LENGTH_TOO_LONG: NOT_TLS,
  ECONNREFUSED:
    "connection refused: nothing listens there (is the peer's daemon running, with overlay.listen on that port?)",
  EHOSTUNREACH: 'no route to the peer',
  ENETUNREACH: 'no route to the peer',
  ETIMEDOUT: 'the peer did not answer (a firewall may drop the connection)',
};

/** The reason of a failed dial: the meaning of the first known code on the error or its causes, else its own text. */
export function explainDial(err: unknown): string {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && MEANINGS[code]) return `${MEANINGS[code]} (${code})`;
  }
  if (err instanceof Error && /socket hang up|ECONNRESET/.test(err.message))
    return `the peer closed the connection during the handshake (it may not take this host's certificate, or speaks TLS and this host does not): ${describeError(err)}`;
  return describeError(err);
}
