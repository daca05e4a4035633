/**
 * The `vde` port kind: vmlink serves the VDE2 switch protocol in a directory,
 * so `vde_plug DIR`, QEMU's `-netdev vde,sock=DIR` and anything built on
 * libvdeplug connect to it as they would to `vde_switch -s DIR`.
 *
 * Protocol (vde2 libvdeplug, "request_v3"; all in host byte order):
 * the plug binds its own datagram socket, connects to the stream socket
 * DIR/ctl and sends { u32 magic 0xfeedface, u32 version 3, u32 type
 * (REQ_NEW_CONTROL = 0 in the low byte, a requested port number above it),
 * struct sockaddr_un (110 bytes: its datagram socket), free-text description }.
 * The switch answers with one struct sockaddr_un: a datagram socket it bound
 * for this plug (DIR/NNN.ID) and connected to the plug's. Frames then travel
 * one per datagram between the two; closing the control connection ends the
 * plug.
 *
 * Several plugs may connect to one port: they share it like a hub segment
 * (a frame from one plug also goes to the others). Receiving uses recvmmsg
 * batches; egress is queued (at most ctx.queueLen frames) and sent once per
 * event-loop turn with sendmmsg per plug; a plug that cannot take a frame
 * (its queue is full) misses it, counted in describe().tx_dropped.
 */
