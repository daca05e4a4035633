/**
 * The `cluster:` section: this host is a member of a fabric whose desired
 * state lives in etcd (docs/cluster.md). Absent, the daemon is a single host
 * with the embedded store, as before. `vmlink cluster init` and `vmlink
 * cluster join` write the same settings to `<state_dir>/cluster.json`, which
 * the daemon reads at start when the config has no `cluster:` section.
 */
import { z } from 'zod';
import { type Address, parseAddress } from '../util/address.js';

const absPath = (what: string) => z.string().startsWith('/', `${what} must be an absolute path`);

const tcpAddress = (what: string) =>
  z.string().transform((text, ctx): Extract<Address, { type: 'tcp' }> => {
    const a = parseAddress(text, ['tcp']);
    if (typeof a === 'string') {
      ctx.addIssue({ code: 'custom', message: `${what}: ${a}` });
      return z.NEVER;
    }
    return a as Extract<Address, { type: 'tcp' }>;
  });

/** An etcd client URL: http(s)://HOST:PORT. */
export const etcdEndpointSchema = z
  .string()
  .regex(
    /^https?:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\/?$/,
    'etcd endpoints are client URLs such as http://192.0.2.10:2379 or https://etcd1:2379',
  );

const pemFiles = (what: string) =>
  z.strictObject({ ca: absPath(`${what}.ca`), cert: absPath(`${what}.cert`), key: absPath(`${what}.key`) });

export const clusterSchema = z.strictObject({
  /** etcd client URLs of the fabric's etcd cluster (one or more members). */
  etcd: z.array(etcdEndpointSchema).min(1, 'cluster.etcd needs at least one etcd client URL'),
  /** Key prefix of the fabric in etcd; several fabrics can share one etcd under different prefixes. Default "/vmlink/". */
  prefix: z
    .string()
    .regex(/^\/([A-Za-z0-9_.-]+\/)*$/, 'cluster.prefix is a key path that starts and ends with "/", e.g. "/vmlink/"')
    .default('/vmlink/'),
  /** TLS to etcd: the CA of etcd's server certificates and this host's client certificate and key (PEM files). */
  etcd_tls: pemFiles('cluster.etcd_tls').optional(),
  /** Where other hosts dial this host's links, `tcp:IP:PORT`; default `overlay.listen` when it names an address. */
  address: tcpAddress('cluster.address').optional(),
  /** Other hosts can dial this host; false for a host behind NAT or a firewall that only dials out. Default: true when `overlay.listen` is set. */
  reachable: z.boolean().optional(),
  /** Seconds a host's lease lives without renewal: a host that stops renewing is down everywhere after it. 2-300, default 10. */
  lease_ttl_sec: z.number().int().min(2).max(300).default(10),
  /** On a host that holds the fabric CA: where joining hosts are served (`vmlink cluster join`), `tcp:IP:PORT`. */
  join_listen: tcpAddress('cluster.join_listen').optional(),
  /** The fabric CA's certificate, and the CA key on a host that signs joins (written by `vmlink cluster init`). */
  ca: z.strictObject({ cert: absPath('cluster.ca.cert'), key: absPath('cluster.ca.key').optional() }).optional(),
  /** This host's certificate from the fabric CA and its key (written by init and join). */
  host_cert: z
    .strictObject({ cert: absPath('cluster.host_cert.cert'), key: absPath('cluster.host_cert.key') })
    .optional(),
});
export type ClusterConfig = z.infer<typeof clusterSchema>;
