/**
 * Joining a fabric against a real etcd and the real openssl: tokens made
 * with createToken() (src/cluster/token.ts), an issuer's join endpoint
 * (src/cluster/join.ts) and joinFabric() (src/cluster/join-client.ts) on
 * loopback (test/helpers/join-rig.ts). A join gets a certificate for a key
 * made on the joining host; expired, used and forged tokens, a CA that is not
 * the pinned one and a host id taken by another key are refused. The
 * endpoint's own bounds and bad input are in cluster-join-endpoint.test.ts.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { joinFabric } from '../../src/cluster/join-client.js';
import { listTokens, parseToken, revokeToken } from '../../src/cluster/token.js';
import { hasCode } from '../../src/errors.js';
import { csrPublicKey, publicKeyFingerprint } from '../../src/pki/csr.js';
import { type JoinRig, refusedWith, startJoinRig } from '../helpers/join-rig.js';

describe('cluster join', () => {
  let rig: JoinRig;
  before(async () => {
    rig = await startJoinRig();
  });
  after(async () => {
    await rig?.stop();
  });

  it('makes a token that parses back and stores only the hash of its secret, leased', async () => {
    const t = await rig.token({ ttlSec: 120 });
    const p = parseToken(t.token);
    assert.equal(p.id, t.id);
    assert.deepEqual(p.join, [rig.server.address]);
    assert.equal(p.ca, publicKeyFingerprint(rig.caPem));
    assert.ok(t.token.length < 200, `token is ${t.token.length} characters`);
    const res = await rig.kv.get(`tokens/${t.id}`).exec();
    const stored = res.kvs[0];
    assert.ok(stored);
    assert.ok(!stored.value.toString().includes(p.secret), 'the secret is not stored');
    const record = JSON.parse(stored.value.toString()) as { hash: string; expires: string };
    assert.match(record.hash, /^[0-9a-f]{64}$/);
    assert.equal(Date.parse(record.expires), t.expires.getTime());
    const lease = await rig.kv.leaseClient.leaseTimeToLive({ ID: stored.lease });
    assert.ok(Number(lease.TTL) > 120, `lease TTL ${lease.TTL} outlives the token`);
  });

  it('refuses token options out of range with ERR_JOIN_BAD_REQUEST', async () => {
    await refusedWith(rig.token({ ttlSec: 0 }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(rig.token({ ttlSec: 8 * 86_400 }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(rig.token({ join: ['nowhere'] }), 'ERR_JOIN_BAD_REQUEST');
    await refusedWith(rig.token({ rejoin: '-x' }), 'ERR_JOIN_BAD_REQUEST');
  });

  it('joins a host: a certificate for its own key signed by the fabric CA, the CA and the etcd settings', async () => {
    const t = await rig.token();
    const d = rig.keyDir();
    const r = await joinFabric({ token: t.token, hostId: 'b', keyDir: d, ips: ['10.1.0.2'] });
    assert.deepEqual(r, {
      certPath: join(d, 'b.pem'),
      keyPath: join(d, 'b.key'),
      caPath: join(d, 'ca.pem'),
      etcd: { endpoints: rig.etcd.endpoints },
      prefix: rig.prefix,
    });
    const cert = new X509Certificate(await readFile(r.certPath));
    const ca = new X509Certificate(await readFile(r.caPath));
    assert.equal(ca.fingerprint256, new X509Certificate(rig.caPem).fingerprint256);
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), 'signed by the fabric CA');
    assert.equal(cert.subject, 'CN=b');
    assert.equal(cert.subjectAltName, 'DNS:b, IP Address:10.1.0.2');
    // The private key was made here (mode 0600) and the certificate is for it; the issuer saw only its public key.
    const key = await readFile(r.keyPath, 'utf8');
    assert.equal((await stat(r.keyPath)).mode & 0o777, 0o600);
    assert.equal(publicKeyFingerprint(key), publicKeyFingerprint(cert.toString()));
    const j = rig.joined.find((x) => x.host === 'b');
    assert.deepEqual(j && { key: j.key, ips: j.ips, replaced: j.replaced }, {
      key: publicKeyFingerprint(key),
      ips: ['10.1.0.2'],
      replaced: false,
    });
    const certs = await rig.kv.get('certs/b').json();
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

  it('sends the issuer a CSR and never the private key, and raises the refusal the issuer answers by its code', async () => {
    // A stand-in issuer with the fabric's certificate that records what it is sent and refuses.
    const seen: string[] = [];
    const fake = createHttpsServer(
      {
        cert: await readFile(join(rig.dir, 'issuer', 'issuer.pem')),
        key: await readFile(join(rig.dir, 'issuer', 'issuer.key')),
      },
      (req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => {
          body += c.toString();
        });
        req.on('end', () => {
          seen.push(`${req.method} ${req.url} ${body}`);
          const refusal = { error: { code: 'ERR_JOIN_HOST_EXISTS', message: 'host "m" is taken' } };
          res.writeHead(req.method === 'GET' ? 200 : 409, { 'content-type': 'application/json' });
          res.end(JSON.stringify(req.method === 'GET' ? { ca: rig.caPem } : refusal));
        });
      },
    );
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    try {
      const port = (fake.address() as { port: number }).port;
      const t = await rig.token({ join: [`127.0.0.1:${port}`] });
      const d = rig.keyDir();
      const err = await refusedWith(joinFabric({ token: t.token, hostId: 'm', keyDir: d }), 'ERR_JOIN_HOST_EXISTS');
      assert.equal((err as Error & { status: number }).status, 409);
      assert.match(err.message, /host "m" is taken/);
      assert.equal(seen.length, 2);
      assert.match(seen[0] as string, /^GET \/v1\/join\/ca $/);
      const post = seen[1] as string;
      assert.match(post, /^POST \/v1\/join /);
      assert.ok(!post.includes('PRIVATE KEY'), 'no private key in the request');
      const sent = JSON.parse(post.slice('POST /v1/join '.length)) as { token: string; host: string; csr: string };
      const p = parseToken(t.token);
      assert.equal(sent.token, `${p.id}.${p.secret}`);
      assert.equal(sent.host, 'm');
      assert.equal(
        publicKeyFingerprint(await csrPublicKey(sent.csr)),
        publicKeyFingerprint(await readFile(join(d, 'm.key'), 'utf8')),
      );
    } finally {
      fake.close();
      fake.closeAllConnections();
    }
  });

  it('refuses a token used a second time with ERR_JOIN_TOKEN_USED, naming the host that used it', async () => {
    const t = await rig.token();
    await joinFabric({ token: t.token, hostId: 'c', keyDir: rig.keyDir() });
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'd', keyDir: rig.keyDir() }),
      'ERR_JOIN_TOKEN_USED',
    );
    assert.match(err.message, /already used by host "c"/);
    // The used token's tombstone stays under the token's lease (it goes away with it).
    const stored = (await rig.kv.get(`tokens/${t.id}`).exec()).kvs[0];
    assert.ok(stored && stored.lease !== '0', 'the tombstone is leased');
    assert.equal((err as Error & { status: number }).status, 409);
  });

  it('lets exactly one of two simultaneous joins with one token through', async () => {
    const t = await rig.token();
    const results = await Promise.allSettled([
      joinFabric({ token: t.token, hostId: 'e1', keyDir: rig.keyDir() }),
      joinFabric({ token: t.token, hostId: 'e2', keyDir: rig.keyDir() }),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const failed = results.find((r) => r.status === 'rejected');
    assert.ok(hasCode(failed?.reason, 'ERR_JOIN_TOKEN_USED'), String(failed?.reason));
  });

  it('refuses an expired token with ERR_JOIN_TOKEN_EXPIRED', async () => {
    const t = await rig.token({ ttlSec: 1 });
    while (Date.now() <= t.expires.getTime() + 50) await new Promise((r) => setTimeout(r, 100));
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'f', keyDir: rig.keyDir() }),
      'ERR_JOIN_TOKEN_EXPIRED',
    );
    assert.match(err.message, /expired at .*--ttl/);
  });

  it('refuses a forged secret and an unknown id with ERR_JOIN_TOKEN_INVALID, and the real token still works', async () => {
    const t = await rig.token();
    const [, id, secret, payload] = t.token.split('.') as [string, string, string, string];
    const forged = `vmlink1.${id}.${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}.${payload}`;
    let err = await refusedWith(
      joinFabric({ token: forged, hostId: 'g', keyDir: rig.keyDir() }),
      'ERR_JOIN_TOKEN_INVALID',
    );
    assert.match(err.message, /secret of token .* does not match/);
    const unknown = `vmlink1.zzzzzzzz.${secret}.${payload}`;
    err = await refusedWith(
      joinFabric({ token: unknown, hostId: 'g', keyDir: rig.keyDir() }),
      'ERR_JOIN_TOKEN_INVALID',
    );
    assert.match(err.message, /knows no token zzzzzzzz/);
    await refusedWith(
      joinFabric({ token: 'vmlink1.garbage', hostId: 'g', keyDir: rig.keyDir() }),
      'ERR_JOIN_TOKEN_INVALID',
    );
    const r = await joinFabric({ token: t.token, hostId: 'g', keyDir: rig.keyDir() });
    assert.ok(r.certPath);
  });

  it('refuses an issuer whose CA is not the pinned one before sending anything (ERR_JOIN_CA_MISMATCH)', async () => {
    const t = await rig.token();
    const p = parseToken(t.token);
    const wrong = Buffer.from(JSON.stringify({ join: p.join, ca: 'ab'.repeat(32) })).toString('base64url');
    const pinned = `vmlink1.${p.id}.${p.secret}.${wrong}`;
    const err = await refusedWith(
      joinFabric({ token: pinned, hostId: 'h', keyDir: rig.keyDir() }),
      'ERR_JOIN_CA_MISMATCH',
    );
    assert.match(err.message, new RegExp(`its CA's public key has sha256 ${p.ca}`));
    assert.match(err.message, /nothing was sent/);
    // Nothing was sent: the token is still unused.
    await joinFabric({ token: t.token, hostId: 'h', keyDir: rig.keyDir() });
  });

  it('says no issuer could be reached when no join address answers (ERR_JOIN_UNAVAILABLE)', async () => {
    const other = await rig.startServer();
    const closedAddress = other.address;
    await other.close();
    const t = await rig.token({ join: [closedAddress] });
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'i', keyDir: rig.keyDir() }),
      'ERR_JOIN_UNAVAILABLE',
    );
    assert.match(err.message, /no issuer could be reached: 127\.0\.0\.1:\d+: unreachable/);
    // The next address of a token is tried when one is away.
    const t2 = await rig.token({ join: [closedAddress, rig.server.address] });
    await joinFabric({ token: t2.token, hostId: 'i', keyDir: rig.keyDir() });
  });

  it('refuses a host id registered with another key unless the token was made for its rejoin', async () => {
    const first = rig.keyDir();
    await joinFabric({ token: (await rig.token()).token, hostId: 'j', keyDir: first });
    // Joined again with the same key (a join run again): accepted.
    await joinFabric({ token: (await rig.token()).token, hostId: 'j', keyDir: first });
    // Reinstalled (a new key): refused, and the token is not spent.
    const t = await rig.token();
    const err = await refusedWith(
      joinFabric({ token: t.token, hostId: 'j', keyDir: rig.keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    assert.match(err.message, /--rejoin j/);
    await joinFabric({ token: t.token, hostId: 'j2', keyDir: rig.keyDir() });
    // A member registered by other means (members/<host>, no certs/ record) is protected too.
    await rig.kv.put('members/k').value(JSON.stringify({ id: 'k' }));
    await refusedWith(
      joinFabric({ token: (await rig.token()).token, hostId: 'k', keyDir: rig.keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    // A token for another host's rejoin does not help; one for this host's does.
    await refusedWith(
      joinFabric({ token: (await rig.token({ rejoin: 'j' })).token, hostId: 'k', keyDir: rig.keyDir() }),
      'ERR_JOIN_HOST_EXISTS',
    );
    const d = rig.keyDir();
    await joinFabric({ token: (await rig.token({ rejoin: 'j' })).token, hostId: 'j', keyDir: d });
    const j = rig.joined.filter((x) => x.host === 'j').at(-1);
    assert.equal(j?.replaced, true);
    assert.equal(j?.key, publicKeyFingerprint(await readFile(join(d, 'j.key'), 'utf8')));
  });
  it('lists tokens without their secrets, used or not, and revokes one before its time', async () => {
    const live = await rig.token({ rejoin: 'x' });
    const used = await rig.token();
    await joinFabric({ token: used.token, hostId: 'o', keyDir: rig.keyDir() });
    const list = await listTokens(rig.kv);
    const mine = list.find((x) => x.id === live.id);
    assert.ok(mine && !Number.isNaN(Date.parse(mine.created)));
    assert.deepEqual(
      { ...mine, created: '' },
      { id: live.id, created: '', expires: live.expires.toISOString(), rejoin: 'x' },
    );
    assert.equal(list.find((x) => x.id === used.id)?.used?.host, 'o');
    assert.ok(!JSON.stringify(list).includes(parseToken(live.token).secret));
    assert.equal(await revokeToken(rig.kv, live.id), true);
    assert.equal(await revokeToken(rig.kv, live.id), false);
    await refusedWith(joinFabric({ token: live.token, hostId: 'o2', keyDir: rig.keyDir() }), 'ERR_JOIN_TOKEN_INVALID');
    await refusedWith(revokeToken(rig.kv, 'NOPE'), 'ERR_JOIN_BAD_REQUEST');
  });
});
