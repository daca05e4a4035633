/** `vmlink port add|list|show|delete`. */
import type { Command } from 'commander';
import type { PortBody, PortView } from '../api/client.js';
import { addressArg, choiceArg, intArg, macArg, stormArg, trunkArg, UsageError } from './args.js';
import { defineAction, type Opts } from './context.js';
import { displayValue, flatten, formatJson, formatPairs, formatTable, print, styleState } from './output.js';

/** Port kinds the CLI can add. */
export const PORT_KINDS = ['stream', 'socket', 'dgram', 'tap', 'vde', 'host', 'vhost-user'] as const;
type Kind = (typeof PORT_KINDS)[number];

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Transport flags (commander's camelCase key -> the flag as typed). */
const TRANSPORT_FLAGS: Record<string, string> = {
  listen: '--listen',
  connect: '--connect',
  local: '--local',
  remote: '--remote',
  ifname: '--ifname',
  vnetHdr: '--vnet-hdr',
  dir: '--dir',
  memoryMb: '--memory-mb',
  queues: '--queues',
  holdMs: '--hold-ms',
};

/** The transport flags each kind takes. */
const KIND_FLAGS: Record<Kind, readonly string[]> = {
  stream: ['listen', 'connect'],
  socket: ['listen', 'connect'],
  dgram: ['local', 'remote'],
  tap: ['ifname', 'vnetHdr'],
  vde: ['dir'],
  host: ['ifname'],
  'vhost-user': ['listen', 'connect', 'memoryMb', 'queues', 'holdMs'],
};

/** The transport fields of the body for a kind; refuses flags the kind does not take. */
function transportFields(kind: Kind, opts: Opts): Record<string, unknown> {
  const given = (f: string) => opts[f] !== undefined;
  const takes = KIND_FLAGS[kind];
  for (const f of Object.keys(TRANSPORT_FLAGS)) {
    if (given(f) && !takes.includes(f)) {
      const flags = takes.map((t) => TRANSPORT_FLAGS[t]).join(', ');
      throw new UsageError(`${TRANSPORT_FLAGS[f]} is not for --kind ${kind} (it takes ${flags})`);
    }
  }
  const out: Record<string, unknown> = {};
  if (kind === 'dgram') {
    for (const f of ['local', 'remote']) {
      if (!given(f)) throw new UsageError(`--kind dgram needs --${f} udp:HOST:PORT or unix:/path`);
      out[f] = addressArg(`--${f}`, String(opts[f]), ['udp', 'unix']);
    }
  } else if (kind === 'tap') {
    if (!given('ifname')) throw new UsageError('--kind tap needs --ifname NAME (e.g. vmtap0, or vmtap%d)');
    out['ifname'] = String(opts['ifname']);
    if (opts['vnetHdr'] === true) out['vnet_hdr'] = true;
  } else if (kind === 'host') {
    if (!given('ifname')) throw new UsageError('--kind host needs --ifname NAME (an existing interface, e.g. eth1)');
    out['ifname'] = String(opts['ifname']);
  } else if (kind === 'vde') {
    const dir = String(opts['dir'] ?? '');
    if (!dir.startsWith('/')) throw new UsageError(`--kind vde needs --dir /absolute/dir (got "${dir}")`);
    out['dir'] = dir;
  } else if (kind === 'vhost-user') {
    if (given('listen') === given('connect'))
      throw new UsageError(
        '--kind vhost-user needs exactly one of --listen unix:/path (QEMU connects) or --connect unix:/path',
      );
    const f = given('listen') ? 'listen' : 'connect';
    out[f] = addressArg(`--${f}`, String(opts[f]), ['unix']);
    if (given('memoryMb')) out['memory_mb'] = intArg('--memory-mb', String(opts['memoryMb']), 16, 1 << 20);
    if (given('queues')) out['queues'] = intArg('--queues', String(opts['queues']), 1, 8);
    if (given('holdMs')) out['hold_ms'] = intArg('--hold-ms', String(opts['holdMs']), 0, 60_000);
  } else {
    if (given('listen') === given('connect')) {
      throw new UsageError(`--kind ${kind} needs exactly one of --listen ADDR (QEMU connects) or --connect ADDR`);
    }
    const f = given('listen') ? 'listen' : 'connect';
    out[f] = addressArg(`--${f}`, String(opts[f]), kind === 'stream' ? ['unix', 'tcp'] : ['tcp']);
  }
  return out;
}

/** Builds the `POST /v1/ports` body from `port add` options; throws UsageError for bad values. */
export function portBody(name: string, opts: Opts): PortBody {
  const kind = choiceArg('--kind', String(opts['kind']), PORT_KINDS);
  const body: PortBody = { name, kind };
  const network = opts['network'] as string | undefined;
  const trunk = opts['trunk'] as string | undefined;
  if ((network === undefined) === (trunk === undefined)) {
    throw new UsageError('give exactly one of --network NET (access port) or --trunk VID=NET[,VID=NET...]');
  }
  if (network !== undefined) {
    if (opts['native'] !== undefined) throw new UsageError('--native is only for trunk ports (with --trunk)');
    body['network'] = network;
  } else {
    const t: { vlans: Record<string, string>; native?: string } = { vlans: trunkArg('--trunk', trunk as string) };
    if (opts['native'] !== undefined) t.native = opts['native'] as string;
    body['trunk'] = t;
  }
  Object.assign(body, transportFields(kind, opts));
  const allowed = (opts['allowedMac'] as string[] | undefined) ?? [];
  if (allowed.length) body['allowed_macs'] = allowed.map((m) => macArg('--allowed-mac', m));
  if (opts['maxMacs'] !== undefined) body['max_macs'] = intArg('--max-macs', String(opts['maxMacs']), 1, 65536);
  if (opts['storm'] !== undefined) body['storm'] = stormArg('--storm', String(opts['storm']));
  if (opts['queueLen'] !== undefined) body['queue_len'] = intArg('--queue-len', String(opts['queueLen']), 1, 1 << 20);
  if (opts['mac'] !== undefined) body['mac'] = macArg('--mac', String(opts['mac']));
  const socket = socketFields(opts);
  if (socket) body['socket'] = socket;
  return body;
}

/** `socket: {mode, owner, group}` from --socket-mode/--socket-owner/--socket-group, or undefined. */
function socketFields(opts: Opts): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  if (opts['socketMode'] !== undefined) {
    const mode = String(opts['socketMode']);
    if (!/^0?[0-7]{3}$/.test(mode))
      throw new UsageError(`--socket-mode "${mode}" is not an octal mode of three digits, like 0660`);
    out['mode'] = mode;
  }
  if (opts['socketOwner'] !== undefined) out['owner'] = String(opts['socketOwner']);
  if (opts['socketGroup'] !== undefined) out['group'] = String(opts['socketGroup']);
  return Object.keys(out).length ? out : undefined;
}

