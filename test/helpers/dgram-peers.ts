/**
 * Compliance harnesses for the `dgram` port kind: QEMU's `-netdev dgram`
 * side over UDP (Node's dgram) and over unix datagram sockets (the addon).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { portSchema } from '../../src/config/schema.js';
import { native } from '../../src/native/index.js';
import { type Harness, LOOPBACK, localOf, QueuedPeer } from './port-peers.js';
import { SocketPeer } from './socket-peer.js';

export class DgramPeer extends QueuedPeer {
  readonly closed: Promise<void>;
  #paused = false;
  readonly #held: Buffer[] = [];
  constructor(
    readonly sock: UdpSocket,
    readonly to: { host: string; port: number },
  ) {
    super();
    sock.on('message', (m: Buffer) => {
      if (this.#paused) this.#held.push(m);
      else this.frames.push(m);
    });
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
  }
  send(frame: Buffer): void {
    this.sock.send(frame, this.to.port, this.to.host);
  }
  pause(): void {
    this.#paused = true;
  }
  resume(): void {
    this.#paused = false;
    for (const m of this.#held.splice(0)) this.frames.push(m);
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
export class UnixDgramPeer extends SocketPeer {
  constructor(
    path: string,
    readonly to: string,
  ) {
    const n = native();
    const fd = n.socket(n.SOCK_DGRAM);
    n.bind(fd, path);
    super(fd, 65536);
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
    while (this.open && this.#out.length > 0) {
      if (!this.sendTo(this.#out[0] as Buffer, this.to)) {
        setImmediate(this.#pump);
        return;
      }
      this.#out.shift();
    }
  };
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
