/**
 * Where a daemon's fabric membership comes from: the config's `cluster:`
 * section, else `<state_dir>/cluster.json` as `vmlink cluster init` or
 * `join` wrote it (the same schema, in its text form, mode 0600). Also the
 * address this host advertises for its links when none is given.
 */
import { readFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { type ClusterConfig, clusterSchema } from '../config/cluster-schema.js';
import { parseWith } from '../config/parse.js';
import type { Config } from '../config/schema.js';
import { writeAtomically } from '../control/snapshot.js';
import { formatAddress } from '../util/address.js';
import { mkdirp } from '../util/fs.js';

/** The membership file in a state directory. */
export const clusterFile = (stateDir: string): string => join(stateDir, 'cluster.json');

/** The directory of the fabric's certificates on this host. */
export const clusterDir = (stateDir: string): string => join(stateDir, 'cluster');

/** The membership in force: the config's section, else the state file's; undefined for a single host. */
export async function loadClusterSettings(config: Config): Promise<ClusterConfig | undefined> {
  if (config.cluster) return config.cluster;
  const file = clusterFile(config.host.state_dir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    raw = { error: `not JSON: ${(err as Error).message}` };
  }
  return parseWith(clusterSchema, raw, `${file} (written by vmlink cluster init/join; remove it to leave the fabric)`);
}

/** Writes the membership file (text form: addresses as `tcp:IP:PORT`). */
export async function saveClusterSettings(stateDir: string, s: ClusterConfig): Promise<void> {
  const raw = {
    ...s,
    ...(s.address ? { address: formatAddress(s.address) } : {}),
    ...(s.join_listen ? { join_listen: formatAddress(s.join_listen) } : {}),
  };
  await mkdirp(stateDir);
  await writeAtomically(stateDir, clusterFile(stateDir), `${JSON.stringify(raw, null, 2)}\n`);
}

/** The local address this host uses to reach `endpoint` (an etcd URL): the address peers most likely reach it on. */
export function localAddressToward(endpoint: string, timeoutMs = 3000): Promise<string | undefined> {
  const u = new URL(endpoint);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const s = createConnection({ host, port, timeout: timeoutMs });
    const done = (a: string | undefined) => {
      s.destroy();
      resolve(a);
    };
    s.once('connect', () => done(s.localAddress));
    s.once('timeout', () => done(undefined));
    s.once('error', () => done(undefined));
  });
}