/** `lab` for an access port, `10=lab,20=dmz native=x` for a trunk. */
export function portNetworks(p: PortView): string {
  if (p.network) return p.network;
  if (!p.trunk) return '-';
  const vlans = Object.entries(p.trunk.vlans)
    .map(([vid, net]) => `${vid}=${net}`)
    .join(',');
  return p.trunk.native ? `${vlans} native=${p.trunk.native}` : vlans;
}

function totalDrops(p: PortView): number {
  return Object.values(p.counters.drops).reduce((a, b) => a + b, 0);
}

/** The port table: one row per port. */
export function formatPorts(ports: readonly PortView[]): string {
  return formatTable(
    [
      { header: 'NAME' },
      { header: 'KIND' },
      { header: 'NETWORK' },
      { header: 'STATE' },
      { header: 'RX', align: 'right' },
      { header: 'TX', align: 'right' },
      { header: 'DROPS', align: 'right' },
      { header: 'MACS', align: 'right' },
    ],
    ports.map((p) => [
      p.name,
      p.kind,
      portNetworks(p),
      styleState(p.state),
      String(p.counters.rx_frames),
      String(p.counters.tx_frames),
      String(totalDrops(p)),
      String(p.macs),
    ]),
  );
}

/** Large segments received / passed whole / cut in software, checksums completed; nothing when all are 0. */
function offloadLine(p: PortView): [string, string][] {
  const o = p.counters.offload;
  if (!o || o.rx_gso + o.tx_gso + o.tx_segmented + o.tx_csum === 0) return [];
  return [
    [
      '  offload',
      `${o.rx_gso} large segments in, ${o.tx_gso} out whole, ${o.tx_segmented} cut, ${o.tx_csum} checksummed`,
    ],
  ];
}

/** Everything about one port: identity, transport, spec, counters and drops by reason. */
export function formatPort(p: PortView): string {
  const pairs: [string, string][] = [
    ['name', p.name],
    ['kind', p.kind],
    ['source', p.source],
    ['state', styleState(p.state)],
    ['network', portNetworks(p)],
    ['macs', String(p.macs)],
    ['transport', ''],
    ...flatten(p.transport).map(([k, v]): [string, string] => [`  ${k}`, v]),
    ['counters', ''],
    ['  rx', `${p.counters.rx_frames} frames, ${p.counters.rx_bytes} bytes`],
    ['  tx', `${p.counters.tx_frames} frames, ${p.counters.tx_bytes} bytes`],
    ...offloadLine(p),
    ['drops', ''],
    ...Object.entries(p.counters.drops).map(([k, v]): [string, string] => [`  ${k}`, String(v)]),
    ['spec', ''],
    ...flatten(p.spec).map(([k, v]): [string, string] => [`  ${k}`, v]),
  ];
  return formatPairs(pairs);
}

