/**
 * Why a TLS link could not be dialled, in words: OpenSSL's verification codes
 * and alerts (`SELF_SIGNED_CERT_IN_CHAIN`, `ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`)
 * become what is wrong and what to do, with the code kept at the end for
 * searching. Anything else is described as it is.
 */
import { describeError } from '../../errors.js';

const NOT_OUR_CA =
  "this peer's certificate is not from your overlay.tls.ca: both hosts need certificates from the same fabric CA (vmlink host cert HOST-ID --ca-dir CA_DIR); docs/overlay.md";

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
  ERR_SSL_WRONG_VERSION_NUMBER:
    'the peer does not speak TLS here (is it in plain mode, or not a vmlink link listener?)',
  ERR_SSL_PACKET_LENGTH_TOO_LONG:
    'the peer does not speak TLS here (is it in plain mode, or not a vmlink link listener?)',
};

/** A one-line reason for a failed dial: a TLS failure in words (with its code), else the error as it is. */
export function describeDialError(err: unknown): string {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && MEANINGS[code]) return `${MEANINGS[code]} (${code})`;
  }
  return describeError(err);
}
