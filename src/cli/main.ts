/**
 * The `vmlink` command: parses arguments (commander) and talks to the
 * daemon's control API (api/client.ts). See docs/cli.md.
 *
 * Exit status: 0 success; 1 the daemon refused the operation or is
 * unreachable; 2 usage error or invalid config.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { addCaptureCommand } from './capture.js';
import { addClusterCommands } from './cluster.js';
import { addCompletionCommand } from './completion.js';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, reportError, usageHint } from './context.js';
import { addDaemonCommand, addReloadCommand } from './daemon.js';
import { addExportCommands } from './export.js';
import { addFdbCommands, addQemuArgsCommand } from './fdb.js';
import { addGuestImageCommand } from './guest.js';
import { addCaCommands, addLinkCommands } from './link.js';
import { addManCommand } from './man.js';
import { addNetworkCommands, addStatusCommand } from './network.js';
import { addPortCommands } from './port.js';
import { addQosCommands } from './qos.js';
import { addServiceCommand } from './service.js';
import { addTopCommand } from './top.js';

function version(): string {
  try {
    const url = new URL('../../../package.json', import.meta.url);
    return (JSON.parse(readFileSync(url, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Applies the shared settings to a command and every subcommand below it. */
function configure(cmd: Command): void {
  cmd.exitOverride();
  cmd.showHelpAfterError(usageHint(cmd));
  for (const sub of cmd.commands) configure(sub);
}

/** Builds the program; `done` receives the exit status of the command that ran. */
export function buildProgram(done: (code: number) => void): Command {
  const program = new Command('vmlink')
    .description('vmlink: virtual networks and block devices for QEMU/KVM VMs; talks to the vmlink daemon on this host')
    .version(version(), '-V, --version')
    .option('--control <path>', 'control socket of the daemon (env VMLINK_CONTROL, default /run/vmlink/vmlink.sock)')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .addHelpText(
      'after',
      '\nExit status: 0 success, 1 the daemon refused or is unreachable, 2 usage error or invalid config.',
    );
  addDaemonCommand(program, done);
  addReloadCommand(program, done);
  addStatusCommand(program, done);
  addNetworkCommands(program, done);
  addPortCommands(program, done);
  addFdbCommands(program, done);
  addQemuArgsCommand(program, done);
  addExportCommands(program, done);
  addCaptureCommand(program, done);
  addQosCommands(program, done);
  addLinkCommands(program, done);
  addTopCommand(program, done);
  addCaCommands(program, done);
  addClusterCommands(program, done);
  addGuestImageCommand(program, done);
  addServiceCommand(program, done);
  addCompletionCommand(program, done);
  addManCommand(program, done, version());
  configure(program);
  return program;
}

/** Runs the CLI on `args` (without node and the script); resolves with the exit status. */
export async function main(args: readonly string[]): Promise<number> {
  let code = EXIT_OK;
  const program = buildProgram((c) => {
    code = c;
  });
  try {
    await program.parseAsync([...args], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (and the hint); help and --version are not errors.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    return reportError(err, program) || EXIT_FAILED;
  }
}

/**
 * Entry point of bin/vmlink.js: runs, then exits with the status. If some
 * handle keeps the loop alive after the command finished, exit anyway after a grace period.
 */
export async function run(argv: readonly string[] = process.argv): Promise<void> {
  const code = await main(argv.slice(2));
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
}
