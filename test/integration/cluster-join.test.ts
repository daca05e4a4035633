/**
 * Joining a fabric against a real etcd and the real openssl: tokens made
 * with createToken() (src/cluster/token.ts), an issuer's join endpoint
 * (src/cluster/join.ts) and joinFabric() (src/cluster/join-client.ts) on
 * loopback. A join gets a certificate for a key made on the joining host;
 * expired, used and forged tokens, a CA that is not the pinned one, a host id
 * taken by another key, an oversize body and garbage are refused, and the
 * endpoint stays up.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { Etcd3, type Namespace } from 'etcd3';
import { type JoinedHost, type JoinServer, startJoinServer } from '../../src/cluster/join.js';
import { joinFabric } from '../../src/cluster/join-client.js';
import { createToken, parseToken } from '../../src/cluster/token.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { caInit, hostCert } from '../../src/pki/ca.js';
import { createKeyAndCsr, publicKeyFingerprint } from '../../src/pki/csr.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';

const PREFIX = `/vmlink-join-test-${process.pid}/`;

/** Rejects with an error whose code is `code`; returns the error. */
async function refusedWith(p: Promise<unknown>, code: string): Promise<Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
    return err as Error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** A raw HTTPS request to the endpoint (no verification): status and body. */
function raw(address: string, method: string, path: string, body?: Buffer | string, headers = {}) {
  const [host, port] = address.split(':') as [string, string];
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      { host, port: Number(port), method, path, rejectUnauthorized: false, agent: false, headers },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => {
          text += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('cluster join', () => {
  let etcd: EtcdCluster;
  let client: Etcd3;
  let kv: Namespace;
  let dir: string;
  let caPem: string;
  let server: JoinServer;
  const joined: JoinedHost[] = [];
  let n = 0;
  /** A fresh key directory per join. */
  const keyDir = () => join(dir, `host-${++n}`);
  const token = async (opts: { ttlSec?: number; rejoin?: string; join?: string[] } = {}) =>
    createToken(kv, {
      joinAddresses: opts.join ?? [server.address],
      caCertPem: caPem,
      ...(opts.ttlSec !== undefined ? { ttlSec: opts.ttlSec } : {}),
      ...(opts.rejoin !== undefined ? { rejoin: opts.rejoin } : {}),
    });

  before(async () => {
    etcd = await startEtcd({ members: 1 });
    client = new Etcd3({ hosts: etcd.endpoints });
    kv = client.namespace(PREFIX);
    dir = await mkdtemp(join(tmpdir(), 'vmlink-join-'));
    const ca = await caInit(join(dir, 'ca'), { name: 'test' });
    caPem = await readFile(ca.cert, 'utf8');
    const issuer = await hostCert(join(dir, 'ca'), 'issuer', join(dir, 'issuer'));
    server = await startJoinServer({
      listen: '127.0.0.1:0',
      ca,
      serverCert: { cert: issuer.cert, key: issuer.key },
      kv,
      etcd: { endpoints: etcd.endpoints, prefix: PREFIX },
      logger: silentLogger(),
      onJoined: (j) => joined.push(j),
      // Every test here comes from 127.0.0.1: its refusals must not lock the others out.
      limits: { maxFailuresPerMinute: 10_000 },
    });
  });

  after(async () => {
    await server?.close();
    client?.close();
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('makes a token that parses back and stores only the hash of its secret, leased', async () => {
    const t = await token({ ttlSec: 120 });
    const p = parseToken(t.token);
    assert.equal(p.id, t.id);
    assert.deepEqual(p.join, [server.address]);
    assert.equal(p.ca, publicKeyFingerprint(caPem));
    assert.ok(t.token.length < 200, `token is ${t.token.length} characters`);
    const res = await kv.get(`tokens/${t.id}`).exec();
    const stored = res.kvs[0];
    assert.ok(stored);
    assert.ok(!stored.value.toString().includes(p.secret), 'the secret is not stored');
    const record = JSON.parse(stored.value.toString()) as { hash: string; expires: string };
    assert.match(record.hash, /^[0-9a-f]{64}$/);
    assert.equal(Date.parse(record.expires), t.expires.getTime());
    const lease = await kv.leaseClient.leaseTimeToLive({ ID: stored.lease });
    assert.ok(Number(lease.TTL) > 120, `lease TTL ${lease.TTL} outlives the token`);
  });

  it('refuses token options out of range with ERR_JOIN_BAD_REQUEST', async () => {
    await refusedWith(token({ ttlSec: 0 }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(token({ ttlSec: 8 * 86_400 }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(token({ join: ['nowhere'] }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(token({ rejoin: '-x' }), 'ERR_JOIN_BAD_REQUEST');
  });

  it('joins a host: a certificate for its own key signed by the fabric CA, the CA and the etcd settings', async () => {
    const t = await token();
    const d = keyDir();
    const r = await joinFabric({ token: t.token, hostId: 'b', keyDir: d, ips: ['10.1.0.2'] });
    assert.deepEqual(r, {
      certPath: join(d, 'b.pem'),
      keyPath: join(d, 'b.key'),
      caPath: join(d, 'ca.pem'),
      etcd: { endpoints: etcd.endpoints },
      prefix: PREFIX,
    });
    const cert = new X509Certificate(await readFile(r.certPath));
    const ca = new X509Certificate(await readFile(r.caPath));
    assert.equal(ca.fingerprint256, new X509Certificate(caPem).fingerprint256);
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), 'signed by the fabric CA');
    assert.equal(cert.subject, 'CN=b');
    assert.equal(cert.subjectAltName, 'DNS:b, IP Address:10.1.0.2');
    // The private key was made here (mode 0600) and the certificate is for it; the issuer saw only its public key.
    const key = await readFile(r.keyPath, 'utf8');
    assert.equal((await stat(r.keyPath)).mode & 0o777, 0o600);
    assert.equal(publicKeyFingerprint(key), publicKeyFingerprint(cert.toString()));
    const j = joined.find((x) => x.host === 'b');
    assert.deepEqual(j && { key: j.key, ips: j.ips, replaced: j.replaced }, {
      key: publicKeyFingerprint(key),
      ips: ['10.1.0.2'],
      replaced: false,
    });
    const certs = await kv.get('certs/b').json();
    assert.equal((certs as { key: string }).key, publicKeyFingerprint(key));
    assert.ok(!JSON.stringify(certs).includes('PRIVATE'));
    // The etcd settings the join gave are enough to reach the fabric's keys.
    const c2 = new Etcd3({ hosts: r.etcd.endpoints });
    try {
      assert.ok(await c2.namespace(r.prefix).get('certs/b').string());
    } finally {
      c2.close();
    }
  });

  it('refuses a token used a second time with ERR_JOIN_TOKEN_USED, naming the host that used it', async () => {
    const t = await token();
    await joinFabric({ token: t.token, hostId: 'c', keyDir: keyDir() });
    const err = await refusedWith(joinFabric({ token: t.token, hostId: 'd', keyDir: keyDir() }), 'ERR_JOIN_TOKEN_USED');
    assert.match(err.message, /already used by host "c"/);
    assert.equal((err as Error & { status: number }).status, 409);
  });

  it('lets exactly one of two simultaneous joins with one token through', async () => {
    const t = await token();
    const results = await Promise.allSettled([
      joinFabric({ token: t.token, hostId: 'e1', keyDir: keyDir() }),
      joinFabric({ token: t.token, hostId: 'e2', keyDir: keyDir() }),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const failed = results.find((r) => r.status === 'rejected');
    assert.ok(hasCode(failed?.reason, 'ERR_JOIN_TOKEN_USED'), String(failed?.reason));
  });

  it('refuses an expired token with ERR_JOIN_TOKEN_EXPIRED', async () => {
    const t = await token({ ttlSec: 1 });
    while (Date.now() <= t.expires.getTime() + 50) await new Promise((r) => setTimeout(r, 100));
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'f', keyDir: keyDir() }),
      'ERR_JOIN_TOKEN_EXPIRED',
    );
    assert.match(err.message, /expired at .*--ttl/);
  });

  it('refuses a forged secret and an unknown id with ERR_JOIN_TOKEN_INVALID, and the real token still works', async () => {
    const t = await token();
    const [, id, secret, payload] = t.token.split('.') as [string, string, string, string];
    const forged = `vmlink1.${id}.${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}.${payload}`;
    let err = await refusedWith(joinFabric({ token: forged, hostId: 'g', keyDir: keyDir() }), 'ERR_JOIN_TOKEN_INVALID');
    assert.match(err.message, /secret of token .* does not match/);
    const unknown = `vmlink1.zzzzzzzz.${secret}.${payload}`;
    err = await refusedWith(joinFabric({ token: unknown, hostId: 'g', keyDir: keyDir() }), 'ERR_JOIN_TOKEN_INVALID');
    assert.match(err.message, /knows no token zzzzzzzz/);
    await refusedWith(
      joinFabric({ token: 'vmlink1.garbage', hostId: 'g', keyDir: keyDir() }),
      'ERR_JOIN_TOKEN_INVALID',
    );
    const r = await joinFabric({ token: t.token, hostId: 'g', keyDir: keyDir() });
    assert.ok(r.certPath);
  });

  it('refuses an issuer whose CA is not the pinned one before sending anything (ERR_JOIN_CA_MISMATCH)', async () => {
    const t = await token();
    const p = parseToken(t.token);
    const wrong = Buffer.from(JSON.stringify({ join: p.join, ca: 'ab'.repeat(32) })).toString('base64url');
    const pinned = `vmlink1.${p.id}.${p.secret}.${wrong}`;
    const err = await refusedWith(joinFabric({ token: pinned, hostId: 'h', keyDir: keyDir() }), 'ERR_JOIN_CA_MISMATCH');
    assert.match(err.message, new RegExp(`its CA's public key has sha256 ${p.ca}`));
    assert.match(err.message, /nothing was sent/);
    // Nothing was sent: the token is still unused.
    await joinFabric({ token: t.token, hostId: 'h', keyDir: keyDir() });
  });

  it('says no issuer could be reached when no join address answers (ERR_JOIN_UNAVAILABLE)', async () => {
    const other = await startJoinServer({
      listen: '127.0.0.1:0',
      ca: { cert: join(dir, 'ca', 'ca.pem'), key: join(dir, 'ca', 'ca.key') },
      serverCert: { cert: join(dir, 'issuer', 'issuer.pem'), key: join(dir, 'issuer', 'issuer.key') },
      kv,
      etcd: { endpoints: etcd.endpoints, prefix: PREFIX },
      logger: silentLogger(),
    });
    const closedAddress = other.address;
    await other.close();
    const t = await token({ join: [closedAddress] });
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'i', keyDir: keyDir() }),
      'ERR_JOIN_UNAVAILABLE',
    );
    assert.match(err.message, /no issuer could be reached: 127\.0\.0\.1:\d+: unreachable/);
    // The next address of a token is tried when one is away.
    const t2 = await token({ join: [closedAddress, server.address] });
    await joinFabric({ token: t2.token, hostId: 'i', keyDir: keyDir() });
  });

  it('refuses a host id registered with another key unless the token was made for its rejoin', async () => {
    const first = keyDir();
    await joinFabric({ token: (await token()).token, hostId: 'j', keyDir: first });
    // Joined again with the same key (a join run again): accepted.
    await joinFabric({ token: (await token()).token, hostId: 'j', keyDir: first });
    // Reinstalled (a new key): refused, and the token is not spent.
    const t = await token();
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'j', keyDir: keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    assert.match(err.message, /--rejoin j/);
    await joinFabric({ token: t.token, hostId: 'j2', keyDir: keyDir() });
    // A member registered by other means (members/<host>, no certs/ record) is protected too.
    await kv.put('members/k').value(JSON.stringify({ id: 'k' }));
    await refusedWith(
      joinFabric({ token: (await token()).token, hostId: 'k', keyDir: keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    // A token for another host's rejoin does not help; one for this host's does.
    await refusedWith(
      joinFabric({ token: (await token({ rejoin: 'j' })).token, hostId: 'k', keyDir: keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    const d = keyDir();
    await joinFabric({ token: (await token({ rejoin: 'j' })).token, hostId: 'j', keyDir: d });
    const j = joined.filter((x) => x.host === 'j').at(-1);
    assert.equal(j?.replaced, true);
    assert.equal(j?.key, publicKeyFingerprint(await readFile(join(d, 'j.key'), 'utf8')));
  });

  it('refuses an oversize body with 413 ERR_JOIN_BODY_TOO_LARGE, declared or streamed', async () => {
    const big = Buffer.alloc(64 * 1024, 'x');
    let r = await raw(server.address, 'POST', '/v1/join', big).catch((err: Error) => ({
      status: 0,
      body: err.message,
    }));
    assert.equal(r.status, 413, r.body);
    assert.equal(JSON.parse(r.body).error.code, 'ERR_JOIN_BODY_TOO_LARGE');
    r = await raw(server.address, 'POST', '/v1/join', big, { 'transfer-encoding': 'chunked' }).catch((err: Error) => ({
      status: 0,
      body: err.message,
    }));
    // Streamed: the answer races the upload; either it arrives or the connection is cut.
    assert.ok(r.status === 413 || r.status === 0, `${r.status} ${r.body}`);
  });

  it('answers malformed requests with ERR_JOIN_BAD_REQUEST and stays up after garbage bytes', async () => {
    let r = await raw(server.address, 'POST', '/v1/join', '{"token": ');
    assert.equal(r.status, 400);
    assert.equal(JSON.parse(r.body).error.code, 'ERR_JOIN_BAD_REQUEST');
    r = await raw(server.address, 'POST', '/v1/join', JSON.stringify({ token: 'x', host: 'b', csr: 'no' }));
    assert.match(JSON.parse(r.body).error.message, /"csr" is not a PEM/);
    const csr = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n';
    const t = parseToken((await token()).token);
    r = await raw(
      server.address,
      'POST',
      '/v1/join',
      JSON.stringify({ token: `${t.id}.${t.secret}`, host: 'b9', csr }),
    );
    assert.equal(r.status, 400, r.body);
    assert.match(JSON.parse(r.body).error.message, /"csr" is not a readable certificate request/);
    // A CSR whose self-signature does not verify (no proof of holding the key) is refused, the token not spent.
    const { csrPem } = await createKeyAndCsr(keyDir(), 'b9');
    const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    der[der.length - 3] = (der[der.length - 3] as number) ^ 1;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    r = await raw(
      server.address,
      'POST',
      '/v1/join',
      JSON.stringify({ token: `${t.id}.${t.secret}`, host: 'b9', csr: tampered }),
    );
    assert.equal(r.status, 400, r.body);
    assert.match(JSON.parse(r.body).error.message, /"csr" was refused: .*self-signature/);
    r = await raw(server.address, 'GET', '/etc/passwd');
    assert.equal(r.status, 400);
    const [host, port] = server.address.split(':') as [string, string];
    // Garbage instead of TLS.
    await new Promise<void>((resolve) => {
      const s = netConnect({ host, port: Number(port) }, () =>
        s.end(Buffer.from('\x16\x03\x01\xff\xffgarbage'.repeat(50))),
      );
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    // Garbage instead of HTTP inside TLS.
    await new Promise<void>((resolve) => {
      const s = tlsConnect({ host, port: Number(port), rejectUnauthorized: false }, () =>
        s.write(Buffer.from([0, 1, 2, 255, 13, 10, 13, 10, 0x47, 0x45, 0x54])),
      );
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    r = await raw(server.address, 'GET', '/v1/join/ca');
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).ca, caPem);
    // The unconsumed token still joins.
    await joinFabric({
      token: `vmlink1.${t.id}.${t.secret}.${(await token()).token.split('.')[3]}`,
      hostId: 'b9',
      keyDir: keyDir(),
    });
  });

  it('refuses to start with an endpoint certificate the fabric CA did not sign, or a CA key that is not its own', async () => {
    const other = await caInit(join(dir, 'other-ca'));
    const stranger = await hostCert(join(dir, 'other-ca'), 'stranger', join(dir, 'stranger'));
    const start = (ca: { cert: string; key: string }, serverCert: { cert: string; key: string }) =>
      startJoinServer({
        listen: '127.0.0.1:0',
        ca,
        serverCert,
        kv,
        etcd: { endpoints: etcd.endpoints, prefix: PREFIX },
        logger: silentLogger(),
      });
    const fabricCa = { cert: join(dir, 'ca', 'ca.pem'), key: join(dir, 'ca', 'ca.key') };
    let err = await refusedWith(start(fabricCa, { cert: stranger.cert, key: stranger.key }), 'ERR_JOIN_SERVER');
    assert.match(err.message, /stranger\.pem is not signed by the fabric CA/);
    const issuer = { cert: join(dir, 'issuer', 'issuer.pem'), key: join(dir, 'issuer', 'issuer.key') };
    err = await refusedWith(start({ cert: fabricCa.cert, key: other.key }, issuer), 'ERR_JOIN_SERVER');
    assert.match(err.message, /is not the key of/);
    err = await refusedWith(start(fabricCa, { cert: join(dir, 'missing.pem'), key: issuer.key }), 'ERR_JOIN_SERVER');
    assert.match(err.message, /cannot read the endpoint certificate .*missing\.pem/);
  });

  it('refuses a source after repeated failures with ERR_JOIN_BUSY, and hands out etcd TLS material', async () => {
    const strict = await startJoinServer({
      listen: '127.0.0.1:0',
      ca: { cert: join(dir, 'ca', 'ca.pem'), key: join(dir, 'ca', 'ca.key') },
      serverCert: { cert: join(dir, 'issuer', 'issuer.pem'), key: join(dir, 'issuer', 'issuer.key') },
      kv,
      etcd: {
        endpoints: ['https://127.0.0.1:1'],
        prefix: PREFIX,
        tls: {
          ca: join(dir, 'ca', 'ca.pem'),
          cert: join(dir, 'issuer', 'issuer.pem'),
          key: join(dir, 'issuer', 'issuer.key'),
        },
      },
      logger: silentLogger(),
      limits: { maxFailuresPerMinute: 3 },
    });
    try {
      const d = keyDir();
      const r = await joinFabric({ token: (await token({ join: [strict.address] })).token, hostId: 'l', keyDir: d });
      assert.deepEqual(r.etcd, {
        endpoints: ['https://127.0.0.1:1'],
        tls: { ca: join(d, 'etcd-ca.pem'), cert: join(d, 'etcd-client.pem'), key: join(d, 'etcd-client.key') },
      });
      assert.equal(
        await readFile(r.etcd.tls?.key ?? '', 'utf8'),
        await readFile(join(dir, 'issuer', 'issuer.key'), 'utf8'),
      );
      assert.equal((await stat(r.etcd.tls?.key ?? '')).mode & 0o777, 0o600);
      for (let i = 0; i < 3; i++) {
        const a = await raw(strict.address, 'POST', '/v1/join', 'nonsense');
        assert.equal(a.status, 400);
      }
      const a = await raw(strict.address, 'POST', '/v1/join', 'nonsense');
      assert.equal(a.status, 503);
      assert.equal(JSON.parse(a.body).error.code, 'ERR_JOIN_BUSY');
      // The CA stays available to everyone.
      assert.equal((await raw(strict.address, 'GET', '/v1/join/ca')).status, 200);
    } finally {
      await strict.close();
    }
  });
});
