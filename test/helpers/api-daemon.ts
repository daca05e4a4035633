/**
 * The daemon in this process for the control API tests: started from a config
 * object with a logger whose lines a test can wait for, the real client on its
 * control socket, and raw stream-port peers (QEMU's framing: 4-byte big-endian
 * length, then the frame).
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after } from 'node:test';
import { pino } from 'pino';
import { ApiError, ControlClient } from '../../src/api/client.js';
import { validateConfig } from '../../src/config/load.js';
import { Daemon } from '../../src/daemon/daemon.js';
import type { Logger } from '../../src/log.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
export const MAC_A = '02:00:00:00:00:0a';
export const MAC_B = '02:00:00:00:00:0b';
/** Broadcast from A (ARP EtherType, 28 bytes of payload). */
export const BCAST_FROM_A = hex(`ffffffffffff 02000000000a 0806 ${'00'.repeat(28)}`);
/** Unicast from B to A. */
export const B_TO_A = hex(`02000000000a 02000000000b 0800 4500001c00000000401100000a0000020a000001 ${'ab'.repeat(8)}`);
/** Unicast from A to B. */
export const A_TO_B = hex(`02000000000b 02000000000a 0800 4500001c00000000401100000a0000010a000002 ${'cd'.repeat(8)}`);

/** A logger whose lines the test can wait for (instead of sleeping). */
export function recordingLogger(): {
  logger: Logger;
  lines: Record<string, unknown>[];
  waitFor: (p: (l: Record<string, unknown>) => boolean, since?: number) => Promise<Record<string, unknown>>;
} {
  const lines: Record<string, unknown>[] = [];
  const ev = new EventEmitter();
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const text of chunk.toString().split('\n')) {
        if (!text) continue;
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        ev.emit('line', line);
      }
      cb();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  /** Resolves with the first line matching `p` from index `since` on (default: every line so far). */
  const waitFor = (p: (l: Record<string, unknown>) => boolean, since = 0): Promise<Record<string, unknown>> => {
    const seen = lines.slice(since).find(p);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const on = (l: Record<string, unknown>): void => {
        if (!p(l)) return;
        ev.off('line', on);
        resolve(l);
      };
      ev.on('line', on);
    });
  };
  return { logger, lines, waitFor };
}

/** Reads length-prefixed frames from a socket. */
class FrameReader {
  #buf = Buffer.alloc(0);
  #waiters: ((f: Buffer) => void)[] = [];
  #frames: Buffer[] = [];
  constructor(sock: Socket) {
    sock.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 4 && this.#buf.length >= 4 + this.#buf.readUInt32BE(0)) {
        const len = this.#buf.readUInt32BE(0);
        const f = this.#buf.subarray(4, 4 + len);
        this.#buf = this.#buf.subarray(4 + len);
        const w = this.#waiters.shift();
        if (w) w(f);
        else this.#frames.push(f);
      }
    });
  }
  next(): Promise<Buffer> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** `f` with its 4-byte big-endian length in front. */
export const framed = (f: Buffer): Buffer => {
  const b = Buffer.alloc(4 + f.length);
  b.writeUInt32BE(f.length, 0);
  f.copy(b, 4);
  return b;
};

export interface Running {
  daemon: Daemon;
  client: ControlClient;
  log: ReturnType<typeof recordingLogger>;
  dir: string;
  control: string;
}

/** A config with host h1 whose control socket and state dir live in `dir`, and `extra` sections. */
export function hostConfig(dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { host: { id: 'h1', control: join(dir, 'run', 'vmlink.sock'), state_dir: join(dir, 'state') }, ...extra };
}

/** Starts a daemon in this process on the config `doc`, with a recording logger and a client. */
export async function startDaemon(doc: Record<string, unknown>, dir: string): Promise<Running> {
  const config = validateConfig(doc);
  const log = recordingLogger();
  const daemon = new Daemon({ config, configPath: join(dir, 'vmlink.yaml'), logger: log.logger });
  await daemon.start();
  const control = config.host.control;
  return { daemon, client: new ControlClient({ socketPath: control }), log, dir, control };
}

export async function stopDaemon(r: Running): Promise<void> {
  await r.client.close();
  await r.daemon.stop();
}

/** Expects `p` to fail with an ApiError of this status and code. */
export async function refused(p: Promise<unknown>, status: number, code: string): Promise<ApiError> {
  let got: unknown;
  await assert.rejects(p, (err) => {
    got = err;
    return err instanceof ApiError && err.status === status && err.code === code;
  });
  return got as ApiError;
}

/** A raw HTTP request on the control socket: status and body text. */
export function raw(
  control: string,
  method: string,
  path: string,
  body?: string,
  type = 'application/json',
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: control, method, path, headers: body === undefined ? {} : { 'content-type': type } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A temp dir for this test file, removed in after(); returns a function that
 * names a fresh directory inside it (not yet created) for each daemon.
 */
export async function tempDirs(prefix: string): Promise<() => string> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  after(() => rm(root, { recursive: true, force: true }));
  let seq = 0;
  return () => join(root, `d${seq++}`);
}

/** Two listening stream ports, a and b, on network lan. */
export function twoPortConfig(dir: string): Record<string, unknown> {
  return hostConfig(dir, {
    networks: [{ name: 'lan', vni: 10 }],
    ports: [
      { name: 'a', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'a.sock')}` },
      { name: 'b', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'b.sock')}` },
    ],
  });
}

/** Connects a raw peer to a listening stream port and waits until the daemon reports it up. */
export async function attach(r: Running, port: string): Promise<{ sock: Socket; reader: FrameReader }> {
  const mark = r.log.lines.length;
  const sock = connect(join(r.dir, `${port}.sock`));
  const reader = new FrameReader(sock);
  await once(sock, 'connect');
  await r.log.waitFor((l) => l['port'] === port && l['state'] === 'up', mark);
  return { sock, reader };
}
