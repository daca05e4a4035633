/**
 * A fabric to join, for the cluster join tests: a real 1-member etcd, a
 * fabric CA and an issuer certificate made with openssl (src/pki), and an
 * issuer's join endpoint (src/cluster/join.ts) on loopback. `token()` makes
 * tokens for it; `keyDir()` gives each joining host a fresh directory.
 *
 *   const rig = await startJoinRig();
 *   await joinFabric({ token: (await rig.token()).token, hostId: 'b', keyDir: rig.keyDir() });
 *   await rig.stop();   // in after()
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3, type Namespace } from 'etcd3';
import { type JoinedHost, type JoinServer, type JoinServerOptions, startJoinServer } from '../../src/cluster/join.js';
import { type CreatedToken, createToken } from '../../src/cluster/token.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { type CaFiles, caInit, hostCert } from '../../src/pki/ca.js';
import { type EtcdCluster, startEtcd } from './etcd.js';

export interface JoinRig {
  etcd: EtcdCluster;
  client: Etcd3;
  /** The fabric's namespace (prefix {@link JoinRig.prefix}). */
  kv: Namespace;
  prefix: string;
  /** Temporary directory of everything: `ca/`, `issuer/`, the joining hosts' directories. */
  dir: string;
  ca: CaFiles;
  caPem: string;
  /** The issuer's host certificate and key files: the endpoint's TLS certificate. */
  issuer: { cert: string; key: string };
  server: JoinServer;
  /** Hosts the rig's server reported joined, in order. */
  joined: JoinedHost[];
  /** A fresh directory for a joining host. */
  keyDir(): string;
  /** A token for the rig's server (or `join` addresses). */
  token(opts?: { ttlSec?: number; rejoin?: string; join?: string[] }): Promise<CreatedToken>;
  /** Another join endpoint on the rig's fabric; the caller closes it. */
  startServer(opts?: Partial<JoinServerOptions>): Promise<JoinServer>;
  stop(): Promise<void>;
}

export async function startJoinRig(): Promise<JoinRig> {
  const etcd = await startEtcd({ members: 1 });
  const client = new Etcd3({ hosts: etcd.endpoints });
  const prefix = `/vmlink-join-test-${process.pid}/`;
  const kv = client.namespace(prefix);
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-join-'));
  const ca = await caInit(join(dir, 'ca'), { name: 'test' });
  const caPem = await readFile(ca.cert, 'utf8');
  const h = await hostCert(join(dir, 'ca'), 'issuer', join(dir, 'issuer'));
  const issuer = { cert: h.cert, key: h.key };
  const joined: JoinedHost[] = [];
  const startServer = (opts: Partial<JoinServerOptions> = {}) =>
    startJoinServer({
      listen: '127.0.0.1:0',
      ca,
      serverCert: issuer,
      kv,
      etcd: { endpoints: etcd.endpoints, prefix },
      logger: silentLogger(),
      ...opts,
    });
  const server = await startServer({
    onJoined: (j) => joined.push(j),
    // Every test comes from 127.0.0.1: its refusals must not lock the others out.
    limits: { maxFailuresPerMinute: 10_000 },
  });
  let n = 0;
  return {
    etcd,
    client,
    kv,
    prefix,
    dir,
    ca,
    caPem,
    issuer,
    server,
    joined,
    keyDir: () => join(dir, `host-${++n}`),
    token: (opts = {}) =>
      createToken(kv, {
        joinAddresses: opts.join ?? [server.address],
        caCertPem: caPem,
        ...(opts.ttlSec !== undefined ? { ttlSec: opts.ttlSec } : {}),
        ...(opts.rejoin !== undefined ? { rejoin: opts.rejoin } : {}),
      }),
    startServer,
    async stop() {
      await server.close();
      client.close();
      await etcd.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Awaits `p`, which must reject with an error whose code is `code`; returns the error. */
export async function refusedWith(p: Promise<unknown>, code: string): Promise<Error & { status?: number }> {
  try {
    await p;
  } catch (err) {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
    return err as Error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** A raw HTTPS request to an endpoint `IP:PORT`, without verification: status and body. */
export function rawRequest(address: string, method: string, path: string, body?: Buffer | string, headers = {}) {
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
