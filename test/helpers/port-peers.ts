import { once } from 'node:events';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
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

/** Frames received, handed out in order by next(). */
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

/**
 * The shared base of the peers: what they receive waits in a FrameQueue for
 * next(); raw() sends as send() does unless the transport frames (a subclass
 * then overrides it).
 */
export abstract class QueuedPeer implements Peer {
  /** Where a subclass puts each frame it receives (a copy). */
  protected readonly frames = new FrameQueue();
  abstract readonly closed: Promise<void>;
  abstract send(frame: Buffer): void;
  abstract pause(): void;
  abstract resume(): void;
  abstract close(): Promise<void>;
  raw(bytes: Buffer): void {
    this.send(bytes);
  }
  next(): Promise<Buffer> {
    return this.frames.next();
  }
  get backlog(): number {
    return this.frames.length;
  }
}

export class StreamPeer extends QueuedPeer {
  readonly closed: Promise<void>;
  constructor(readonly sock: Socket) {
    super();
    const d = new Deframer((b, o, l) => this.frames.push(Buffer.from(b.subarray(o, o + l))), 1 << 20);
    sock.on('data', (c: Buffer) => d.push(c));
    sock.on('error', () => {});
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
  }
  send(frame: Buffer): void {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(frame.length);
    this.sock.write(Buffer.concat([h, frame]));
  }
  override raw(bytes: Buffer): void {
    this.sock.write(bytes);
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
  /**
   * How the port reaches its peer: it listens, dials, exchanges datagrams,
   * serves a vhost-user front-end, is a kernel device (up from open(), the
   * peer is what is behind the device), or serves vde_plug processes.
   */
  mode: 'listen' | 'connect' | 'dgram' | 'vhost-user' | 'device' | 'plug';
  /** The port pauses reading with hold() and resumes with release() (the fd ports). */
  holdable?: boolean;
  /** Set when frames flushed by close() may not reach the peer: why (inherent to the kind). */
  closeDropsInFlight?: string;
  /** Set when a peer that stops reading never makes the port queue fill: why (inherent to the kind). */
  noBackpressure?: string;
  make(name: string, network: string, extra?: Record<string, unknown>): Promise<Endpoint>;
}

export const LOOPBACK = '127.0.0.1';

export function localOf(port: Port): { host: string; port: number; path?: string } {
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
