/** `vmlink daemon`: runs the daemon in the foreground until SIGTERM/SIGINT; `vmlink reload` reloads its config. */
import type { Command } from 'commander';
import type { ReloadView } from '../api/client.js';
import { choiceArg } from './args.js';
import { defineAction } from './context.js';
import { formatJson, print } from './output.js';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export function addDaemonCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('daemon')
    .description(
      'run the vmlink daemon in the foreground (SIGTERM or SIGINT stops it gracefully, SIGHUP reloads the config)',
    )
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

/** `vmlink reload`: the running daemon re-reads its config file (as SIGHUP does) and says what changed. */
export function addReloadCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('reload')
    .description("re-read the daemon's config file and apply its networks, ports, exports and links (as SIGHUP)")
    .option('--json', 'print the API answer as JSON');
  defineAction(cmd, done, async (_args, opts, cli) => {
    const r = await cli.client.reload();
    print(opts['json'] ? formatJson(r) : formatReload(r));
    return 0;
  });
}

/** `config /etc/vmlink.yaml reloaded: 2 created, 1 removed` plus one line per item. */
function formatReload(r: ReloadView): string {
  const lines = [`config ${r.config} reloaded: ${r.created.length} created, ${r.removed.length} removed`];
  for (const x of r.removed) lines.push(`  removed  ${x}`);
  for (const x of r.created) lines.push(`  created  ${x}`);
  for (const f of r.failed) lines.push(`  FAILED   ${f.item}: ${f.reason}`);
  return `${lines.join('\n')}\n`;
}
