/** `vmlink fdb show` and `vmlink qemu-args`. */
import type { Command } from 'commander';
import type { FdbEntryView } from '../api/client.js';
import { defineAction } from './context.js';
import { formatJson, formatTable, print, printLibvirt } from './output.js';

/** The forwarding database as a table, sorted by network then MAC. */
export function formatFdb(entries: readonly FdbEntryView[]): string {
  // In a fabric, where each MAC lives by the control plane: its host and mobility sequence number.
  const fabric = entries.some((e) => e.host !== undefined);
  const rows = [...entries]
    .sort((a, b) => a.network.localeCompare(b.network) || a.mac.localeCompare(b.mac))
    .map((e) => [
      e.network,
      e.mac,
      e.port,
      `${e.age}s`,
      ...(fabric ? [e.host === undefined ? '-' : `${e.host} #${e.seq}`] : []),
    ]);
  return formatTable(
    [
      { header: 'NETWORK' },
      { header: 'MAC' },
      { header: 'PORT' },
      { header: 'AGE', align: 'right' },
      ...(fabric ? [{ header: 'HOST' }] : []),
    ],
    rows,
  );
}

export function addFdbCommands(program: Command, done: (code: number) => void): void {
  const fdb = program.command('fdb').description('the forwarding database (learned MACs)');
  const show = fdb
    .command('show')
    .description('show learned MACs: network, MAC, port, seconds since last seen')
    .option('--network <net>', 'only this network')
    .option('--json', 'print the API answer as JSON');
  defineAction(show, done, async (_args, opts, cli) => {
    const entries = await cli.client.fdb(opts['network'] as string | undefined);
    print(opts['json'] ? formatJson({ entries }) : formatFdb(entries));
    return 0;
  });
}

export function addQemuArgsCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('qemu-args')
    .description('print the QEMU arguments that attach a VM to a port (one shell-quoted line)')
    .argument('<port>', 'port name')
    .option('--id <netdev-id>', 'the -netdev id (default: the port name); with --libvirt the device alias ua-ID')
    .option('--libvirt', "print libvirt's <interface> element instead (domain XML)")
    .option('--json', 'print {args, mac, command} (with --libvirt: {xml, domain, notes}) as JSON');
  defineAction(cmd, done, async ([port], opts, cli) => {
    if (opts['libvirt']) {
      const x = await cli.client.portLibvirtXml(port as string, opts['id'] as string | undefined);
      printLibvirt(x, opts['json'] === true);
      return 0;
    }
    const q = await cli.client.qemuArgs(port as string, opts['id'] as string | undefined);
    print(opts['json'] ? formatJson(q) : `${q.command}\n`);
    return 0;
  });
}
