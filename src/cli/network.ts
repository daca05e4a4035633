/** `vmlink network create|list|delete` and `vmlink status`. */
import type { Command } from 'commander';
import {
  type AdmissionStatus,
  type ControlClient,
  DaemonUnreachableError,
  type HttpStatusView,
  type ListenerView,
  type NetworkBody,
  type NetworkView,
  type StatusView,
} from '../api/client.js';
import { intArg } from './args.js';
import { defineAction } from './context.js';
import { formatDuration, formatJson, formatPairs, formatTable, print } from './output.js';

/** The network table: one row per network. */
export function formatNetworks(networks: readonly NetworkView[]): string {
  return formatTable(
    [
      { header: 'NAME' },
      { header: 'VNI', align: 'right' },
      { header: 'MTU', align: 'right' },
      { header: 'PORTS' },
      { header: 'MACS', align: 'right' },
      { header: 'SOURCE' },
    ],
    networks.map((n) => [
      n.name,
      String(n.vni),
      String(n.mtu),
      n.ports.length ? n.ports.join(',') : '-',
      String(n.macs),
      n.source,
    ]),
  );
}

/** `unix:/run/vmlink/nbd.sock, tcp:127.0.0.1:10809 (2 exports, 1 client)`, or why it is off. */
function storageLine(s: StatusView): string {
  const st = s.storage;
  if (!st) return '-';
  const counts = `${st.exports} export${st.exports === 1 ? '' : 's'}, ${st.clients} client${st.clients === 1 ? '' : 's'}`;
  if (st.running) return `${st.listen.join(', ')} (${counts})`;
  return st.reason ? `down: ${st.reason}` : 'off (no storage section and no exports)';
}

/**
 * `control 2 open, 0 refused; nbd 3 open, 1036 refused (evicted 1000, handshake_timeout 36)`:
 * each listener's connections now and what admission refused or closed since start.
 */
function admissionLine(a: NonNullable<StatusView['admission']>): string {
  const one = (name: string, x: AdmissionStatus | undefined): string[] => {
    if (!x) return [];
    const reasons = Object.entries(x.refused).filter(([, n]) => n > 0);
    const total = reasons.reduce((sum, [, n]) => sum + n, 0);
    const why = reasons.length ? ` (${reasons.map(([r, n]) => `${r} ${n}`).join(', ')})` : '';
    return [`${name} ${x.tcp + x.unix} open, ${total} refused${why}`];
  };
  return [...one('control', a.control), ...one('nbd', a.nbd), ...one('links', a.links)].join('; ');
}

/** The status block. */
export function formatStatus(s: StatusView): string {
  return formatPairs([
    ['host', s.host.id],
    ['version', s.host.version],
    ['pid', String(s.host.pid)],
    ['uptime', formatDuration(s.host.uptime_s)],
    ['control', s.host.control],
    ['state dir', s.host.state_dir],
    ['networks', String(s.networks)],
    ['ports', `${s.ports.total} (${s.ports.up} up)`],
    ['storage', storageLine(s)],
    ...(s.overlay ? [['link listener', listenerLine(s.overlay.listener)] as [string, string]] : []),
    ...(s.admission ? [['admission', admissionLine(s.admission)] as [string, string]] : []),
    ...(s.http ? [['http', httpLine(s.http)] as [string, string]] : []),
  ]);
}

/** `http://127.0.0.1:9470/ (metrics, events, dashboard)` or `down: cannot listen on ...`. */
function httpLine(h: HttpStatusView): string {
  const at = h.listen[0];
  return at ? `http://${at.slice(4)}/ (metrics, events, dashboard)` : `down: ${h.reason ?? 'not listening'}`;
}

/**
 * `GET /v1/status`, asked again every 200 ms while nothing answers on the
 * socket (a daemon still starting), for up to `waitMs`; other errors at once.
 */
async function statusWhenUp(client: ControlClient, waitMs: number): Promise<StatusView> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await client.status();
    } catch (err) {
      if (!(err instanceof DaemonUnreachableError) || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** `up on 0.0.0.0:7400`, `down: cannot listen on ...`, `off`. */
export function listenerLine(l: ListenerView): string {
  return l.state === 'up' ? `up on ${l.address}` : l.state === 'down' ? `down: ${l.reason}` : 'off';
}

export function addStatusCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('status')
    .description("show the daemon's host id, version, uptime and totals")
    .option('--wait <seconds>', 'wait up to this long for a daemon that is starting (for scripts)')
    .option('--json', 'print the API answer as JSON');
  defineAction(cmd, done, async (_args, opts, cli) => {
    const waitS = opts['wait'] === undefined ? 0 : intArg('--wait', String(opts['wait']), 0, 3600);
    const s = await statusWhenUp(cli.client, waitS * 1000);
    print(opts['json'] ? formatJson(s) : formatStatus(s));
    return 0;
  });
}

export function addNetworkCommands(program: Command, done: (code: number) => void): void {
  const net = program.command('network').description('create, list and delete virtual networks');

  const create = net
    .command('create')
    .description('create a network (a layer-2 broadcast domain with its own VNI)')
    .argument('<name>', 'network name (letters, digits, _ . -)')
    .requiredOption('--vni <N>', 'virtual network identifier, 1-16777215 (unique)')
    .option('--mtu <M>', 'largest Ethernet payload in bytes, 68-65535 (default 1500)')
    .option('--json', 'print the created network as JSON');
  defineAction(create, done, async ([name], opts, cli) => {
    const body: NetworkBody = { name: name as string, vni: intArg('--vni', String(opts['vni']), 1, 0xffffff) };
    if (opts['mtu'] !== undefined) body.mtu = intArg('--mtu', String(opts['mtu']), 68, 65535);
    const n = await cli.client.createNetwork(body);
    print(opts['json'] ? formatJson(n) : `network "${n.name}" created (vni ${n.vni}, mtu ${n.mtu})\n`);
    return 0;
  });

  const list = net.command('list').description('list networks').option('--json', 'print the API answer as JSON');
  defineAction(list, done, async (_args, opts, cli) => {
    const networks = await cli.client.listNetworks();
    print(opts['json'] ? formatJson({ networks }) : formatNetworks(networks));
    return 0;
  });

  const del = net
    .command('delete')
    .description('delete a network that no port uses (networks from the config file stay)')
    .argument('<name>', 'network name');
  defineAction(del, done, async ([name], _opts, cli) => {
    await cli.client.deleteNetwork(name as string);
    print(`network "${name}" deleted\n`);
    return 0;
  });
}
