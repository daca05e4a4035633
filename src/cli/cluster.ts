/** `vmlink cluster init|token|join|status`: the fabric on etcd (docs/cluster.md). */
import type { Command } from 'commander';
import type { ClusterView } from '../api/client.js';
import { addressArg, hostIdArg, UsageError } from './args.js';
import { defineAction } from './context.js';
import { formatDuration, formatJson, formatPairs, formatTable, print } from './output.js';

const ENDPOINT_RE = /^https?:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\/?$/;

/** `--etcd URL[,URL...]` as a list of client URLs. */
function etcdArg(text: string): string[] {
  const urls = text
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  if (urls.length === 0) throw new UsageError('--etcd needs at least one etcd client URL, e.g. http://192.0.2.10:2379');
  for (const u of urls)
    if (!ENDPOINT_RE.test(u))
      throw new UsageError(
        `--etcd: "${u}" is not an etcd client URL; give http://HOST:PORT or https://HOST:PORT, comma-separated`,
      );
  return urls;
}

/** `90s`, `15m`, `1h`, `2d` or plain seconds, as seconds. */
function durationArg(flag: string, text: string, min: number, max: number): number {
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(text.trim());
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m?.[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  const sec = m ? Number(m[1]) * unit : Number.NaN;
  if (!Number.isInteger(sec) || sec < min || sec > max)
    throw new UsageError(`${flag}: "${text}" is not a duration from ${min}s to ${max}s (e.g. 15m, 1h, 3600)`);
  return sec;
}

/** The host table of `vmlink cluster status`. */
export function formatClusterHosts(c: ClusterView): string {
  return formatTable(
    [
      { header: 'HOST' },
      { header: 'STATE' },
      { header: 'ADDRESS' },
      { header: 'LEASE', align: 'right' },
      { header: 'NETWORKS' },
      { header: 'LINKS' },
    ],
    c.hosts.map((h) => [
      h.id === c.host ? `${h.id} (this host)` : h.id,
      h.state,
      h.address ?? (h.reachable ? '-' : 'dial-out'),
      h.lease_age_s === undefined
        ? '-'
        : h.lease_age_s < 60
          ? `${h.lease_age_s.toFixed(1)}s`
          : formatDuration(h.lease_age_s),
      h.networks.length ? h.networks.join(',') : '-',
      h.links.length ? h.links.map((l) => `${l.peer ?? l.name}:${l.state}`).join(' ') : '-',
    ]),
  );
}

/** Everything `vmlink cluster status` prints. */
function formatCluster(c: ClusterView): string {
  if (c.mode === 'single')
    return `host "${c.host}" is a single host (embedded store); start a fabric with vmlink cluster init --etcd URL\n`;
  const e = c.etcd;
  const pairs: [string, string][] = [
    ['host', c.host],
    ['etcd', e ? `${e.endpoints.join(',')} (prefix ${e.prefix})` : '-'],
    [
      'etcd state',
      e ? `${e.available ? 'available' : `unavailable: ${e.reason ?? ''}`} for ${formatDuration(e.since_s)}` : '-',
    ],
    ['lease ttl', c.lease_ttl_s === undefined ? '-' : `${c.lease_ttl_s}s`],
  ];
  const corrupt = c.corrupt.length
    ? `\ncorrupt keys (skipped):\n${c.corrupt.map((k) => `  ${k.key}: ${k.reason}`).join('\n')}\n`
    : '';
  return `${formatPairs(pairs)}\n${formatClusterHosts(c)}${corrupt}`;
}

export function addClusterCommands(program: Command, done: (code: number) => void): void {
  const cluster = program
    .command('cluster')
    .description('the fabric: hosts that share one state store in etcd (docs/cluster.md)');

  const init = cluster
    .command('init')
    .description('make this host the first of a fabric in etcd; its networks, ports, exports and links move there')
    .requiredOption('--etcd <urls>', 'etcd client URLs, comma-separated, e.g. http://192.0.2.10:2379')
    .option('--prefix <path>', 'key prefix of the fabric in etcd (default /vmlink/)')
    .option('--etcd-ca <file>', "CA of etcd's server certificates (TLS to etcd)")
    .option('--etcd-cert <file>', 'client certificate for etcd')
    .option('--etcd-key <file>', 'client key for etcd')
    .option('--ca-cert <file>', 'take this fabric CA (with --ca-key) instead of creating one')
    .option('--ca-key <file>', 'the key of --ca-cert')
    .option('--address <tcp:IP:PORT>', "where other hosts dial this host's links (default overlay.listen)")
    .option('--join-listen <tcp:IP:PORT>', 'where joining hosts are served (default: the link address, port 7401)')
    .option('--dial-out', 'other hosts cannot reach this host: it only dials out')
    .option('--json', 'print the fabric as JSON');
  defineAction(init, done, async (_args, opts, cli) => {
    const file = (k: string) => (opts[k] === undefined ? undefined : String(opts[k]));
    const tls = [file('etcdCa'), file('etcdCert'), file('etcdKey')];
    if (tls.some(Boolean) && !tls.every(Boolean))
      throw new UsageError('TLS to etcd needs all of --etcd-ca, --etcd-cert and --etcd-key');
    if (Boolean(file('caCert')) !== Boolean(file('caKey')))
      throw new UsageError('give both --ca-cert and --ca-key to take an existing fabric CA, or neither to create one');
    const body: Record<string, unknown> = {
      etcd: etcdArg(String(opts['etcd'])),
      ...(opts['prefix'] !== undefined ? { prefix: String(opts['prefix']) } : {}),
      ...(tls[0] ? { etcd_tls: { ca: tls[0], cert: tls[1], key: tls[2] } } : {}),
      ...(file('caCert') ? { ca: { cert: file('caCert'), key: file('caKey') } } : {}),
      ...(opts['address'] !== undefined ? { address: addressArg('--address', String(opts['address']), ['tcp']) } : {}),
      ...(opts['joinListen'] !== undefined
        ? { join_listen: addressArg('--join-listen', String(opts['joinListen']), ['tcp']) }
        : {}),
      ...(opts['dialOut'] ? { reachable: false } : {}),
    };
    const c = await cli.client.clusterInit(body);
    print(opts['json'] ? formatJson(c) : `fabric created in etcd; this host is "${c.host}"\n${formatClusterHosts(c)}`);
    return 0;
  });

  const token = cluster
    .command('token')
    .description('print a short-lived, single-use token for vmlink cluster join on a new host')
    .option('--ttl <duration>', 'how long the token works: 15m, 1h, 2d (default 1h)')
    .option('--rejoin <host>', 'the token may replace the registration of this host (a reinstalled host)')
    .option('--json', 'print the token, its expiry and join addresses as JSON');
  defineAction(token, done, async (_args, opts, cli) => {
    const ttl = opts['ttl'] === undefined ? undefined : durationArg('--ttl', String(opts['ttl']), 60, 7 * 86400);
    const t = await cli.client.clusterToken({
      ...(ttl === undefined ? {} : { ttl_sec: ttl }),
      ...(opts['rejoin'] === undefined ? {} : { rejoin: hostIdArg(String(opts['rejoin'])) }),
    });
    print(opts['json'] ? formatJson(t) : `${t.token}\n`);
    if (!opts['json'] && process.stderr.isTTY)
      process.stderr.write(`(valid until ${t.expires}, once; on the new host: vmlink cluster join TOKEN)\n`);
    return 0;
  });

  const join = cluster
    .command('join')
    .description(
      "join the fabric of TOKEN: this host gets its certificate and the fabric's etcd, nothing copied by hand",
    )
    .argument('<token>', 'the output of vmlink cluster token on a fabric host')
    .option('--json', 'print the fabric as JSON');
  defineAction(join, done, async ([tok], opts, cli) => {
    const c = await cli.client.clusterJoin({ token: String(tok).trim() });
    print(opts['json'] ? formatJson(c) : `joined the fabric as "${c.host}"\n${formatClusterHosts(c)}`);
    return 0;
  });

  const status = cluster
    .command('status')
    .description('every host of the fabric: state, lease age, networks, links; and etcd')
    .option('--json', 'print the API answer as JSON');
  defineAction(status, done, async (_args, opts, cli) => {
    const c = await cli.client.cluster();
    print(opts['json'] ? formatJson(c) : formatCluster(c));
    return 0;
  });
}
