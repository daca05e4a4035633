/**
 * The `stream` port kind: QEMU's `-netdev stream` (and legacy `-netdev
 * socket`, see socket.ts) over a unix or TCP socket. Each frame is a 4-byte
 * big-endian length and the frame (deframer.ts).
 *
 * Two modes:
 * - listen: vmlink listens, QEMU connects (`server=off`). One peer at a
 *   time: a new connection replaces the old one.
 * - connect: vmlink dials QEMU's `server=on` socket and re-dials forever with
 *   exponential backoff and jitter. QEMU 7.2 listens again after its client
 *   goes away, so a daemon restart needs no VM restart.
 *
 * A peer that sends an oversized length prefix or closes mid-frame is
 * disconnected with one log line and counted through ctx.onMalformed; the
 * port keeps listening (or re-dials).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describeError } from '../../errors.js';
import type { Address } from '../../util/address.js';
import { formatAddress } from '../../util/address.js';
import { Backoff } from '../../util/backoff.js';
import { adoptWithReader } from '../../util/sockets.js';
import { PortAddressError } from '../errors.js';
import type { BatchResult, Port, PortContext, PortState } from '../port.js';
import { WriteResult } from '../port.js';
import { createPortSocket, prepareUnixPath, removeUnixPath, type SocketAccessSpec } from '../unix-path.js';
import { Conn, type ConnOwner, enlargeBuffers, READ_BYTES, Reader } from './stream-conn.js';
import { StreamHold } from './stream-hold.js';

/** Idle time before TCP keepalive probes start, ms. */
const KEEPALIVE_MS = 15_000;

export interface StreamPortOptions {
  name: string;
  /** `stream` or `socket` (same wire format). */
  kind: string;
  /** listen: QEMU dials us; connect: we dial QEMU. */
  mode: 'listen' | 'connect';
  address: Extract<Address, { type: 'unix' | 'tcp' }>;
  /** Re-dial delays for connect mode, ms. */
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  /** Mode, owner and group of a listening unix socket; default mode 0600. */
  socket?: SocketAccessSpec | undefined;
  /** Random source for backoff jitter (tests). */
  random?: () => number;
}

export class StreamPort implements Port, ConnOwner {
  readonly name: string;
  readonly kind: string;
  #state: PortState = 'closed';
  readonly #opts: StreamPortOptions;
  readonly #ctx: PortContext;
  readonly #backoff: Backoff;
  #server: Server | undefined;
  #conn: Conn | undefined;
  #dialing: Socket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #opened = false;
  #closing: Promise<void> | undefined;
  #destroyed = false;
  #local = '';
  #connections = 0;
  #reconnects = 0;
  #malformed = 0;
  #lost = 0;
  /** Backpressure: while the switch holds this port, the socket is not read. */
  readonly #hold: StreamHold;

