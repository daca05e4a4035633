/**
 * The `vmlink` command against the real daemon, as the CLI tests use it: the
 * daemon is started with `node bin/vmlink.js daemon --config <temp yaml>` and
 * every command runs through `node bin/vmlink.js --control SOCK ...`. Frames
 * come from raw unix sockets speaking QEMU's stream framing (4-byte big-endian
 * length + frame).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync, watch } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
/** bin/vmlink.js of this checkout. */
export const BIN = join(ROOT, 'bin', 'vmlink.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/vmlink.js ARGS`; resolves with the exit status and output (never rejects on status). */
export function run(args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, NO_COLOR: '1', ...opts.env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a system tool; resolves with its exit status and output. */
export function runTool(cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Resolves when `path` exists (watching its directory, not polling), or rejects when the child exits first. */
async function waitForFile(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const dir = join(path, '..');
  const w = watch(dir);
  try {
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`the daemon exited (${code}) before ${path} appeared:\n${stderr()}`);
    });
    while (!existsSync(path)) await Promise.race([once(w, 'change'), exited]);
  } finally {
    w.close();
  }
}

export interface Daemon {
  child: ChildProcess;
  control: string;
  dir: string;
  stderr: () => string;
}

/** Starts `vmlink daemon` on a fresh temp dir with one network `lab` (vni 100) and one config port. */
export async function startDaemon(): Promise<Daemon> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-cli-'));
  const control = join(dir, 'ctl.sock');
  const config = join(dir, 'vmlink.yaml');
  await writeFile(
    config,
    [
      `host: { id: clitest, control: ${control}, state_dir: ${join(dir, 'state')} }`,
      'networks:',
      '  - { name: lab, vni: 100, mtu: 1500 }',
      'ports:',
      `  - { name: cfgport, network: lab, kind: stream, listen: "unix:${join(dir, 'cfg.sock')}" }`,
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [BIN, 'daemon', '--config', config, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  await waitForFile(control, child, () => err);
  return { child, control, dir, stderr: () => err };
}

export async function stopDaemon(d: Daemon): Promise<number | null> {
  if (d.child.exitCode === null && d.child.signalCode === null) {
    const exited = once(d.child, 'exit');
    d.child.kill('SIGTERM');
    await exited;
  }
  return d.child.exitCode;
}

/**
 * The daemon of a suite: started in before(), stopped and its temp dir removed
 * in after() of the suite this is called in. The object is filled in by before().
 */
export function suiteDaemon(): Daemon {
  const d = {} as Daemon;
  before(async () => {
    Object.assign(d, await startDaemon());
  });
  after(async () => {
    if (d.child) {
      await stopDaemon(d);
      await rm(d.dir, { recursive: true, force: true });
    }
  });
  return d;
}

/** Runs `vmlink --control <d's socket> ARGS`. */
export const cliOf =
  (d: Daemon) =>
  (...args: string[]): Promise<Run> =>
    run(['--control', d.control, ...args]);

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A broadcast IPv4-typed frame (60 bytes) from `src` (12 hex digits). */
export function broadcastFrame(src: string): Buffer {
  return Buffer.concat([hex(`ffffffffffff ${src} 0800`), Buffer.alloc(46, 0xab)]);
}

/** A raw stream-port peer: QEMU's `-netdev stream` framing over a unix socket. */
export class StreamPeer {
  readonly sock: Socket;
  readonly frames: Buffer[] = [];
  #buf = Buffer.alloc(0);

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('data', (chunk) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 4 && this.#buf.length >= 4 + this.#buf.readUInt32BE(0)) {
        const len = this.#buf.readUInt32BE(0);
        this.frames.push(this.#buf.subarray(4, 4 + len));
        this.#buf = this.#buf.subarray(4 + len);
        sock.emit('frame');
      }
    });
  }

  static async connect(path: string): Promise<StreamPeer> {
    const sock = connect(path);
    await once(sock, 'connect');
    return new StreamPeer(sock);
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    this.sock.write(Buffer.concat([len, frame]));
  }

  /** Sends `frame` every few ms until `to` receives a frame (the ports may still be attaching). */
  async sendUntilReceived(frame: Buffer, to: StreamPeer): Promise<void> {
    const got = once(to.sock, 'frame');
    this.send(frame);
    const timer = setInterval(() => this.send(frame), 20);
    try {
      await got;
    } finally {
      clearInterval(timer);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** `n` distinct UDP port numbers free right now (bound to port 0 together, then released). */
export async function freeUdpPorts(n: number): Promise<number[]> {
  const socks = Array.from({ length: n }, () => createSocket('udp4'));
  for (const s of socks) s.bind(0, '127.0.0.1');
  await Promise.all(socks.map((s) => once(s, 'listening')));
  const ports = socks.map((s) => s.address().port);
  for (const s of socks) s.close();
  return ports;
}

/** Runs `tshark -r FILE -T fields -e eth.src`; resolves with the source MACs, one per frame. */
export function tsharkSources(file: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.src'], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tshark -r ${file} failed: ${stderr || err.message}`));
      else resolve(stdout.split('\n').filter((l) => l.trim() !== ''));
    });
  });
}
