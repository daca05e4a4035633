/**
 * EtcdConnection against real etcd: TLS client certificates (accepted, and
 * refused when signed by another CA), unreadable TLS files, errors of the
 * operation passing through run(), and the availability state across an
 * outage (one notice per change).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { ClusterConflictError } from '../../src/cluster/errors.js';
import { EtcdConnection } from '../../src/cluster/etcd.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';
import { type CertDir, makeCerts } from '../helpers/tls-certs.js';

async function waitFor(pred: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('cluster etcd connection over TLS', () => {
  let dir: string;
  let certs: CertDir;
  let stranger: CertDir;
  let etcd: EtcdCluster;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-etcd-tls-'));
    certs = await makeCerts(join(dir, 'fabric'));
    stranger = await makeCerts(join(dir, 'other'), { cn: 'another CA' });
    etcd = await startEtcd({ tls: { ca: certs.ca, cert: certs.serverCert, key: certs.serverKey } });
  });
  after(async () => {
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reads and writes with a client certificate signed by the CA etcd trusts', async () => {
    const conn = new EtcdConnection({
      endpoints: etcd.endpoints,
      logger: silentLogger(),
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
    });
    try {
      assert.match(etcd.endpoints[0] as string, /^https:/);
      await waitFor(() => conn.available, 'the connection', 60_000);
      await conn.run('write', () => conn.kv.put('fabric').value('{"version":1}').exec());
      assert.equal(await conn.run('read', () => conn.kv.get('fabric').string()), '{"version":1}');
    } finally {
      await conn.close();
    }
  });

  it('is refused with ERR_CLUSTER_UNAVAILABLE when its certificate comes from another CA', async () => {
    const conn = new EtcdConnection({
      endpoints: etcd.endpoints,
      logger: silentLogger(),
      tls: { ca: certs.ca, cert: stranger.clientCert, key: stranger.clientKey },
    });
    try {
      await assert.rejects(
        conn.run('read the fabric record', () => conn.kv.get('fabric').string()),
        (err) => hasCode(err, 'ERR_CLUSTER_UNAVAILABLE'),
      );
      assert.equal(conn.available, false);
    } finally {
      await conn.close();
    }
  });

  it('throws ERR_CLUSTER_TLS naming a TLS file it cannot read', () => {
    assert.throws(
      () =>
        new EtcdConnection({
          endpoints: etcd.endpoints,
          logger: silentLogger(),
          tls: { ca: certs.ca, cert: certs.clientCert, key: join(dir, 'missing-key.pem') },
        }),
      (err) => hasCode(err, 'ERR_CLUSTER_TLS') && `${err}`.includes('missing-key.pem'),
    );
  });
});

describe('cluster etcd connection state', () => {
  let etcd: EtcdCluster;

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it('passes an error of the operation itself through run() unchanged', async () => {
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger: silentLogger() });
    try {
      const mine = new ClusterConflictError('network "lan" differs');
      await assert.rejects(
        conn.run('check', async () => {
          throw mine;
        }),
        (err) => err === mine,
      );
    } finally {
      await conn.close();
    }
  });

  it('tells its listeners once when etcd goes away and once when it is back', async () => {
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger: silentLogger() });
    const states: boolean[] = [];
    conn.onState((up) => states.push(up));
    try {
      await waitFor(() => conn.available, 'the connection');
      await etcd.killAll();
      await waitFor(() => !conn.available, 'the outage to be noticed');
      await etcd.startAll();
      await waitFor(() => conn.available, 'etcd to be back');
      assert.deepEqual(states, [true, false, true]);
      await conn.run('write after the outage', () => conn.kv.put('x').value('1').exec());
    } finally {
      await conn.close();
    }
  });

  it('keeps a lease across an outage with a few keep-alives, not a retry loop, and reports its loss', async () => {
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger: silentLogger() });
    const other = new Etcd3({ hosts: etcd.endpoints });
    // The TTL leaves room for the reconnection after the outage (probe backoff and the client's circuit breaker, 5 s each at most).
    const lease = conn.lease(15);
    const seen = { ok: 0, failed: 0, lost: 0 };
    lease.on('keepaliveSucceeded', () => seen.ok++);
    lease.on('keepaliveFailed', () => seen.failed++);
    lease.on('lost', () => seen.lost++);
    try {
      await lease.put('alive/h1').value('{}');
      await waitFor(() => seen.ok >= 1 && conn.available, 'a keep-alive');
      await etcd.killAll();
      await waitFor(() => !conn.available, 'the outage to be noticed');
      await new Promise((r) => setTimeout(r, 8000));
      assert.ok(seen.failed < 10, `${seen.failed} keep-alive attempts during the outage`);
      await etcd.startAll();
      const ok = seen.ok;
      await waitFor(() => seen.ok > ok, 'a keep-alive after the outage');
      assert.equal(seen.lost, 0);
      assert.equal(await other.get('/vmlink/alive/h1').string(), '{}');
      await other.leaseClient.leaseRevoke({ ID: await lease.grant() });
      await waitFor(() => seen.lost === 1, "the lease's loss");
    } finally {
      other.close();
      await conn.close();
    }
  });
});
