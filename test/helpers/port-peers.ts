/**
 * Stand-ins for QEMU on the far side of a vmlink port, over real sockets:
 * a stream peer (QEMU `-netdev stream`/`socket`: 4-byte length framing) and a
 * datagram peer (QEMU `-netdev dgram`), plus one harness per port kind and
 * mode for the shared compliance suite.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { closeSync } from 'node:fs';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { native, type Poller } from '../../src/native/index.js';
import type { Port } from '../../src/net/port.js';
import { Deframer } from '../../src/net/ports/deframer.js';
import { type Address, parseAddress } from '../../src/util/address.js';

/** Something that exchanges frames with a port, as QEMU would. */
export interface Peer {
  /** Sends one frame (framed as the transport wants). */
  send(frame: Buffer): void;
  /** Sends bytes as they are (garbage, bad prefixes, oversized datagrams). */
  raw(bytes: Buffer): void;
  /** The next frame received (copied). */
  next(): Promise<Buffer>;
  /** Frames received and not yet taken by next(). */
  readonly backlog: number;
  /** Stops reading from the socket (the port sees backpressure). */
  pause(): void;
  resume(): void;
  /** Resolves when the connection is closed (by either side). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

class FrameQueue {
  readonly #frames: Buffer[] = [];
  readonly #waiters: ((b: Buffer) => void)[] = [];
  push(b: Buffer): void {
    const w = this.#waiters.shift();
    if (w) w(b);
    else this.#frames.push(b);
  }
  next(): Promise<Buffer> {
    const b = this.#frames.shift();
    if (b) return Promise.resolve(b);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  get length(): number {
    return this.#frames.length;
  }
}

export class StreamPeer implements Peer {
  readonly #q = new FrameQueue();
  readonly closed: Promise<void>;
  constructor(readonly sock: Socket) {
    const d = new Deframer((b, o, l) => this.#q.push(Buffer.from(b.subarray(o, o + l))), 1 << 20);
    sock.on('data', (c: Buffer) => d.push(c));
    sock.on('error', () => {});
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
  }
  send(frame: Buffer): void {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(frame.length);
    this.sock.write(Buffer.concat([h, frame]));
  }
  raw(bytes: Buffer): void {
    this.sock.write(bytes);
  }
  next(): Promise<Buffer> {
    return this.#q.next();
  }
  get backlog(): number {
    return this.#q.length;
  }
  pause(): void {
    this.sock.pause();
  }
  resume(): void {
    this.sock.resume();
  }
  async close(): Promise<void> {
    this.sock.end();
    this.sock.destroySoon();
    await this.closed;
  }
}

export class DgramPeer implements Peer {
  readonly #q = new FrameQueue();
  readonly closed: Promise<void>;
  #paused = false;
  readonly #held: Buffer[] = [];
  constructor(
    readonly sock: UdpSocket,
    readonly to: { host: string; port: number },
  ) {
    sock.on('message', (m: Buffer) => {
      if (this.#paused) this.#held.push(m);
      else this.#q.push(m);
    });
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
  }
  send(frame: Buffer): void {
    this.sock.send(frame, this.to.port, this.to.host);
  }
  raw(bytes: Buffer): void {
    this.send(bytes);
  }
  next(): Promise<Buffer> {
    return this.#q.next();
  }
  get backlog(): number {
    return this.#q.length;
  }
  pause(): void {
    this.#paused = true;
  }
  resume(): void {
    this.#paused = false;
    for (const m of this.#held.splice(0)) this.#q.push(m);
  }
  async close(): Promise<void> {
    this.sock.close();
    await this.closed;
  }
}

/** One port's far end, made before the port (connect mode needs the server first). */
export interface Endpoint {
  /** The validated port spec to build the port from. */
  spec: PortConfig;
  /**
   * After port.open(): a peer connected to the port (the peer's side of the
   * connection is established; the caller waits for the port's 'up').
   */
  attach(port: Port): Promise<Peer>;
  /** Connect mode: stop the peer's server and drop its connections. */
  stopServer?(): Promise<void>;
  /** Connect mode: listen again on the same address. */
  startServer?(): Promise<void>;
  cleanup(): Promise<void>;
}

export interface Harness {
  label: string;
  /** How the port reaches its peer. */
  mode: 'listen' | 'connect' | 'dgram' | 'vhost-user';
  make(name: string, network: string, extra?: Record<string, unknown>): Promise<Endpoint>;
}

const LOOPBACK = '127.0.0.1';

function localOf(port: Port): { host: string; port: number; path?: string } {
  const text = String(port.describe()['local'] ?? '');
  const a = parseAddress(text, ['tcp', 'udp', 'unix']);
  if (typeof a === 'string') throw new Error(`port ${port.name}: no local address in describe(): ${a}`);
  if (a.type === 'unix') return { host: '', port: 0, path: a.path };
  return { host: a.host, port: a.port };
}

async function dialPeer(target: { path: string } | { host: string; port: number }): Promise<StreamPeer> {
  const sock = 'path' in target ? connect(target.path) : connect(target.port, target.host);
  await once(sock, 'connect');
  return new StreamPeer(sock);
}

/** vmlink listens; the peer dials it (QEMU `server=off`, `socket,connect=`). */
export function listenHarness(kind: 'stream' | 'socket', transport: 'unix' | 'tcp'): Harness {
  return {
    label: `${kind} ${transport} listen`,
    mode: 'listen',
    async make(name, network, extra = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'vmlink-port-'));
      const listen = transport === 'unix' ? `unix:${join(dir, 'sub', `${name}.sock`)}` : `tcp:${LOOPBACK}:0`;
      const spec = portSchema.parse({ name, kind, network, listen, ...extra });
      return {
        spec,
        async attach(port) {
          const a = (spec as { listen?: Address }).listen;
          const target = a?.type === 'unix' ? { path: a.path } : localOf(port);
          return dialPeer(target as { path: string } | { host: string; port: number });
        },
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  };
}

/** vmlink dials; the peer listens (QEMU `server=on`, `socket,listen=`). */
export function connectHarness(kind: 'stream' | 'socket', transport: 'unix' | 'tcp'): Harness {
  return {
    label: `${kind} ${transport} connect`,
    mode: 'connect',
    async make(name, network, extra = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'vmlink-peer-'));
      const path = join(dir, `${name}.sock`);
      let server: Server | undefined;
      let port = 0;
      const accepted: Socket[] = [];
      const waiting: ((s: Socket) => void)[] = [];
      const live = new Set<Socket>();
      const start = async () => {
        const s = createServer((sock) => {
          live.add(sock);
          sock.once('close', () => live.delete(sock));
          const w = waiting.shift();
          if (w) w(sock);
          else accepted.push(sock);
        });
        if (transport === 'unix') s.listen(path);
        else s.listen(port, LOOPBACK);
        await once(s, 'listening');
        const a = s.address();
        if (a && typeof a === 'object') port = a.port;
        server = s;
      };
      const stop = async () => {
        const s = server;
        server = undefined;
        if (!s) return;
        const done = new Promise<void>((r) => s.close(() => r()));
        for (const sock of live) sock.destroy();
        accepted.length = 0;
        await done;
        if (transport === 'unix') await unlink(path).catch(() => {});
      };
      await start();
      const connectTo = transport === 'unix' ? `unix:${path}` : `tcp:${LOOPBACK}:${port}`;
      const spec = portSchema.parse({
        name,
        kind,
        network,
        connect: connectTo,
        reconnect: { min_ms: 10, max_ms: 50 },
        ...extra,
      });
      return {
        spec,
        async attach() {
          const sock = accepted.shift() ?? (await new Promise<Socket>((r) => waiting.push(r)));
          return new StreamPeer(sock);
        },
        stopServer: stop,
        startServer: start,
        async cleanup() {
          await stop();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

/** vmlink binds `local` and sends to `remote`; the peer is a UDP socket (QEMU `-netdev dgram`). */
export function dgramHarness(): Harness {
  return {
    label: 'dgram udp',
    mode: 'dgram',
    async make(name, network, extra = {}) {
      let sock = createSocket('udp4');
      sock.bind(0, LOOPBACK);
      await once(sock, 'listening');
      const peerPort = sock.address().port;
      const spec = portSchema.parse({
        name,
        kind: 'dgram',
        network,
        local: `udp:${LOOPBACK}:0`,
        remote: `udp:${LOOPBACK}:${peerPort}`,
        ...extra,
      });
      let used = false;
      return {
        spec,
        async attach(port) {
          if (used) {
            // A restarted peer: a new socket on the same address.
            sock = createSocket('udp4');
            sock.bind(peerPort, LOOPBACK);
            await once(sock, 'listening');
          }
          used = true;
          return new DgramPeer(sock, localOf(port));
        },
        async cleanup() {
          try {
            sock.close();
          } catch {
            // already closed by the test
          }
        },
      };
    },
  };
}

/**
 * QEMU's side of a unix `-netdev dgram`: a datagram socket bound at `path`
 * sending to `to` (through the native addon, as Node has no unix datagram
 * sockets). pause() stops reading from the socket, so the port sees the
 * kernel's backpressure (the receive queue fills).
 */
export class UnixDgramPeer implements Peer {
  readonly #q = new FrameQueue();
  readonly closed: Promise<void>;
  readonly #fd: number;
  readonly #poller: Poller;
  readonly #rx = Buffer.alloc(16 * 65536);
  readonly #lens = new Uint32Array(16);
  #close: (() => void) | undefined;
  #open = true;
  constructor(
    path: string,
    readonly to: string,
  ) {
    const n = native();
    this.#fd = n.socket(n.SOCK_DGRAM);
    n.bind(this.#fd, path);
    this.#poller = new n.Poller(this.#fd, () => {
      const got = n.recvBatch(this.#fd, this.#rx, 65536, this.#lens, null);
      for (let i = 0; i < got; i++) {
        const o = i * 65536;
        this.#q.push(Buffer.from(this.#rx.subarray(o, o + (this.#lens[i] as number))));
      }
    });
    this.#poller.start(n.READABLE);
    this.closed = new Promise((resolve) => (this.#close = resolve));
  }
  /**
   * Sends in order; what the port's full receive queue refuses (EAGAIN) waits
   * and is retried on the next loop turn, as QEMU retries on POLLOUT (an
   * unconnected unix datagram sender gets no wake-up when the peer reads).
   */
  send(frame: Buffer): void {
    this.#out.push(frame);
    if (this.#out.length === 1) this.#pump();
  }
  readonly #out: Buffer[] = [];
  readonly #pump = (): void => {
    const n = native();
    while (this.#open && this.#out.length > 0) {
      const f = this.#out[0] as Buffer;
      if (n.sendBatch(this.#fd, f, new Uint32Array([0]), new Uint32Array([f.length]), 0, 1, this.to) === 0) {
        setImmediate(this.#pump);
        return;
      }
      this.#out.shift();
    }
  };
  raw(bytes: Buffer): void {
    this.send(bytes);
  }
  next(): Promise<Buffer> {
    return this.#q.next();
  }
  get backlog(): number {
    return this.#q.length;
  }
  pause(): void {
    this.#poller.stop();
  }
  resume(): void {
    this.#poller.start(native().READABLE);
  }
  async close(): Promise<void> {
    if (this.#open) {
      this.#open = false;
      this.#poller.close();
      closeSync(this.#fd);
      this.#close?.();
    }
    await this.closed;
  }
}

/** vmlink binds a unix datagram socket and sends to the peer's (QEMU `-netdev dgram,local.type=unix`). */
export function unixDgramHarness(): Harness {
  return {
    label: 'dgram unix',
    mode: 'dgram',
    async make(name, network, extra = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'vmlink-udg-'));
      const peerPath = join(dir, `${name}.qemu`);
      const local = join(dir, 'sub', `${name}.sock`);
      const spec = portSchema.parse({
        name,
        kind: 'dgram',
        network,
        local: `unix:${local}`,
        remote: `unix:${peerPath}`,
        ...extra,
      });
      return {
        spec,
        async attach() {
          // A (re)started peer binds its path afresh, as QEMU does (it unlinks a leftover file first).
          await unlink(peerPath).catch(() => {});
          return new UnixDgramPeer(peerPath, local);
        },
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  };
}