/** `listening on unix:/x`, for the line `port add` prints. */
function summary(p: PortView): string {
  const where = ['listen', 'connect', 'local', 'remote', 'ifname', 'dir']
    .filter((k) => p.spec[k] !== undefined)
    .map((k) => {
      // The transport knows the actual value (a TAP named vmtap%d in the spec is vmtap0 here).
      const actual = p.transport[k];
      return `${k} ${displayValue(typeof actual === 'string' ? actual : p.spec[k])}`;
    });
  return [p.kind, p.state, ...where].join(', ');
}

export function addPortCommands(program: Command, done: (code: number) => void): void {
  const port = program.command('port').description('add, list, show and delete ports (where VMs join networks)');

  const add = port
    .command('add')
    .description('add a port and open it (listen, or dial with retries)')
    .argument('<name>', 'port name (letters, digits, _ . -)')
    .requiredOption('--kind <kind>', `transport: ${PORT_KINDS.join('|')}`)
    .option('--network <net>', 'access port: the network it joins')
    .option('--trunk <vid=net,...>', 'trunk port: 802.1Q VLAN id to network, e.g. 10=lab,20=dmz')
    .option('--native <net>', 'trunk port: network for untagged frames')
    .option('--listen <addr>', 'stream/socket: vmlink listens, QEMU connects (unix:/path.sock, tcp:HOST:PORT)')
    .option('--connect <addr>', 'stream/socket: vmlink dials QEMU (server=on / listen=), and re-dials')
    .option('--local <addr>', 'dgram: where vmlink receives (udp:HOST:PORT or unix:/path; QEMU remote)')
    .option('--remote <addr>', 'dgram: where vmlink sends (udp:HOST:PORT or unix:/path; QEMU local)')
    .option(
      '--ifname <name>',
      'tap: interface name (created if missing; vmtap%d lets the kernel number it); host: an existing interface to bridge',
    )
    .option('--vnet-hdr', 'tap: carry a virtio_net_hdr per frame')
    .option('--dir <path>', 'vde: directory served as a VDE switch (vde_plug DIR, QEMU -netdev vde,sock=DIR)')
    .option(
      '--memory-mb <mib>',
      'vhost-user: the VM RAM in MiB that `vmlink qemu-args` shares with vmlink (default 1024)',
    )
    .option('--queues <n>', 'vhost-user: queue pairs of the VM NIC, 1-8 (multiqueue; default 1)')
    .option(
      '--hold-ms <ms>',
      'vhost-user: how long a full receive ring may hold up co-resident senders, 0-60000 (0: drop instead; default 100)',
    )
    .option('--allowed-mac <mac>', 'accept only frames from this source MAC (repeatable)', collect)
    .option('--max-macs <N>', 'most MACs learned on the port, 1-65536 (default 1024)')
    .option('--storm <pps[/burst]>', 'broadcast/multicast limit: frames per second [/burst frames]')
    .option('--queue-len <N>', 'egress queue length in frames, 1-1048576 (default 1024)')
    .option('--mac <mac>', 'MAC the VM gets from `vmlink qemu-args`')
    .option('--socket-mode <octal>', 'unix socket vmlink creates (listen/local/vde): permission bits (default 0600)')
    .option('--socket-owner <user>', 'unix socket vmlink creates: owner, a user name or uid (needs root)')
    .option(
      '--socket-group <group>',
      'unix socket vmlink creates: group, a name or gid (e.g. kvm, so QEMU may connect)',
    )
    .option('--json', 'print the added port as JSON');
  defineAction(add, done, async ([name], opts, cli) => {
    const body = portBody(name as string, opts);
    const p = await cli.client.addPort(body);
    print(opts['json'] ? formatJson(p) : `port "${p.name}" added (${summary(p)})\n`);
    return 0;
  });

  const list = port.command('list').description('list ports').option('--json', 'print the API answer as JSON');
  defineAction(list, done, async (_args, opts, cli) => {
    const ports = await cli.client.listPorts();
    print(opts['json'] ? formatJson({ ports }) : formatPorts(ports));
    return 0;
  });

  const show = port
    .command('show')
    .description('show one port: transport, counters, drops by reason, spec')
    .argument('<name>', 'port name')
    .option('--json', 'print the API answer as JSON');
  defineAction(show, done, async ([name], opts, cli) => {
    const p = await cli.client.getPort(name as string);
    print(opts['json'] ? formatJson({ port: p }) : formatPort(p));
    return 0;
  });

  const del = port
    .command('delete')
    .description('close and delete a port (ports from the config file stay)')
    .argument('<name>', 'port name');
  defineAction(del, done, async ([name], _opts, cli) => {
    await cli.client.deletePort(name as string);
    print(`port "${name}" deleted\n`);
    return 0;
  });
}