  constructor(opts: StreamPortOptions, ctx: PortContext) {
    this.name = opts.name;
    this.kind = opts.kind;
    this.#opts = opts;
    this.#ctx = ctx;
    this.#backoff = new Backoff(opts.reconnect?.min_ms ?? 100, opts.reconnect?.max_ms ?? 5000, opts.random);
    this.#hold = new StreamHold(
      ctx,
      READ_BYTES,
      () => this.#conn?.sock.pause(),
      () => this.#conn?.sock.resume(),
    );
  }

  get state(): PortState {
    return this.#state;
  }

  get queued(): number {
    return this.#conn?.egress.queued ?? 0;
  }

  async open(): Promise<void> {
    if (this.#opened) throw new PortAddressError(this.name, this.#where(), 'the port was already opened');
    this.#opened = true;
    if (this.#opts.mode === 'connect') {
      this.#setState('connecting', `dialling ${this.#where()}`);
      this.#dial();
      return;
    }
    try {
      await this.#listen();
    } catch (err) {
      // Nothing was bound: the caller may fix the cause and open again.
      this.#opened = false;
      throw err;
    }
  }

  write(buf: Buffer, off: number, len: number): WriteResult {
    const c = this.#conn;
    return c === undefined ? WriteResult.DOWN : c.egress.write(buf, off, len);
  }

  writeBatch(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    const c = this.#conn;
    if (c === undefined) res.down += count;
    else c.egress.writeBatch(buf, frames, count, res);
  }

  /**
   * Backpressure (Port.hold): stops reading the socket; the peer's frames
   * wait in the socket buffers, then in the peer, which TCP or the unix
   * socket slows down. What the current read still holds is parked
   * (stream-hold.ts).
   */
  hold(): void {
    this.#hold.hold();
  }

  /** Backpressure (Port.release): the parked frames go on, then the socket is read again. */
  release(): void {
    this.#hold.release();
  }

  describe(): Record<string, unknown> {
    return {
      mode: this.#opts.mode,
      address: this.#where(),
      local: this.#local || undefined,
      peer: this.#conn?.peer,
      connections: this.#connections,
      reconnects: this.#reconnects,
      queued: this.queued,
      /** Socket writes on the current connection (each carries a batch of frames). */
      writes: this.#conn?.egress.batches ?? 0,
      malformed: this.#malformed,
      lost_on_disconnect: this.#lost + (this.#conn?.egress.lost ?? 0),
      /** Times reading was held because every frame went to full ports, and whether it is now. */
      read_holds: this.#hold.holds,
      read_held: this.#hold.held,
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown(true);
    return this.#closing;
  }

  destroy(_err?: Error): Promise<void> {
    this.#destroyed = true;
    this.#conn?.sock.destroy();
    this.#closing ??= this.#shutdown(false);
    return this.#closing;
  }

  // ---- called by Conn -----------------------------------------------------------

  /** The peer broke the framing: count it, say why once, drop the connection. */
  malformed(c: Conn, reason: string): void {
    if (c.dropReason) return;
    this.#malformed++;
    this.#ctx.onMalformed(reason);
    this.#ctx.logger.warn({ peer: c.peer, reason }, `closing connection from ${c.peer}: ${reason}`);
    this.#drop(c, `malformed input: ${reason}`);
  }

  /** A connection closed (for any reason). */
  lost(c: Conn): void {
    if (c.gone) return;
    c.gone = true;
    c.egress.kill();
    this.#lost += c.egress.lost;
    if (this.#conn !== c) return; // replaced, or the port is closing
    this.#conn = undefined;
    const why = c.dropReason || 'peer closed the connection';
    if (this.#closing) return;
    if (this.#opts.mode === 'listen') {
      this.#ctx.logger.info({ peer: c.peer, reason: why }, 'peer disconnected');
      this.#setState('listening', `${why}; waiting for a new connection`);
    } else {
      this.#retry(why);
    }
  }

  // ---- internals ------------------------------------------------------------------

  #where(): string {
    return formatAddress(this.#opts.address);
  }

  #setState(state: PortState, reason: string, force = false): void {
    // Repeats are reported only when forced, or for a new peer (one connection replacing another).
    if (this.#state === state && state !== 'up' && !force) return;
    this.#state = state;
    this.#ctx.onState(state, reason);
  }

  #drop(c: Conn, reason: string): void {
    if (!c.dropReason) c.dropReason = reason;
    c.egress.kill();
    c.sock.destroy();
  }

  #attach(sock: Socket, peer: string): Conn {
    enlargeBuffers(sock, this.#ctx.logger);
    if (this.#opts.address.type === 'tcp') {
      // We batch ourselves: Nagle would only add latency. Keepalive finds a peer host that vanished.
      sock.setNoDelay(true);
      sock.setKeepAlive(true, KEEPALIVE_MS);
    }
    const old = this.#conn;
    const c = new Conn(sock, peer, this, this.#ctx, this.#hold);
    this.#conn = c;
    this.#connections++;
    if (old) {
      this.#ctx.logger.info({ old: old.peer, peer }, `new connection from ${peer} replaces ${old.peer}`);
      this.#drop(old, `replaced by ${peer}`);
    }
    this.#setState('up', `peer ${peer} connected`);
    return c;
  }

  async #listen(): Promise<void> {
    const a = this.#opts.address;
    if (a.type === 'unix' && (await prepareUnixPath(this.name, a.path)))
      this.#ctx.logger.info({ path: a.path }, 'removed a stale socket file nobody was listening on');
    const server = createServer({ pauseOnConnect: true });
    server.on('connection', (accepted) => {
      if (this.#closing) {
        accepted.destroy();
        return;
      }
      const reader = new Reader();
      const sock = adoptWithReader(accepted, reader.onread);
      const peer = a.type === 'unix' ? formatAddress(a) : `tcp:${sock.remoteAddress}:${sock.remotePort}`;
      reader.conn = this.#attach(sock, peer);
    });
    const listen = (at: string | undefined) =>
      new Promise<void>((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          reject(new PortAddressError(this.name, this.#where(), listenHint(err), { cause: err }));
        };
        server.once('error', onError);
        const done = () => {
          server.off('error', onError);
          resolve();
        };
        if (at !== undefined) server.listen(at, done);
        else if (a.type === 'tcp') server.listen({ host: a.host, port: a.port, ipv6Only: false }, done);
      });
    if (a.type === 'unix')
      await createPortSocket(this.name, a.path, this.#opts.socket, listen, () => void server.close());
    else await listen(undefined);
    server.on('error', (err) => this.#ctx.logger.error({ err: describeError(err) }, 'listener error'));
    this.#server = server;
    const bound = server.address();
    this.#local =
      a.type === 'unix' || bound === null || typeof bound === 'string'
        ? this.#where()
        : formatAddress({ type: 'tcp', host: bound.address, port: bound.port });
    if (this.#closing) {
      server.close();
      return;
    }
    this.#setState('listening', `listening on ${this.#local}`);
  }

  #dial(): void {
    this.#timer = undefined;
    if (this.#closing) return;
    const a = this.#opts.address;
    const reader = new Reader();
    const sock =
      a.type === 'unix'
        ? connect({ path: a.path, onread: reader.onread })
        : connect({ host: a.host, port: a.port, onread: reader.onread });
    this.#dialing = sock;
    const onError = (err: Error) => {
      sock.destroy();
      if (this.#dialing !== sock) return;
      this.#dialing = undefined;
      this.#retry(`cannot connect to ${this.#where()}: ${describeError(err)}`);
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      sock.off('error', onError);
      this.#dialing = undefined;
      if (this.#closing) {
        sock.destroy();
        return;
      }
      if (this.#connections > 0) this.#reconnects++;
      this.#backoff.reset();
      this.#local = a.type === 'unix' ? '' : `tcp:${sock.localAddress}:${sock.localPort}`;
      reader.conn = this.#attach(sock, this.#where());
    });
  }

  #retry(why: string): void {
    if (this.#closing || this.#timer) return;
    const first = this.#backoff.attempt === 0;
    const delay = this.#backoff.next();
    // One info line when a streak of failures starts; the rest at debug level.
    (first ? this.#ctx.logger.info : this.#ctx.logger.debug).call(this.#ctx.logger, { delay_ms: delay }, why);
    // The first failure of a streak is reported (the reason says why); later retries are not, to keep logs quiet.
    this.#setState('connecting', `${why}; re-dialling in ${delay} ms`, first);
    this.#timer = setTimeout(() => this.#dial(), delay);
    this.#timer.unref();
  }

  async #shutdown(graceful: boolean): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dialing?.destroy();
    this.#dialing = undefined;
    const c = this.#conn;
    const server = this.#server;
    const serverClosed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    if (c) {
      if (graceful && !this.#destroyed) await c.end();
      this.#conn = undefined;
      c.sock.destroy();
      this.lost(c);
    }
    await serverClosed;
    if (server && this.#opts.address.type === 'unix') await removeUnixPath(this.#opts.address.path);
    this.#server = undefined;
    if (this.#state !== 'closed') {
      this.#state = 'closed';
      this.#ctx.onState('closed', graceful ? 'closed' : 'destroyed');
    }
  }
}

function listenHint(err: NodeJS.ErrnoException): string {
  if (err.code === 'EADDRINUSE') return 'the address is already in use; stop whatever uses it or choose another';
  if (err.code === 'EACCES') return 'permission denied; choose another address or run with the needed rights';
  if (err.code === 'EADDRNOTAVAIL') return 'no local interface has that address; use one of this host';
  return describeError(err);
}

/** A stream or socket port's spec (the daemon maps the validated config onto it; exactly one of listen/connect). */
export interface StreamSpec {
  name: string;
  kind: string;
  listen?: Extract<Address, { type: 'unix' | 'tcp' }> | undefined;
  connect?: Extract<Address, { type: 'unix' | 'tcp' }> | undefined;
  /** Re-dial delays of a connecting port (ms). */
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  socket?: SocketAccessSpec | undefined;
}

/** Factory for `kind: stream` ports. */
export function streamPort(spec: StreamSpec, ctx: PortContext): Port {
  return new StreamPort(streamOptions(spec), ctx);
}

/** The options for a stream or socket spec (exactly one of listen/connect is set; the schema checks it). */
function streamOptions(spec: StreamSpec): StreamPortOptions {
  const address = spec.listen ?? spec.connect;
  if (!address) throw new PortAddressError(spec.name, '(none)', 'give exactly one of listen or connect');
  return {
    name: spec.name,
    kind: spec.kind,
    mode: spec.listen ? 'listen' : 'connect',
    address,
    reconnect: spec.reconnect,
    socket: spec.socket,
  };
}
