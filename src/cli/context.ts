/**
 * What every command shares: where the daemon is, the API client, and how a
 * failure becomes a message and an exit status.
 *
 * Exit status: 0 success; 1 the daemon refused or is unreachable; 2 usage
 * error or invalid config.
 */
import type { Command } from 'commander';
import { ApiError, ControlClient, DEFAULT_CONTROL } from '../api/client.js';
import { ConfigError } from '../config/errors.js';
import { describeError, VmlinkError } from '../errors.js';
import { UsageError } from './args.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A command's options, as commander hands them over (validated by the command). */
export type Opts = Record<string, unknown>;

/** Runs one command; resolves with its exit status (undefined: 0). */
export type Action = (args: string[], opts: Opts, cli: Cli) => Promise<number | undefined>;

/** State of one CLI invocation. */
export class Cli {
  /** Exit status of the command that ran. */
  code = EXIT_OK;
  /** The command being run. */
  readonly command: Command;
  #client: ControlClient | undefined;

  constructor(command: Command) {
    this.command = command;
  }

  /** The control socket: `--control`, else `VMLINK_CONTROL`, else the default. */
  get controlPath(): string {
    const opt = this.command.optsWithGlobals()['control'];
    return (typeof opt === 'string' && opt) || process.env['VMLINK_CONTROL'] || DEFAULT_CONTROL;
  }

  /** The API client (created on first use, closed when the command ends). */
  get client(): ControlClient {
    this.#client ??= new ControlClient({ socketPath: this.controlPath });
    return this.#client;
  }

  async close(): Promise<void> {
    await this.#client?.close();
  }
}

/** `vmlink network create` for a command. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** The hint printed after a usage error. */
export function usageHint(cmd: Command): string {
  return `(see: ${commandPath(cmd)} --help)`;
}

/** Prints an error the way people should read it; returns the exit status. */
export function reportError(err: unknown, cmd: Command): number {
  const w = (s: string) => process.stderr.write(`${s}\n`);
  if (err instanceof UsageError) {
    w(`error: ${err.message}`);
    w(usageHint(cmd));
    return EXIT_USAGE;
  }
  if (err instanceof ConfigError) {
    w(`error: ${err.message}`);
    return EXIT_USAGE;
  }
  if (err instanceof ApiError) {
    if (err.problems.length === 0) {
      w(`error: ${err.message}`);
    } else {
      // The message may list the problems already; print them once, one per line with the field path.
      w(`error: ${err.message.split('\n')[0]}`);
      for (const p of err.problems) w(`  ${p.path || '(request)'}: ${p.message}`);
    }
    return EXIT_FAILED;
  }
  if (err instanceof VmlinkError) {
    w(`error: ${err.message}`);
    return EXIT_FAILED;
  }
  w(`error: ${describeError(err)}`);
  return EXIT_FAILED;
}

/** Installs `fn` as the command's action, with the client's clean-up and error reporting around it. */
export function defineAction(cmd: Command, onDone: (code: number) => void, fn: Action): Command {
  return cmd.action(async (...params: unknown[]) => {
    const command = params[params.length - 1] as Command;
    const cli = new Cli(command);
    let code: number;
    try {
      code = (await fn(command.args, command.opts(), cli)) ?? EXIT_OK;
    } catch (err) {
      code = reportError(err, command);
    } finally {
      await cli.close();
    }
    onDone(code);
  });
}
