/**
 * `vmlink daemon`: loads the config, starts the daemon, and runs until
 * SIGTERM or SIGINT, then stops gracefully. A second signal while stopping
 * exits at once (status 1). SIGHUP reloads the config file (daemon/reload.ts):
 * a bad file is logged and changes nothing.
 *
 * Exit codes: 0 after a graceful stop, 1 when the daemon could not start
 * (control socket in use, state file corrupt, ...), 2 for an invalid config.
 */
import { ConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { describeError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Daemon } from './daemon.js';

export interface RunDaemonOptions {
  /** YAML configuration file. */
  configPath: string;
  /** Control socket path; overrides `host.control`. */
  control?: string | undefined;
  /** Log level; overrides `log.level` (the env VMLINK_LOG_LEVEL overrides both). */
  logLevel?: string | undefined;
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/** Runs the daemon in this process until a signal; resolves with the exit code. */
export async function runDaemon(opts: RunDaemonOptions): Promise<number> {
  let config: Config;
  try {
    config = await loadConfig(opts.configPath);
  } catch (err) {
    process.stderr.write(`vmlink daemon: ${err instanceof ConfigError ? err.message : describeError(err)}\n`);
    return 2;
  }
  const logger = createLogger({ level: opts.logLevel ?? config.log?.level, base: { host: config.host.id } });
  const daemon = new Daemon({ config, configPath: opts.configPath, control: opts.control, logger });

  let signalled: (sig: string) => void = () => undefined;
  const stopRequested = new Promise<string>((resolve) => {
    signalled = resolve;
  });
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal: sig }, `${sig} again while stopping: exiting at once`);
      logger.flush();
      process.exit(1);
    }
    stopping = true;
    signalled(sig);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  // The reload logs what it did or why it was refused; the daemon stays up either way.
  let ready = false;
  const onHup = (): void => {
    if (!ready) {
      logger.warn('SIGHUP during start-up or stop: ignored');
      return;
    }
    logger.info('SIGHUP received: reloading the config');
    daemon.reload().catch(() => undefined);
  };
  process.on('SIGHUP', onHup);
  try {
    try {
      await daemon.start();
    } catch (err) {
      logger.fatal({ code: (err as { code?: unknown }).code }, `cannot start: ${describeError(err)}`);
      return 1;
    }
    ready = true;
    const sig = await stopRequested;
    ready = false;
    logger.info({ signal: sig }, `${sig} received: stopping`);
    await daemon.stop();
    return 0;
  } finally {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
    process.removeListener('SIGHUP', onHup);
    await flush(logger);
  }
}

function flush(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
