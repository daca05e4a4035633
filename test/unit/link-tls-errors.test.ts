/**
 * The dialling side's words for TLS failures (src/net/overlay/dial-errors.ts):
 * OpenSSL's codes become what is wrong and what to do, the code kept; other
 * errors pass through as they are.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { explainDial as describeDialError } from '../../src/net/overlay/dial-errors.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

test('a peer certificate from another CA is said to be not from overlay.tls.ca, with the code', () => {
  for (const code of ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT']) {
    const why = describeDialError(withCode('self-signed certificate in certificate chain', code));
    assert.match(why, /^this peer's certificate is not from your overlay\.tls\.ca: /);
    assert.ok(why.endsWith(`(${code})`), why);
  }
});

test("the peer's refusal of this host's certificate is told apart from ours of the peer's", () => {
  const why = describeDialError(withCode('tlsv1 alert unknown ca', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'));
  assert.match(why, /^the peer refused this host's certificate: it is not from the peer's overlay\.tls\.ca/);
});

test('a code found on a cause is used; an unknown error is described as it is', () => {
  const wrapped = new Error('dial failed', { cause: withCode('certificate has expired', 'CERT_HAS_EXPIRED') });
  assert.match(describeDialError(wrapped), /has expired: issue it a new one .*\(CERT_HAS_EXPIRED\)$/);
  assert.match(
    describeDialError(withCode('connect ECONNREFUSED 127.0.0.1:1', 'ECONNREFUSED')),
    /^connection refused: nothing listens there .*\(ECONNREFUSED\)$/,
  );
  assert.equal(
    describeDialError(withCode('getaddrinfo EAI_AGAIN nowhere', 'EAI_AGAIN')),
    'getaddrinfo EAI_AGAIN nowhere',
  );
});