import { closeSync, unlinkSync } from 'node:fs';
import { chmod, chown, rmdir, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { describeError } from '../../errors.js';
import { type NativeAddon, native, type Poller } from '../../native/index.js';
import { mkdirp } from '../../util/fs.js';
import { createUnixSocketSync, PRIVATE_SOCKET } from '../../util/unix-socket.js';
import { PortAddressError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import type { PortContext, PortFactory } from '../port.js';
import {
  createPortSocket,
  portSocketAccess,
  prepareUnixPath,
  type SocketAccess,
  type SocketAccessSpec,
} from '../unix-path.js';
import { FdPort } from './fd-port-base.js';

/** A VDE port's validated config (see config/schema.ts). */
export interface VdeSpec {
  name: string;
  /** Directory served as a VDE switch (absolute; created when missing). */
  dir: string;
  /** Mode, owner and group of the switch's sockets (and of `dir` when vmlink creates it); default mode 0600. */
  socket?: SocketAccessSpec | undefined;
}

export const VDE_SWITCH_MAGIC = 0xfeedface;
export const VDE_VERSION = 3;
/** sizeof(struct sockaddr_un) on Linux. */
const SUN_LEN = 110;
/** magic + version + type + sockaddr_un. */
export const VDE_REQUEST_LEN = 12 + SUN_LEN;
const AF_UNIX = 1;
/** Datagrams per recvmmsg call; a readable event reads up to RX_ROUNDS such batches. */
const RX_BATCH = 64;
const RX_ROUNDS = 4;
/** Frames larger than this are dropped (and counted) on receive; vde_switch allows 9216-byte payloads. */
const MAX_RX = 16384;
/** Send buffer of each plug's datagram socket, bytes (default 208 KiB: about 90 full-size frames). */
const PLUG_SNDBUF = 4 << 20;
/** Most plugs per port. */
const MAX_PLUGS = 64;
const LE = endianness() === 'LE';

/** One connected vde_plug. */
interface Plug {
  id: number;
  ctl: Socket;
  fd: number;
  path: string;
  poller: Poller;
  peer: string;
  description: string;
}

export class VdePort extends FdPort {
  readonly kind = 'vde';
  readonly #dir: string;
  readonly #ctx: PortContext;
  #n: NativeAddon | undefined;
  #server: Server | undefined;
  #createdDir = false;
  readonly #socket: SocketAccessSpec | undefined;
  /** The resolved `socket:` setting, for the control socket and each plug's socket. */
  #access: SocketAccess | undefined;
  readonly #plugs: Plug[] = [];
  #nextId = 0;
  // receive
  readonly #rx: Buffer;
  readonly #rxLens = new Uint32Array(RX_BATCH);
  readonly #oneOff = new Uint32Array(1);
  readonly #oneLen = new Uint32Array(1);
  #txDropped = 0;

  constructor(spec: VdeSpec, ctx: PortContext) {
    super(spec.name, ctx, new FrameArena(ctx.queueLen, Math.max(1 << 20, 2 * ctx.maxFrameLen)));
    this.#dir = spec.dir;
    this.#socket = spec.socket;
    this.#ctx = ctx;
    this.#rx = Buffer.allocUnsafe(RX_BATCH * MAX_RX);
  }

  async open(): Promise<void> {
    if (this.#server) return;
    const ctl = join(this.#dir, 'ctl');
    if (!this.#dir.startsWith('/') || Buffer.byteLength(ctl) > 100)
      throw new PortAddressError(this.name, this.#dir, 'a VDE directory must be an absolute path of at most 96 bytes');
    this.#n = native();
    const access = await portSocketAccess(this.name, this.#dir, this.#socket);
    this.#access = access;
    try {
      this.#createdDir = (await mkdirp(this.#dir, 0o700)) !== undefined;
      // A directory we made lets in whom the sockets let in: a plug binds its own socket in it, so each
      // class that may connect gets rwx (as vde_switch -m gives its directory).
      if (this.#createdDir) {
        if (access.uid !== -1 || access.gid !== -1) await chown(this.#dir, access.uid, access.gid);
        await chmod(this.#dir, 0o700 | (access.mode & 0o070 ? 0o070 : 0) | (access.mode & 0o007 ? 0o007 : 0));
      }
    } catch (err) {
      throw new PortAddressError(this.name, this.#dir, `cannot create the directory: ${describeError(err)}`, {
        cause: err,
      });
    }
    await prepareUnixPath(this.name, ctl);
    const server = createServer((s) => this.#accept(s));
    const listen = (at: string) =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at, () => {
          server.off('error', reject);
          resolve();
        });
      }).catch((err: unknown) => {
        throw new PortAddressError(this.name, ctl, describeError(err), { cause: err });
      });
    await createPortSocket(this.name, ctl, this.#socket, listen, () => void server.close());
    server.on('error', (err) => this.#ctx.logger.warn({ err: describeError(err) }, 'VDE control socket error'));
    this.#server = server;
    this.core.setState('listening', `VDE switch at ${this.#dir}`);
  }

  /** A control connection: one request_v3, then it stays open for the plug's lifetime. */
  #accept(s: Socket): void {
    if (this.#plugs.length >= MAX_PLUGS) {
      this.#ctx.logger.warn({ dir: this.#dir }, `VDE port has ${MAX_PLUGS} plugs already; refusing another`);
      s.destroy();
      return;
    }
    let head = Buffer.alloc(0);
    let plug: Plug | undefined;
    s.on('data', (d: Buffer) => {
      if (plug) return; // nothing more is expected on the control channel
      head = Buffer.concat([head, d]);
      if (head.length < VDE_REQUEST_LEN) return;
      plug = this.#connect(s, head);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (plug) this.#drop(plug, 'control connection closed');
    });
  }

  /** Parses a request_v3 and sets up the plug's datagram socket; on bad input closes with one log line. */
  #connect(s: Socket, req: Buffer): Plug | undefined {
    const reject = (reason: string): undefined => {
      this.#ctx.onMalformed(`VDE request: ${reason}`);
      this.#ctx.logger.warn({ dir: this.#dir, reason }, 'refused a VDE plug');
      s.destroy();
      return undefined;
    };
    const u32 = (o: number) => (LE ? req.readUInt32LE(o) : req.readUInt32BE(o));
    const magic = u32(0);
    if (magic !== VDE_SWITCH_MAGIC) return reject(`bad magic 0x${magic.toString(16)} (want 0xfeedface)`);
    const version = u32(4);
    if (version !== VDE_VERSION) return reject(`protocol version ${version} is not supported (want 3)`);
    const type = u32(8);
    if ((type & 0xff) !== 0) return reject(`request type ${type & 0xff} is not REQ_NEW_CONTROL (0)`);
    const family = LE ? req.readUInt16LE(12) : req.readUInt16BE(12);
    const nul = req.indexOf(0, 14);
    const end = nul < 0 || nul > 12 + SUN_LEN ? 12 + SUN_LEN : nul;
    const peer = req.toString('utf8', 14, end);
    if (family !== AF_UNIX || peer === '') return reject('the plug did not send a unix socket address');
    const description = req.toString('utf8', VDE_REQUEST_LEN).replace(/\0.*$/s, '').slice(0, 128);
    const n = this.#n as NativeAddon;
    const id = this.#nextId++;
    const path = join(this.#dir, `${String(id % 1000).padStart(3, '0')}.${process.pid}`);
    let fd = -1;
    try {
      try {
        unlinkSync(path);
      } catch {
        // not there: fine
      }
      fd = n.socket(n.SOCK_DGRAM);
      const bound = fd;
      // The plug sends here: same mode, owner and group as the control socket, set before it is reachable.
      createUnixSocketSync(
        path,
        this.#access ?? PRIVATE_SOCKET,
        (at) => n.bind(bound, at),
        () => undefined,
      );
      n.connect(fd, peer);
      // Room for bursts to the plug: its send buffer bounds the datagrams in flight (a full one drops).
      n.setBuffers(fd, PLUG_SNDBUF, 0);
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      return reject(`cannot reach the plug's socket ${peer}: ${describeError(err)}`);
    }
    const plug: Plug = { id, ctl: s, fd, path, peer, description, poller: undefined as unknown as Poller };
    plug.poller = new n.Poller(fd, (status) => this.#readable(plug, status));
    this.core.addReader(n, plug.poller);
    // The reply: struct sockaddr_un of our socket for this plug.
    const reply = Buffer.alloc(SUN_LEN);
    if (LE) reply.writeUInt16LE(AF_UNIX, 0);
    else reply.writeUInt16BE(AF_UNIX, 0);
    reply.write(path, 2, 'utf8');
    s.write(reply);
    this.#plugs.push(plug);
    this.#ctx.logger.info({ plug: id, peer, description }, 'VDE plug connected');
    if (this.#plugs.length === 1) this.core.setState('up', `VDE plug ${description || peer} connected`);
    return plug;
  }

  /** One batch from a plug: to the sink, and to the port's other plugs (hub segment). */
  #readable(plug: Plug, status: number): void {
    const n = this.#n;
    if (n === undefined || status < 0) {
      this.#drop(plug, `poll error ${status}`);
      return;
    }
    for (let round = 0; round < RX_ROUNDS; round++) {
      let count: number;
      try {
        count = n.recvBatch(plug.fd, this.#rx, MAX_RX, this.#rxLens, null);
      } catch (err) {
        this.#drop(plug, `receive failed: ${describeError(err)}`);
        return;
      }
      this.core.rxBatches++;
      this.core.rxFrames += count;
      this.#deliver(plug, count);
      if (count < RX_BATCH || this.core.held || !this.#plugs.includes(plug)) return;
    }
  }

  /** Frames [0, count) of the receive buffer to the sink, and to the port's other plugs. */
  #deliver(plug: Plug, count: number): void {
    const sink = this.#ctx.sink;
    const others = this.#plugs.length > 1;
    for (let i = 0; i < count; i++) {
      const len = this.#rxLens[i] as number;
      const off = i * MAX_RX;
      if (len > MAX_RX || len > this.#ctx.maxFrameLen) {
        this.#ctx.onMalformed(`VDE datagram of ${len} bytes is larger than ${Math.min(MAX_RX, this.#ctx.maxFrameLen)}`);
        continue;
      }
      if (others) this.#toOthers(plug, off, len);
      sink(this.#rx, off, len);
    }
  }

  /** Sends one received frame to the port's other plugs at once (a frame is dropped for a plug that is full). */
  #toOthers(from: Plug, off: number, len: number): void {
    const n = this.#n as NativeAddon;
    this.#oneOff[0] = off;
    this.#oneLen[0] = len;
    for (const p of this.#plugs) {
      if (p === from) continue;
      try {
        if (n.sendBatch(p.fd, this.#rx, this.#oneOff, this.#oneLen, 0, 1, null) === 0) this.#txDropped++;
      } catch {
        this.#txDropped++;
      }
    }
  }

  /** FdIo.read: each plug's socket has its own watcher (#readable). */
  protected readBatch(): void {}

  /** FdIo.send: the queue to every plug (sendmmsg); what a plug cannot take now is dropped for it. */
  protected sendBatch(tx: FrameArena): number {
    const n = this.#n as NativeAddon;
    const count = tx.count;
    for (const p of [...this.#plugs]) {
      try {
        const sent = n.sendBatch(p.fd, tx.buf, tx.offs, tx.lens, tx.head, count, null);
        this.#txDropped += count - tx.head - sent;
      } catch (err) {
        this.#txDropped += count - tx.head;
        this.#drop(p, `send failed: ${describeError(err)}`);
      }
    }
    return count;
  }

  #drop(plug: Plug, reason: string): void {
    const i = this.#plugs.indexOf(plug);
    if (i < 0) return;
    this.#plugs.splice(i, 1);
    this.core.removeReader(plug.poller);
    plug.poller.close();
    closeSync(plug.fd);
    try {
      unlinkSync(plug.path);
    } catch {
      // already gone
    }
    plug.ctl.destroy();
    this.#ctx.logger.info({ plug: plug.id, peer: plug.peer, reason }, 'VDE plug disconnected');
    if (this.#plugs.length === 0 && !this.core.closed) this.core.setState('listening', `last VDE plug left: ${reason}`);
  }

  describe(): Record<string, unknown> {
    return {
      dir: this.#dir,
      plugs: this.#plugs.map((p) => ({ id: p.id, peer: p.peer, description: p.description })),
      tx_dropped: this.#txDropped,
      ...this.core.counters(),
    };
  }

  /** Drops every plug, then closes the control socket and removes it (and the directory, when vmlink made it). */
  protected override async freeResources(): Promise<void> {
    for (const p of [...this.#plugs]) this.#drop(p, 'closed');
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      // Open control connections were destroyed above. The ctl socket was renamed into place after
      // binding (util/unix-socket.ts), so close() does not unlink it: we do.
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await unlink(join(this.#dir, 'ctl')).catch(() => undefined);
      if (this.#createdDir) await rmdir(this.#dir).catch(() => undefined);
    }
  }
}

/** Factory registered as kind `vde`. */
export const vdePort: PortFactory<VdeSpec> = (spec, ctx) => new VdePort(spec, ctx);
