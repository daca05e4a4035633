/**
 * The issuer's join endpoint (src/cluster/join.ts) faces the network: an
 * oversize body, malformed JSON, a CSR without proof of its key and garbage
 * bytes are refused and it stays up; a source that keeps failing or holds
 * too many connections is refused; it will not start with certificates that
 * do not fit the fabric CA. Against a real etcd and openssl
 * (test/helpers/join-rig.ts).
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { request } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { joinFabric } from '../../src/cluster/join-client.js';
import { parseToken } from '../../src/cluster/token.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { caInit, hostCert } from '../../src/pki/ca.js';
import { createKeyAndCsr } from '../../src/pki/csr.js';
import { type JoinRig, rawRequest, refusedWith, startJoinRig } from '../helpers/join-rig.js';

describe('cluster join endpoint', () => {
  let rig: JoinRig;
  before(async () => {
    rig = await startJoinRig();
  });
  after(async () => {
    await rig?.stop();
  });

  it('refuses an oversize body with 413 ERR_JOIN_BODY_TOO_LARGE, declared or streamed', async () => {
    const big = Buffer.alloc(64 * 1024, 'x');
    let r = await rawRequest(rig.server.address, 'POST', '/v1/join', big).catch((err: Error) => ({
      status: 0,
      body: err.message,
    }));
    assert.equal(r.status, 413, r.body);
    assert.equal(JSON.parse(r.body).error.code, 'ERR_JOIN_BODY_TOO_LARGE');
    r = await rawRequest(rig.server.address, 'POST', '/v1/join', big, { 'transfer-encoding': 'chunked' }).catch(
      (err: Error) => ({
        status: 0,
        body: err.message,
      }),
    );
    // Streamed: the answer races the upload; either it arrives or the connection is cut.
    assert.ok(r.status === 413 || r.status === 0, `${r.status} ${r.body}`);
  });

  it('answers malformed requests with ERR_JOIN_BAD_REQUEST and stays up after garbage bytes', async () => {
    let r = await rawRequest(rig.server.address, 'POST', '/v1/join', '{"token": ');
    assert.equal(r.status, 400);
    assert.equal(JSON.parse(r.body).error.code, 'ERR_JOIN_BAD_REQUEST');
    r = await rawRequest(rig.server.address, 'POST', '/v1/join', JSON.stringify({ token: 'x', host: 'b', csr: 'no' }));
    assert.match(JSON.parse(r.body).error.message, /"csr" is not a PEM/);
    const csr = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n';
    const t = parseToken((await rig.token()).token);
    r = await rawRequest(
      rig.server.address,
      'POST',
      '/v1/join',
      JSON.stringify({ token: `${t.id}.${t.secret}`, host: 'b9', csr }),
    );
    assert.equal(r.status, 400, r.body);
    assert.match(JSON.parse(r.body).error.message, /"csr" is not a readable certificate request/);
    // A CSR whose self-signature does not verify (no proof of holding the key) is refused, the token not spent.
    const { csrPem } = await createKeyAndCsr(rig.keyDir(), 'b9');
    const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    der[der.length - 3] = (der[der.length - 3] as number) ^ 1;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    r = await rawRequest(
      rig.server.address,
      'POST',
      '/v1/join',
      JSON.stringify({ token: `${t.id}.${t.secret}`, host: 'b9', csr: tampered }),
    );
    assert.equal(r.status, 400, r.body);
    assert.match(JSON.parse(r.body).error.message, /"csr" was refused: .*self-signature/);
    r = await rawRequest(rig.server.address, 'GET', '/etc/passwd');
    assert.equal(r.status, 400);
    const [host, port] = rig.server.address.split(':') as [string, string];
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
    r = await rawRequest(rig.server.address, 'GET', '/v1/join/ca');
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).ca, rig.caPem);
    // The unconsumed token still joins.
    await joinFabric({
      token: `vmlink1.${t.id}.${t.secret}.${(await rig.token()).token.split('.')[3]}`,
      hostId: 'b9',
      keyDir: rig.keyDir(),
    });
  });

  it('refuses to start with an endpoint certificate the fabric CA did not sign, or a CA key that is not its own', async () => {
    const other = await caInit(join(rig.dir, 'other-ca'));
    const stranger = await hostCert(join(rig.dir, 'other-ca'), 'stranger', join(rig.dir, 'stranger'));
    const start = (ca: { cert: string; key: string }, serverCert: { cert: string; key: string }) =>
      rig.startServer({ ca, serverCert });
    const fabricCa = rig.ca;
    let err = await refusedWith(start(fabricCa, { cert: stranger.cert, key: stranger.key }), 'ERR_JOIN_SERVER');
    assert.match(err.message, /stranger\.pem is not signed by the fabric CA/);
    const issuer = rig.issuer;
    err = await refusedWith(start({ cert: fabricCa.cert, key: other.key }, issuer), 'ERR_JOIN_SERVER');
    assert.match(err.message, /is not the key of/);
    err = await refusedWith(
      start(fabricCa, { cert: join(rig.dir, 'missing.pem'), key: issuer.key }),
      'ERR_JOIN_SERVER',
    );
    assert.match(err.message, /cannot read the endpoint certificate .*missing\.pem/);
  });

  it('refuses a source after repeated failures with ERR_JOIN_BUSY, bounds connections per source, and hands out etcd TLS material', async () => {
    const strict = await rig.startServer({
      etcd: {
        endpoints: ['https://127.0.0.1:1'],
        prefix: rig.prefix,
        tls: {
          ca: rig.ca.cert,
          cert: rig.issuer.cert,
          key: rig.issuer.key,
        },
      },
      logger: silentLogger(),
      limits: { maxFailuresPerMinute: 3, maxPerSource: 2 },
    });
    try {
      const d = rig.keyDir();
      const r = await joinFabric({
        token: (await rig.token({ join: [strict.address] })).token,
        hostId: 'l',
        keyDir: d,
      });
      assert.deepEqual(r.etcd, {
        endpoints: ['https://127.0.0.1:1'],
        tls: { ca: join(d, 'etcd-ca.pem'), cert: join(d, 'etcd-client.pem'), key: join(d, 'etcd-client.key') },
      });
      assert.equal(
        await readFile(r.etcd.tls?.key ?? '', 'utf8'),
        await readFile(join(rig.dir, 'issuer', 'issuer.key'), 'utf8'),
      );
      assert.equal((await stat(r.etcd.tls?.key ?? '')).mode & 0o777, 0o600);
      for (let i = 0; i < 3; i++) {
        const a = await rawRequest(strict.address, 'POST', '/v1/join', 'nonsense');
        assert.equal(a.status, 400);
      }
      const a = await rawRequest(strict.address, 'POST', '/v1/join', 'nonsense');
      assert.equal(a.status, 503);
      assert.equal(JSON.parse(a.body).error.code, 'ERR_JOIN_BUSY');
      // The CA stays available to everyone.
      assert.equal((await rawRequest(strict.address, 'GET', '/v1/join/ca')).status, 200);
      // Two idle connections fill 127.0.0.1's share: a third is closed at once, another source is served.
      const [host, port] = strict.address.split(':') as [string, string];
      const idle = await Promise.all(
        [1, 2].map(
          () =>
            new Promise<Socket>((resolve) => {
              const s = netConnect({ host, port: Number(port) }, () => resolve(s));
            }),
        ),
      );
      try {
        await assert.rejects(rawRequest(strict.address, 'GET', '/v1/join/ca'));
        const other = await new Promise<number>((resolve, reject) => {
          const req = request(
            { host, port: Number(port), path: '/v1/join/ca', localAddress: '127.0.0.2', rejectUnauthorized: false },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', reject);
          req.end();
        });
        assert.equal(other, 200);
      } finally {
        for (const s of idle) s.destroy();
      }
    } finally {
      await strict.close();
    }
  });
  it('answers ERR_JOIN_UNAVAILABLE while etcd is away, without spending the token, and joins once it is back', async () => {
    const server = await rig.startServer({ limits: { joinTimeoutMs: 3000 } });
    try {
      const t = await rig.token({ join: [server.address] });
      await rig.etcd.killAll();
      const err = await refusedWith(
        joinFabric({ token: t.token, hostId: 'n', keyDir: rig.keyDir() }),
        'ERR_JOIN_UNAVAILABLE',
      );
      assert.equal(err.status, 503);
      await rig.etcd.startAll();
      // The etcd client takes a while to trust etcd again (its circuit breaker): retry while unavailable.
      const d = rig.keyDir();
      const deadline = Date.now() + 60_000;
      for (;;) {
        try {
          const r = await joinFabric({ token: t.token, hostId: 'n', keyDir: d });
          assert.ok(r.certPath);
          break;
        } catch (e) {
          if (!hasCode(e, 'ERR_JOIN_UNAVAILABLE') || Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    } finally {
      await server.close();
    }
  });
});
