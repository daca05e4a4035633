/**
 * `vmlink man`: the manual page vmlink(1) in roff (man(7) macros), made from
 * the command definitions (command-tree.ts), so it lists exactly the commands
 * and options `--help` does.
 *
 *   vmlink man | man -l -
 *   vmlink man > /usr/local/share/man/man1/vmlink.1
 */
import type { Command } from 'commander';
import { allCommands, type CommandNode, commandTree, rootOf } from './command-tree.js';
import { defineAction } from './context.js';
import { print } from './output.js';

/** Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request. */
function esc(s: string): string {
  return s
    .replaceAll('\\', '\\e')
    .replaceAll('-', '\\-')
    .replace(/^([.'])/gm, '\\&$1');
}

/** The page for the program `root`; `version` goes in the footer. */
export function manPage(root: CommandNode, version: string): string {
  const out: string[] = [
    `.TH VMLINK 1 "" "vmlink ${esc(version)}" "User Commands"`,
    '.SH NAME',
    `vmlink \\- ${esc(root.description.replace(/^vmlink: /, ''))}`,
    '.SH SYNOPSIS',
    '.B vmlink',
    '[\\fB\\-\\-control\\fR \\fIPATH\\fR] \\fICOMMAND\\fR ...',
    '.SH DESCRIPTION',
    'vmlink runs the vmlink daemon (\\fBvmlink daemon\\fR) and talks to a running daemon over its',
    'control socket. The commands and their options follow; \\fBvmlink\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR',
    'prints the same for one command.',
    '.SH GLOBAL OPTIONS',
  ];
  for (const o of root.options) out.push('.TP', `.B ${esc(o.flags)}`, esc(o.description));
  out.push('.SH COMMANDS');
  for (const n of allCommands(root).slice(1)) {
    const leaf = n.subcommands.length === 0;
    out.push('.SS', `.B "vmlink ${esc(n.path.join(' '))}" ${leaf ? `"${esc(n.usage)}"` : ''}`.trimEnd());
    out.push(esc(n.description));
    if (!leaf) {
      out.push(
        '.PP',
        `Subcommands: ${n.subcommands.map((s) => `\\fB${esc(s.path.at(-1) as string)}\\fR`).join(', ')}.`,
      );
      continue;
    }
    for (const o of n.options) {
      if (o.long === '--help') continue;
      out.push('.TP', `.B ${esc(o.flags)}`, esc(o.description));
    }
  }
  out.push(
    '.SH ENVIRONMENT',
    '.TP',
    '.B VMLINK_CONTROL',
    'The control socket of the daemon when \\fB\\-\\-control\\fR is not given (default /run/vmlink/vmlink.sock).',
    '.TP',
    '.B VMLINK_LOG_LEVEL',
    "The daemon's log level; overrides \\fB\\-\\-log\\-level\\fR and log.level of the config.",
    '.TP',
    '.B NO_COLOR',
    'Set: no colour in tables.',
    '.SH EXIT STATUS',
    '.TP',
    '.B 0',
    'Success.',
    '.TP',
    '.B 1',
    'The daemon refused the operation or cannot be reached.',
    '.TP',
    '.B 2',
    'Usage error (a bad or missing argument) or invalid config.',
    '.SH FILES',
    '.TP',
    '.I /etc/vmlink/vmlink.yaml',
    'The configuration file (\\fBvmlink daemon \\-\\-config\\fR).',
    '.TP',
    '.I /run/vmlink/vmlink.sock',
    'The default control socket.',
    '.SH SEE ALSO',
    'The documentation in the vmlink source: README.md, docs/cli.md, docs/daemon.md, docs/troubleshooting.md.',
  );
  return `${out.join('\n')}\n`;
}

export function addManCommand(program: Command, done: (code: number) => void, version: string): void {
  const cmd = program.command('man').description('print the manual page vmlink(1) in roff: vmlink man | man -l -');
  defineAction(cmd, done, async (_args, _opts, cli) => {
    print(manPage(commandTree(rootOf(cli.command)), version));
    return 0;
  });
}
