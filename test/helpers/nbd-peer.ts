/**
 * Helpers for NBD tests with real peers: an in-process server on a temp unix
 * socket, running libnbd/qemu tools, and the standalone server as a child
 * process.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { silentLogger } from '../../src/log.js';
import { ExportRegistry, type ExportSpec } from '../../src/storage/exports.js';
import { createNbdServer, type NbdServer, type NbdServerOptions } from '../../src/storage/nbd/server.js';
import type { Address } from '../../src/util/address.js';

export interface RunningServer {
  server: NbdServer;
  exports: ExportRegistry;
  socket: string;
  /** `nbd+unix:///NAME?socket=...` */
  uri(name: string): string;
  address: Address;
  close(): Promise<void>;
}

/** Starts an in-process server on `dir/name.sock` with the given exports. */
export async function startServer(
  dir: string,
  name: string,
  specs: ExportSpec[],
  extra: Partial<NbdServerOptions> = {},
): Promise<RunningServer> {
  const exports = new ExportRegistry();
  for (const s of specs) exports.add(s);
  const socket = join(dir, `${name}.sock`);
  const server = createNbdServer({
    logger: silentLogger(),
    exports,
    listen: [{ type: 'unix', path: socket }],
    ...extra,
  });
  await server.open();
  return {
    server,
    exports,
    socket,
    address: { type: 'unix', path: socket },
    uri: (n) => `nbd+unix:///${n}?socket=${socket}`,
    close: async () => {
      await server.close();
      await exports.close();
    },
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool; resolves with its exit code and output (never rejects for a non-zero exit). */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number') return reject(err);
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Runs a tool and fails with its stderr unless it exits 0; returns stdout. */
export async function runOk(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** SHA-256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The standalone server (test/helpers/nbd-server-main.ts) as a child process. */
export interface ChildServer {
  proc: ChildProcess;
  addresses: Address[];
  stderr: () => string;
}

const MAIN = new URL('./nbd-server-main.js', import.meta.url).pathname;

/** Spawns the standalone server with a JSON config and waits for its READY line. */
export function spawnServer(config: unknown): Promise<ChildServer> {
  const proc = spawn(process.execPath, [MAIN, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => {
      if (line.startsWith('READY ')) resolve({ proc, addresses: JSON.parse(line.slice(6)), stderr: () => err });
    });
    proc.once('exit', (code) => reject(new Error(`NBD server exited ${code} before READY: ${err}`)));
  });
}

/** Resolves when a child has exited. */
export function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => proc.once('exit', () => r()));
}
