/**
 * How a single host becomes a member (`vmlink cluster init` and `join`):
 * the settings it will run with, and the certificates it gets.
 *
 * init: the fabric record (`fabric`: the CA certificate) is created in one
 * transaction, only when absent, so two hosts cannot both start a fabric
 * under one prefix. The CA is made in `<state_dir>/cluster/ca` unless one is
 * given, this host's certificate is signed by it, and it serves joins on
 * `join_listen` (default: its link address, port 7401).
 *
 * join: the token names the issuers and pins the CA (cluster/join-client.ts);
 * the host's key is made here and never leaves it.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { EtcdConnection } from '../cluster/etcd.js';
import { joinFabric } from '../cluster/join-client.js';
import { parseToken } from '../cluster/token.js';
import type { ClusterConfig } from '../config/cluster-schema.js';
import { parseWith } from '../config/parse.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { caInit } from '../pki/ca.js';
import { createKeyAndCsr, signCsr } from '../pki/csr.js';
import { advertisedAddress } from './cluster-fabric.js';
import { localAddressToward } from './cluster-settings.js';
import { ClusterExistsError } from './errors.js';

/** The default port of the join endpoint. */
export const JOIN_PORT = 7401;

export interface SetUpOptions {
  /** The validated request (the `cluster:` schema). */
  request: ClusterConfig;
  config: Config;
  /** `<state_dir>/cluster`: the CA (when made here), this host's key and certificate. */
  dir: string;
  logger: Logger;
}

/** The host's IP as other hosts see it: from its advertised address, else the local address toward `url`. */
async function ownIp(settings: ClusterConfig, config: Config, url: string): Promise<string | undefined> {
  const local = await localAddressToward(url);
  const a = advertisedAddress(settings, config, local);
  return a ? a.slice(4, a.lastIndexOf(':')).replace(/^\[|\]$/g, '') : local;
}

/** `vmlink cluster init`: creates the fabric in etcd; returns the settings this host runs with. */
export async function setUpFabric(o: SetUpOptions): Promise<ClusterConfig> {
  const r = o.request;
  const host = o.config.host.id;
  const conn = new EtcdConnection({
    endpoints: r.etcd,
    prefix: r.prefix,
    ...(r.etcd_tls ? { tls: r.etcd_tls } : {}),
    logger: o.logger,
  });
  let ip: string | undefined;
  let ca: { cert: string; key: string };
  let certPath: string;
  let keyPath: string;
  try {
    const existing = await conn.run('read the fabric record', () => conn.kv.get('fabric').exec());
    if (existing.kvs.length > 0) throw new ClusterExistsError(r.etcd, r.prefix);
    ca = r.ca?.key ? { cert: r.ca.cert, key: r.ca.key } : await caInit(join(o.dir, 'ca'), { name: host, force: true });
    ip = await ownIp(r, o.config, r.etcd[0] as string);
    const made = await createKeyAndCsr(o.dir, host);
    keyPath = made.keyPath;
    certPath = join(o.dir, `${host}.pem`);
    const pem = await signCsr(ca, made.csrPem, { cn: host, ...(ip ? { ips: [ip] } : {}) });
    await writeFile(certPath, pem, { mode: 0o644 });
    const caPem = await readFile(ca.cert, 'utf8');
    const record = JSON.stringify({ version: 1, created: new Date().toISOString(), by: host, ca: caPem });
    const res = await conn.run('create the fabric', () =>
      conn.kv.if('fabric', 'Create', '==', 0).then(conn.kv.put('fabric').value(record)).commit(),
    );
    if (!res.succeeded) throw new ClusterExistsError(r.etcd, r.prefix);
  } finally {
    await conn.close();
  }
  const joinListen = r.join_listen ?? (ip ? { type: 'tcp' as const, host: ip, port: JOIN_PORT } : undefined);
  return {
    ...r,
    ca,
    host_cert: { cert: certPath, key: keyPath },
    ...(joinListen ? { join_listen: joinListen } : {}),
  };
}

const joinBody = z.strictObject({
  token: z.string().min(1, 'token is required: the output of vmlink cluster token on a host of the fabric'),
});

export interface JoinOptions {
  body: unknown;
  config: Config;
  dir: string;
}

/** `vmlink cluster join TOKEN`: gets this host's certificate and the fabric's etcd; returns the settings it runs with. */
export async function joinAsHost(o: JoinOptions): Promise<ClusterConfig> {
  const { token } = parseWith(joinBody, o.body, 'the cluster join request body');
  const t = parseToken(token);
  const base = { etcd: [], prefix: '/vmlink/', lease_ttl_sec: 10 } as unknown as ClusterConfig;
  const ip = await ownIp(base, o.config, `http://${t.join[0]}`);
  const j = await joinFabric({
    token,
    hostId: o.config.host.id,
    keyDir: o.dir,
    ...(ip ? { ips: [ip] } : {}),
  });
  return {
    etcd: j.etcd.endpoints,
    prefix: j.prefix,
    ...(j.etcd.tls ? { etcd_tls: j.etcd.tls } : {}),
    lease_ttl_sec: 10,
    ca: { cert: j.caPath },
    host_cert: { cert: j.certPath, key: j.keyPath },
  };
}
