/** `vmlink daemon`: runs the daemon in the foreground until SIGTERM/SIGINT. */
import type { Command } from 'commander';
import { choiceArg } from './args.js';
import { defineAction } from './context.js';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export function addDaemonCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('daemon')
    .description('run the vmlink daemon in the foreground (SIGTERM or SIGINT stops it gracefully)')
    .requiredOption('--config <file>', 'YAML configuration file')
    .option('--log-level <level>', `log level: ${LOG_LEVELS.join('|')} (default: log.level in the config, else info)`);
  defineAction(cmd, done, async (_args, opts, cli) => {
    const logLevel =
      opts['logLevel'] === undefined ? undefined : choiceArg('--log-level', String(opts['logLevel']), LOG_LEVELS);
    // Only an explicit --control overrides host.control of the config; VMLINK_CONTROL is for clients.
    const control = cli.command.optsWithGlobals()['control'] as string | undefined;
    // Loaded on demand: the client commands need none of the daemon's modules.
    const { runDaemon } = await import('../daemon/run.js');
    return runDaemon({
      configPath: String(opts['config']),
      ...(control === undefined ? {} : { control }),
      ...(logLevel === undefined ? {} : { logLevel }),
    });
  });
}
