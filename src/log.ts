/**
 * Logging: JSON lines (pino) by default, pretty-printed when stderr is a TTY.
 * Components take a Logger; tests hand in {@link silentLogger}.
 */
import { pino } from 'pino';

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** pino level name; default `info` (env `VMLINK_LOG_LEVEL` overrides). */
  level?: string;
  /** Pretty output for people; default: when stderr is a TTY. */
  pretty?: boolean;
  /** Extra fields on every line (e.g. `host`). */
  base?: Record<string, unknown>;
}

/** The daemon's root logger, writing to stderr. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = process.env['VMLINK_LOG_LEVEL'] ?? opts.level ?? 'info';
  const pretty = opts.pretty ?? process.stderr.isTTY === true;
  const base = { ...(opts.base ?? {}) };
  if (pretty) {
    return pino({
      level,
      base,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything (for tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
