/**
 * `vmlink daemon`: loads the config, starts the daemon, and runs until
 * SIGTERM or SIGINT, then stops gracefully. A second signal while stopping
 * exits at once (status 1). SIGHUP reloads the config file (daemon/reload.ts):
 * a bad file is logged and changes nothing.
 *
 * Exit codes: 0 after a graceful stop, 1 when the daemon could not start
 * (control socket in use, state file corrupt, ...), 2 for an invalid config.
 *
 * Under systemd (`Type=notify`, packaging/vmlink.service) it tells the
 * manager how it goes (daemon/sd-notify.ts): `READY=1` once start() is over,
 * that is when every configured port is open (a listening port listens, a
 * connecting one dials, the others are up; one that cannot open is named in
 * `STATUS=`) and the control socket and the HTTP endpoint serve;
 * `RELOADING=1` ... `READY=1` around a SIGHUP reload, applied or refused;
 * `STOPPING=1` at SIGTERM or SIGINT.
 */
import { ConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { describeError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Daemon } from './daemon.js';
import { sdNotifier } from './sd-notify.js';

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
  const notify = sdNotifier({ logger });
  notify.status(`starting: ${config.ports.length} configured ports`);

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
    notify.stopping(`stopping (${sig})`);
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
    notify.reloading(`reloading ${opts.configPath}`);
    daemon.reload().then(
      (r) =>
        notify.ready(
          `${readyStatus(daemon)}; reloaded: ${r.created.length} created, ${r.removed.length} removed, ${r.failed.length} failed`,
        ),
      // The reload logged why; the state is what it was.
      (err: unknown) =>
        notify.ready(`${readyStatus(daemon)}; reload refused, previous config kept: ${describeError(err)}`),
    );
  };
  process.on('SIGHUP', onHup);
  try {
    try {
      await daemon.start();
    } catch (err) {
      logger.fatal({ code: (err as { code?: unknown }).code }, `cannot start: ${describeError(err)}`);
      notify.status(`cannot start: ${describeError(err)}`);
      return 1;
    }
    ready = true;
    notify.ready(readyStatus(daemon));
    const sig = await stopRequested;
    ready = false;
    logger.info({ signal: sig }, `${sig} received: stopping`);
    await daemon.stop();
    return 0;
  } finally {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
    process.removeListener('SIGHUP', onHup);
    notify.close();
    await flush(logger);
  }
}

/** `ready; control /run/vmlink/vmlink.sock; 3 ports: 2 listening, 1 down (p3: cannot open: ...)`. */
function readyStatus(daemon: Daemon): string {
  const ports = daemon.portStates();
  const by = new Map<string, number>();
  for (const p of ports) by.set(p.state, (by.get(p.state) ?? 0) + 1);
  const counts = [...by].map(([state, n]) => `${n} ${state}`).join(', ');
  const down = ports.filter((p) => p.state === 'down').map((p) => `${p.name}: ${p.reason}`);
  return (
    `ready; control ${daemon.controlPath}; ${ports.length} port${ports.length === 1 ? '' : 's'}${counts ? `: ${counts}` : ''}` +
    (down.length ? ` (${down.slice(0, 3).join('; ')}${down.length > 3 ? '; ...' : ''})` : '')
  );
}

function flush(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
