/**
 * A real vmlink daemon for end-to-end tests: runs `node bin/vmlink.js daemon`
 * with a config written into a fresh temp dir (control socket, state dir and
 * port sockets all live there), and drives it through the real CLI.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { REPO_ROOT } from './vm.js';

/** The `vmlink` command of this checkout. */
export const VMLINK_BIN = join(REPO_ROOT, 'bin', 'vmlink.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/vmlink.js ...args` with the given control socket; never rejects for a non-zero exit. */
export function runCli(args: string[], opts: { control?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const full = opts.control === undefined ? args : ['--control', opts.control, ...args];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [VMLINK_BIN, ...full],
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export interface DaemonOptions {
  /** Host id; default `e2e`. */
  hostId?: string;
  /** `networks:` entries of the config. */
  networks?: Record<string, unknown>[];
  /**
   * `ports:` entries of the config, or a function that builds them from
   * the temp dir (so socket paths can live in it).
   */
  ports?: Record<string, unknown>[] | ((dir: string) => Record<string, unknown>[]);
  /** Command prefix the daemon runs under, e.g. `['ip', 'netns', 'exec', NS]` (it must exec the daemon). */
  wrap?: string[];
  /** More top-level config sections (e.g. `storage`, `exports`), built from the temp dir. */
  extra?: (dir: string) => Record<string, unknown>;
  /** Log level; default env VMLINK_LOG_LEVEL, else `info`. */
  logLevel?: string;
  /** Copy the daemon's log lines to stderr as they come; default env VMLINK_DAEMON_LOG=1. */
  echoLog?: boolean;
}

/** A daemon process owned by a test; restartable with the same config and state. */
export class TestDaemon {
  /** Temp dir holding config, control socket, state dir and port sockets. */
  readonly dir: string;
  /** Control socket path. */
  readonly control: string;
  /** Written config file. */
  readonly configPath: string;
  /** host.state_dir. */
  readonly stateDir: string;
  readonly #echo: boolean;
  readonly #logLevel: string;
  readonly #wrap: string[];
  #proc: ChildProcess | undefined;
  #exit: Promise<number | null> = Promise.resolve(null);
  #log = '';

  constructor(dir: string, echo: boolean, logLevel: string, wrap: string[] = []) {
    this.#wrap = wrap;
    this.dir = dir;
    this.control = join(dir, 'vmlink.sock');
    this.configPath = join(dir, 'vmlink.yaml');
    this.stateDir = join(dir, 'state');
    this.#echo = echo;
    this.#logLevel = logLevel;
  }

  /** A path inside the temp dir (for port sockets). */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** Everything the daemon processes wrote to stdout/stderr so far (all restarts). */
  get log(): string {
    return this.#log;
  }

  /** Pid of the running daemon process. */
  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  /** Starts the daemon process and resolves once its control API answers. */
  async start(timeoutMs = 30_000): Promise<void> {
    const argv = [process.execPath, VMLINK_BIN, 'daemon', '--config', this.configPath, '--log-level', this.#logLevel];
    const [cmd, ...args] = [...this.#wrap, ...argv] as [string, ...string[]];
    const proc = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, VMLINK_LOG_LEVEL: this.#logLevel },
    });
    this.#proc = proc;
    const onData = (chunk: Buffer) => {
      const s = chunk.toString('utf8');
      this.#log += s;
      if (this.#echo) process.stderr.write(s.replace(/^/gm, '[vmlink] '));
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    let exited = false;
    this.#exit = new Promise((resolve) => {
      proc.once('exit', (code) => {
        exited = true;
        resolve(code);
      });
      proc.once('error', (err) => {
        this.#log += `spawn failed: ${err.message}\n`;
        exited = true;
        resolve(null);
      });
    });
    const deadline = Date.now() + timeoutMs;
    // The control socket appears when the daemon is ready; poll its status endpoint (cheap, local).
    for (;;) {
      if (exited) throw new Error(`vmlink daemon exited during start-up:\n${this.#log}`);
      if (await statusAnswers(this.control)) return;
      if (Date.now() > deadline) throw new Error(`vmlink daemon did not answer within ${timeoutMs} ms:\n${this.#log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends `signal` and waits until the process has exited; resolves with its exit code. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exitCode ?? null;
    proc.kill(signal);
    return this.#exit;
  }

  /** Stops gracefully (SIGTERM; SIGKILL after 10 s). */
  async stop(): Promise<number | null> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exitCode ?? null;
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    const code = await this.kill('SIGTERM');
    clearTimeout(timer);
    return code;
  }

  /** Stops the daemon and removes the temp dir. */
  async cleanup(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Runs the CLI against this daemon. */
  cli(args: string[], timeoutMs?: number): Promise<CliResult> {
    return runCli(args, { control: this.control, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
  }

  /** Runs the CLI with `--json` appended; rejects (with stderr) on a non-zero exit. */
  async json<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json']);
    if (r.code !== 0) throw new Error(`vmlink ${args.join(' ')} --json exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** `vmlink qemu-args PORT --json`. */
  qemuArgs(port: string): Promise<{ args: string[]; mac: string; command: string }> {
    return this.json(['qemu-args', port]);
  }
}

/** True when GET /v1/status on `socketPath` answers 200. */
function statusAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/v1/status', method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Writes a config into a new temp dir and starts a daemon on it. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<TestDaemon> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-e2e-'));
  const logLevel = opts.logLevel ?? process.env['VMLINK_LOG_LEVEL'] ?? 'info';
  const d = new TestDaemon(dir, opts.echoLog ?? process.env['VMLINK_DAEMON_LOG'] === '1', logLevel, opts.wrap);
  await mkdir(d.stateDir, { recursive: true });
  const ports = typeof opts.ports === 'function' ? opts.ports(dir) : (opts.ports ?? []);
  const config = {
    host: { id: opts.hostId ?? 'e2e', control: d.control, state_dir: d.stateDir },
    networks: opts.networks ?? [],
    ports,
    ...opts.extra?.(dir),
  };
  await writeFile(d.configPath, stringify(config));
  try {
    await d.start();
  } catch (err) {
    await d.cleanup();
    throw err;
  }
  return d;
}
