/**
 * Join token text (src/cluster/token.ts parseToken) and the join request
 * checks (join-protocol.ts), without etcd: every malformed token or request
 * is refused with its code and a message that says which part is wrong.
 * The etcd side (create, check, consume) is in test/integration/cluster-join.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseJoinAddress, validJoinRequest } from '../../src/cluster/join-protocol.js';
import { parseToken } from '../../src/cluster/token.js';
import { hasCode } from '../../src/errors.js';

const CA = 'ab'.repeat(32);
const ID = 'abcd2345';
const SECRET = 'A'.repeat(21) + '_';

function payload(p: unknown): string {
  return Buffer.from(JSON.stringify(p)).toString('base64url');
}

function token(p: unknown = { join: ['10.0.0.1:7443', '[fd00::1]:7443'], ca: CA }): string {
  return `vmlink1.${ID}.${SECRET}.${payload(p)}`;
}

function refused(text: string, match: RegExp): void {
  assert.throws(
    () => parseToken(text),
    (err: unknown) => {
      assert.ok(hasCode(err, 'ERR_JOIN_TOKEN_INVALID'), String(err));
      assert.match((err as Error).message, match);
      assert.match((err as Error).message, /vmlink cluster token/);
      return true;
    },
  );
}

describe('join token text', () => {
  it('parses a well-formed token into id, secret, join addresses and the CA fingerprint', () => {
    assert.deepEqual(parseToken(token()), {
      id: ID,
      secret: SECRET,
      join: ['10.0.0.1:7443', '[fd00::1]:7443'],
      ca: CA,
    });
  });

  it('ignores white space around a pasted token', () => {
    assert.equal(parseToken(`  ${token()}\n`).id, ID);
  });

  it('refuses text that is not a vmlink token, saying what tokens start with', () => {
    refused('K10abc::server:xyz', /not a vmlink join token.*vmlink1\./);
  });

  it('refuses a token cut short or with a bad id or secret, naming the expected form', () => {
    const t = token();
    refused(t.slice(0, 30), /vmlink1\.<id.*\(was it cut/);
    refused(t.replace(ID, 'ABCD2345'), /<id: 8 of a-z2-7>/);
    refused(t.replace(SECRET, SECRET.slice(1)), /<secret: 22 base64url/);
  });

  it('refuses a payload that is not base64url JSON', () => {
    refused(`vmlink1.${ID}.${SECRET}.${Buffer.from('{"join":').toString('base64url')}`, /not base64url JSON/);
  });

  it('refuses a payload without join addresses, with a bad one, or with too many', () => {
    refused(token({ ca: CA }), /no list of 1-8 join addresses/);
    refused(token({ join: [], ca: CA }), /no list of 1-8 join addresses/);
    refused(token({ join: ['10.0.0.1'], ca: CA }), /join address "10\.0\.0\.1" is not IP:PORT/);
    refused(token({ join: ['10.0.0.1:0'], ca: CA }), /port 1-65535/);
    refused(token({ join: Array(9).fill('10.0.0.1:1'), ca: CA }), /1-8 join addresses/);
  });

  it('refuses a payload whose CA fingerprint is not a SHA-256 in hex', () => {
    refused(token({ join: ['10.0.0.1:7443'], ca: 'AB'.repeat(32) }), /CA fingerprint is not 64 hex digits/);
    refused(token({ join: ['10.0.0.1:7443'] }), /CA fingerprint/);
  });
});

describe('join request checks', () => {
  const csr = '-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n';
  const bad = (body: unknown, match: RegExp) =>
    assert.throws(
      () => validJoinRequest(body),
      (err: unknown) => hasCode(err, 'ERR_JOIN_BAD_REQUEST') && match.test((err as Error).message),
    );

  it('accepts a request with a credential, a host id, a PEM CSR and IP addresses', () => {
    const r = { token: `${ID}.${SECRET}`, host: 'b', csr, ips: ['10.0.0.2', 'fd00::2'] };
    assert.deepEqual(validJoinRequest(r), r);
  });

  it('refuses a request that is not an object, or lacks a field, naming the field', () => {
    bad([1, 2], /not a JSON object/);
    bad(null, /not a JSON object/);
    bad({ host: 'b', csr }, /no "token"/);
    bad({ token: 'x', host: '-b', csr }, /"host" "-b" is not a host id/);
    bad({ token: 'x', host: 'b', csr: 'hello' }, /"csr" is not a PEM certificate request/);
    bad({ token: 'x', host: 'b', csr: csr.repeat(20) }, /"csr" is not a PEM/);
    bad({ token: 'x', host: 'b', csr, ips: ['10.0.0.300'] }, /"ips": "10\.0\.0\.300" is not an IP address/);
    bad({ token: 'x', host: 'b', csr, ips: 'x' }, /"ips" is not a list/);
  });

  it('parses join addresses with IPv4, bracketed IPv6 and a port', () => {
    assert.deepEqual(parseJoinAddress('10.0.0.1:7443'), { host: '10.0.0.1', port: 7443 });
    assert.deepEqual(parseJoinAddress('[::1]:1'), { host: '::1', port: 1 });
    assert.match(parseJoinAddress('::1:1') as string, /not IP:PORT/);
  });
});
