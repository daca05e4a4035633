/** `vmlink link add|list|delete`, `vmlink ca init` and `vmlink host cert` (docs/overlay.md). */
import type { Command } from 'commander';
import type { LinkView } from '../api/client.js';
import { formatRate } from '../config/qos-schema.js';
import { caInit, hostCert } from '../pki/ca.js';
import { addressArg, hostIdArg, intArg, UsageError } from './args.js';
import { defineAction } from './context.js';
import { listenerLine } from './network.js';
import { formatDuration, formatJson, formatTable, print } from './output.js';
import { linkQosArgs } from './qos.js';

/** `1.2 Gbit/s`, `340 kbit/s`. */
function rate(bps: number): string {
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} Gbit/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${bps} bit/s`;
}

/** `lab, dev` or `lab, dev, web +4997`: the table stays readable with thousands of networks. */
function networksCell(names: readonly string[]): string {
  if (names.length === 0) return '-';
  return names.length <= 3 ? names.join(',') : `${names.slice(0, 3).join(',')} +${names.length - 3}`;
}

/** Why a link is not up (its reason), or for an up link the last error it had, if any. */
function reasonCell(l: LinkView): string {
  if (l.state !== 'up') return l.reason;
  return l.last_error ? `up; last error: ${l.last_error}` : '-';
}

/** The link table. */
export function formatLinks(links: readonly LinkView[]): string {
  return formatTable(
    [
      { header: 'NAME' },
      { header: 'STATE' },
      { header: 'PEER' },
      { header: 'ADDRESS' },
      { header: 'NETWORKS' },
      { header: 'RTT', align: 'right' },
      { header: 'TX', align: 'right' },
      { header: 'CAPACITY', align: 'right' },
      { header: 'RX', align: 'right' },
      { header: 'DROPS', align: 'right' },
      { header: 'UP', align: 'right' },
      { header: 'REASON' },
    ],
    links.map((l) => [
      l.name,
      l.state,
      l.peer ?? '-',
      l.address ?? '-',
      networksCell(l.networks),
      l.rtt_ms === undefined ? '-' : `${l.rtt_ms.toFixed(2)}ms`,
      rate(l.tx_bps),
      l.qos ? `${formatRate(l.qos.capacity)}${l.qos.shared_with ? ` (${l.qos.shared_with})` : ''}` : '-',
      rate(l.rx_bps),
      String(Object.values(l.drops).reduce((a, b) => a + b, 0)),
      l.up_s === undefined ? '-' : formatDuration(l.up_s),
      reasonCell(l),
    ]),
  );
}

export function addLinkCommands(program: Command, done: (code: number) => void): void {
  const link = program.command('link').description('links to other vmlink daemons (the overlay)');

  const add = link
    .command('add')
    .description('dial another daemon and carry every network both have (kept across restarts)')
    .argument('<name>', 'link name (e.g. the peer host id)')
    .requiredOption(
      '--connect <address>',
      "the peer's overlay.listen address tcp:HOST:PORT, or a VXLAN VTEP udp:HOST:PORT",
    )
    .option('--capacity <rate>', "the link's capacity: everything it sends is shaped to it, e.g. 100mbit")
    .option('--latency-cap <rate>', 'cap of the latency class over the link (default a tenth of capacity)')
    .option('--burst <bytes>', 'shaper burst, e.g. 256K (default 50 ms at capacity, at least 64K)')
    .option('--json', 'print the link as JSON');
  defineAction(add, done, async ([name], opts, cli) => {
    const qos = linkQosArgs(opts);
    const l = await cli.client.addLink({
      name: name as string,
      connect: addressArg('--connect', String(opts['connect']), ['tcp', 'udp']),
      ...(qos ? { qos } : {}),
    });
    print(opts['json'] ? formatJson(l) : `link "${l.name}" added: ${l.state} (${l.reason})\n`);
    return 0;
  });

  const list = link
    .command('list')
    .description(
      'list links: state, peer, networks, RTT, throughput, drops, why a link is not up; and the link listener',
    )
    .option('--json', 'print the API answer as JSON');
  defineAction(list, done, async (_args, opts, cli) => {
    const { links, listener } = await cli.client.linkList();
    if (opts['json']) print(formatJson({ links, ...(listener ? { listener } : {}) }));
    else {
      // A listener that is down is said first: peers cannot dial this host until it is up.
      const head = listener && listener.state !== 'off' ? `link listener: ${listenerLine(listener)}\n` : '';
      print(head + (links.length || !head ? formatLinks(links) : ''));
    }
    return 0;
  });

  const qos = link
    .command('qos')
    .description(
      "change a link's QoS at once (admitted or refused; kept across restarts for links added with link add)",
    )
    .argument('<name>')
    .option('--capacity <rate>', 'shape everything the link sends to this rate, e.g. 100mbit')
    .option('--latency-cap <rate>', 'cap of the latency class over the link (default a tenth of capacity)')
    .option('--burst <bytes>', 'shaper burst, e.g. 256K')
    .option('--none', 'remove the capacity: the link is no longer shaped')
    .option('--json', 'print the link as JSON');
  defineAction(qos, done, async ([name], opts, cli) => {
    const q = linkQosArgs(opts);
    if ((q === undefined) === (opts['none'] !== true))
      throw new UsageError('give --capacity (with --latency-cap, --burst if you like) or --none');
    // Whether --none removes something, so the answer can say "nothing changed" when it does not.
    const wasShaped = q === undefined ? (await cli.client.listLinks()).find((x) => x.name === name)?.qos : undefined;
    const l = await cli.client.setLinkQos(name as string, q);
    let text: string;
    if (l.qos) {
      text = `link "${l.name}" shaped to ${formatRate(l.qos.capacity)} (latency cap ${formatRate(l.qos.latency_cap)})`;
    } else if (wasShaped) {
      text = `link "${l.name}" is no longer shaped (it was ${formatRate(wasShaped.capacity)})`;
    } else {
      text = `link "${l.name}" was not shaped; nothing changed`;
    }
    print(opts['json'] ? formatJson(l) : `${text}\n`);
    return 0;
  });

  const del = link
    .command('delete')
    .description('close and forget a link added with link add (or a direct link)')
    .argument('<name>');
  defineAction(del, done, async ([name], _opts, cli) => {
    await cli.client.deleteLink(name as string);
    print(`link "${name}" deleted\n`);
    return 0;
  });
}

export function addCaCommands(program: Command, done: (code: number) => void): void {
  const ca = program.command('ca').description("the fabric's certificate authority (for TLS links)");
  const init = ca
    .command('init')
    .description('create a CA: DIR/ca.pem and DIR/ca.key (keep ca.key off the hosts if you can)')
    .requiredOption('--dir <dir>', 'directory for the CA files (created, mode 0700)')
    .option('--name <text>', 'a name for the fabric, in the CA common name')
    .option('--days <n>', 'validity in days (default 3650)')
    .option('--force', 'replace a CA already in DIR');
  defineAction(init, done, async (_args, opts) => {
    const f = await caInit(String(opts['dir']), {
      name: opts['name'] as string | undefined,
      days: opts['days'] === undefined ? undefined : intArg('--days', String(opts['days']), 1, 36500),
      force: opts['force'] === true,
    });
    print(`CA created: ${f.cert} (key ${f.key})\n`);
    return 0;
  });

  const host = program.command('host').description('host identities for TLS links');
  const cert = host
    .command('cert')
    .description("issue a host's certificate from the fabric CA (common name = the host id)")
    .argument('<host-id>', 'the host id (host.id in its config)')
    .requiredOption('--ca-dir <dir>', 'the directory of vmlink ca init')
    .requiredOption('--out <dir>', 'where to write HOST.pem, HOST.key and ca.pem')
    .option('--days <n>', 'validity in days (default 825)')
    .option('--force', 'replace an existing certificate');
  defineAction(cert, done, async ([id], opts) => {
    hostIdArg(id as string);
    const f = await hostCert(String(opts['caDir']), id as string, String(opts['out']), {
      days: opts['days'] === undefined ? undefined : intArg('--days', String(opts['days']), 1, 36500),
      force: opts['force'] === true,
    });
    print(
      `certificate for host "${id}" written; in that host's config:\n` +
        `overlay:\n  tls: { ca: ${f.ca}, cert: ${f.cert}, key: ${f.key} }\n`,
    );
    return 0;
  });
}
