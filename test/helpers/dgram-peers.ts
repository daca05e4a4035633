/**
 * Compliance harnesses for the `dgram` port kind: QEMU's `-netdev dgram`
 * side over UDP (Node's dgram) and over unix datagram sockets (the addon).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { closeSync } from 'node:fs';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { portSchema } from '../../src/config/schema.js';
import { native, type Poller } from '../../src/native/index.js';
import { FrameQueue, type Harness, LOOPBACK, localOf, type Peer } from './port-peers.js';

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

/** vmlink binds `local` and sends to `remote`; the peer is a UDP socket (QEMU `-netdev dgram`). */
export function dgramHarness(): Harness {
  return {
    label: 'dgram udp',
    mode: 'dgram',
    holdable: true,
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
    holdable: true,
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
