/**
 * The service manager's notification protocol (sd_notify(3)): newline-separated
 * `KEY=VALUE` assignments in one datagram to the AF_UNIX socket named by
 * `NOTIFY_SOCKET`, a path or, starting with `@`, an abstract name. Sent over
 * the native addon's unix datagram socket (Node has no AF_UNIX datagrams);
 * no libsystemd.
 *
 * With `NOTIFY_SOCKET` unset (not started by systemd with `Type=notify`) every
 * call does nothing. A send that fails is logged once and never throws: the
 * daemon runs on without its manager hearing from it. The variables are
 * removed from the environment once read, so no child process inherits them
 * (sd_notify's `unset_environment`).
 *
 * `WATCHDOG_USEC` (set by `WatchdogSec=`): `WATCHDOG=1` every half of it, from
 * the event loop, so a loop stuck for longer lets systemd restart the daemon.
 */
import { closeSync } from 'node:fs';
import { endianness } from 'node:os';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { native } from '../native/index.js';

/** AF_UNIX (Linux). */
const AF_UNIX = 1;
/** sizeof(sockaddr_un.sun_path). */
const SUN_PATH_MAX = 108;

/** What the daemon tells systemd; every method is a no-op when no manager listens. */
export interface SdNotifier {
  /** True when `NOTIFY_SOCKET` named a socket this process may notify. */
  readonly enabled: boolean;
  /** Interval of the `WATCHDOG=1` keep-alives in ms (half of `WATCHDOG_USEC`); undefined without a watchdog. */
  readonly watchdogMs: number | undefined;
  /** `READY=1` with a `STATUS=` line: start-up, or a reload, is over. */
  ready(status: string): void;
  /** `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC, µs) and a `STATUS=` line: a reload begins. */
  reloading(status: string): void;
  /** A `STATUS=` line alone (shown by `systemctl status`). */
  status(status: string): void;
  /** `STOPPING=1` with a `STATUS=` line: the graceful stop begins. */
  stopping(status: string): void;
  /** Stops the watchdog keep-alives and closes the socket. Idempotent. */
  close(): void;
}

export interface SdNotifyOptions {
  logger: Logger;
  /** Environment to read (and remove the variables from); default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * The destination of a `NOTIFY_SOCKET` value as the addon's sendBatch takes
 * it: a path string, or for an abstract name (`@name`) a raw sockaddr_un
 * Buffer (family, NUL, name; no trailing NUL: the length delimits it).
 * Throws a message for any other form (e.g. systemd 254's `vsock:`).
 */
export function notifyAddress(value: string): string | Buffer {
  if (value.startsWith('/')) {
    if (Buffer.byteLength(value) >= SUN_PATH_MAX) throw new Error(`the path is longer than ${SUN_PATH_MAX - 1} bytes`);
    return value;
  }
  if (value.startsWith('@') && value.length > 1) {
    const name = Buffer.from(value.slice(1));
    if (name.length + 1 > SUN_PATH_MAX) throw new Error(`the abstract name is longer than ${SUN_PATH_MAX - 1} bytes`);
    const sa = Buffer.alloc(2 + 1 + name.length);
    if (endianness() === 'LE') sa.writeUInt16LE(AF_UNIX, 0);
    else sa.writeUInt16BE(AF_UNIX, 0);
    name.copy(sa, 3);
    return sa;
  }
  throw new Error('expected an absolute socket path or @abstract-name');
}

/** The datagram for `fields` (KEY → value; a newline in a value would start another field, so it becomes a space). */
export function notifyMessage(fields: Readonly<Record<string, string>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
    .join('\n');
}

/** The notifier for this process, from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. */
export function sdNotifier(opts: SdNotifyOptions): SdNotifier {
  const env = opts.env ?? process.env;
  const log = opts.logger;
  const socket = env['NOTIFY_SOCKET'];
  const wdUsec = env['WATCHDOG_USEC'];
  const wdPid = env['WATCHDOG_PID'];
  delete env['NOTIFY_SOCKET'];
  delete env['WATCHDOG_USEC'];
  delete env['WATCHDOG_PID'];
  if (socket === undefined || socket === '') return new Notifier(undefined, undefined, log);
  let dest: string | Buffer;
  try {
    dest = notifyAddress(socket);
  } catch (err) {
    log.warn(
      { notify_socket: socket },
      `NOTIFY_SOCKET ${socket} is not usable (${describeError(err)}): systemd will not hear from the daemon`,
    );
    return new Notifier(undefined, undefined, log);
  }
  // The watchdog is this process's only when WATCHDOG_PID is unset or names it.
  const usec = Number(wdUsec);
  const mine = wdPid === undefined || wdPid === '' || Number(wdPid) === process.pid;
  const watchdogMs = mine && Number.isFinite(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2000)) : undefined;
  return new Notifier({ dest, where: socket }, watchdogMs, log);
}

class Notifier implements SdNotifier {
  readonly enabled: boolean;
  readonly watchdogMs: number | undefined;
  readonly #to: { dest: string | Buffer; where: string } | undefined;
  readonly #log: Logger;
  #fd = -1;
  #timer: NodeJS.Timeout | undefined;
  #failed = false;
  #closed = false;

  constructor(to: { dest: string | Buffer; where: string } | undefined, watchdogMs: number | undefined, log: Logger) {
    this.#to = to;
    this.enabled = to !== undefined;
    this.watchdogMs = to === undefined ? undefined : watchdogMs;
    this.#log = log;
    if (this.watchdogMs !== undefined) {
      this.#send({ WATCHDOG: '1' });
      // unref: the keep-alive never holds the process up by itself.
      this.#timer = setInterval(() => this.#send({ WATCHDOG: '1' }), this.watchdogMs).unref();
    }
  }

  ready(status: string): void {
    this.#send({ READY: '1', STATUS: status });
  }

  reloading(status: string): void {
    // process.hrtime is libuv's uv_hrtime: CLOCK_MONOTONIC, the clock systemd compares MONOTONIC_USEC with.
    this.#send({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n), STATUS: status });
  }

  status(status: string): void {
    this.#send({ STATUS: status });
  }

  stopping(status: string): void {
    this.#send({ STOPPING: '1', STATUS: status });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  #send(fields: Record<string, string>): void {
    const to = this.#to;
    if (to === undefined || this.#closed) return;
    try {
      const n = native();
      if (this.#fd < 0) this.#fd = n.socket(n.SOCK_DGRAM);
      const buf = Buffer.from(notifyMessage(fields));
      const sent = n.sendBatch(this.#fd, buf, Uint32Array.of(0), Uint32Array.of(buf.length), 0, 1, to.dest);
      // 0: the manager's socket buffer is full (EAGAIN); this message is lost, the next state change says it again.
      if (sent === 0) this.#fail(to.where, new Error('the socket buffer is full (EAGAIN)'));
    } catch (err) {
      this.#fail(to.where, err);
    }
  }

  /** Logs the first failure only: a manager that went away would otherwise be reported at every keep-alive. */
  #fail(where: string, err: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#log.warn({ notify_socket: where }, `cannot notify systemd at ${where}: ${describeError(err)}`);
  }
}
