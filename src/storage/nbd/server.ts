/**
 * The NBD server: listens on TCP and unix sockets, runs one
 * {@link NbdConnection} per client, and sends every client's requests to the
 * backends through one shared {@link IoScheduler} (DWRR by export weight).
 */
import { unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { type Address, formatAddress } from '../../config/address.js';
import type { Logger } from '../../log.js';
import { adoptWithReader, enlargeSocketBuffers } from '../../util/sockets.js';
import {
  claimUnixPath,
  createUnixSocket,
  PRIVATE_SOCKET,
  type SocketAccess,
  UnixPathError,
} from '../../util/unix-socket.js';
import { StorageError } from '../errors.js';
import type { ExportRegistry } from '../exports.js';
import { IoScheduler } from '../scheduler.js';
import { NbdConnection, type NbdStats } from './connection.js';
import type { NbdTls } from './tls.js';

export interface NbdServerOptions {
  logger: Logger;
  exports: ExportRegistry;
  /** Where to listen: `tcp` (port 0 picks a free port) and `unix` addresses. */
  listen: Address[];
  /** Requests in flight per client before its socket is paused (backpressure); default 64. */
  maxInFlightPerClient?: number;
  /**
   * READ/WRITE payload bytes in flight per client before its socket is paused;
   * default 64 MiB (bounds memory per client: replies and write payloads held).
   */
  maxInFlightBytesPerClient?: number;
  /** Requests executing in backends at once, over all clients; default 64. */
  concurrency?: number;
  /** Connections at once per server; more are closed at accept with a log line; default 1024. */
  maxConnections?: number;
  /** A client must finish the handshake within this many ms; default 30000. */
  handshakeTimeoutMs?: number;
  /** Offer TLS (NBD_OPT_STARTTLS), required or optional (see loadNbdTls); default: no TLS. */
  tls?: NbdTls | undefined;
  /** Mode, owner and group of the unix sockets (resolved; util/unix-socket.ts); default mode 0600, our own. */
  socketAccess?: SocketAccess | undefined;
}

export interface NbdServer {
  /** Binds every listen address; rejects with ERR_NBD_LISTEN naming the address that failed. */
  open(): Promise<void>;
  /** Bound addresses (TCP ports resolved), valid after open(). */
  addresses(): Address[];
  /** Live counters. */
  readonly stats: Readonly<NbdStats>;
  /** Connected clients. */
  readonly connections: number;
  /**
   * Stops listening, stops reading requests, answers those in flight, closes
   * connections, then flushes every export's backend. Idempotent.
   */
  close(): Promise<void>;
  /** Closes listeners and connections at once. Idempotent. */
  destroy(err?: Error): Promise<void>;
}

/** A listen address could not be used. */
export class NbdListenError extends StorageError {
  constructor(address: string, reason: string, options?: ErrorOptions) {
    super('ERR_NBD_LISTEN', `NBD server cannot listen on ${address}: ${reason}`, options);
  }
}

export function createNbdServer(opts: NbdServerOptions): NbdServer {
  const logger = opts.logger;
  const scheduler = new IoScheduler({ concurrency: opts.concurrency ?? 64 });
  opts.exports.onRemove((exp) => scheduler.forget(exp));
  const stats: NbdStats = {
    connections: 0,
    requests: 0,
    errors: 0,
    protocolErrors: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };
  const maxConnections = opts.maxConnections ?? 1024;
  const conns = new Set<NbdConnection>();
  const servers: { server: Server; address: Address }[] = [];
  let closing: Promise<void> | undefined;
  let destroyed = false;

  const onSocket = (accepted: Socket): void => {
    if (closing || destroyed || conns.size >= maxConnections) {
      const socket = accepted;
      logger.warn(
        { peer: socket.remoteAddress },
        closing || destroyed
          ? 'refusing NBD connection: server is shutting down'
          : `refusing NBD connection: ${maxConnections} connections already open (raise maxConnections)`,
      );
      socket.destroy();
      return;
    }
    stats.connections++;
    // Without TLS every connection reads into the shared buffer (see READ_BUFFER); TLS
    // needs the plain socket as Node made it, to wrap it at STARTTLS.
    const reader = opts.tls ? undefined : new Reader();
    const socket = reader ? adoptWithReader(accepted, reader.onread) : accepted;
    enlargeSocketBuffers(socket, SOCKET_BUFFER_BYTES);
    const c = new NbdConnection({
      transient: reader !== undefined,
      socket,
      exports: opts.exports,
      scheduler,
      logger,
      stats,
      maxInFlight: opts.maxInFlightPerClient ?? 64,
      maxInFlightBytes: opts.maxInFlightBytesPerClient ?? 64 * 1024 * 1024,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
      tls: opts.tls,
    });
    if (reader) {
      reader.conn = c;
      socket.resume();
    }
    conns.add(c);
    void c.closed.then(() => conns.delete(c));
  };

  const listenOne = async (a: Address): Promise<void> => {
    if (a.type === 'udp') throw new NbdListenError(formatAddress(a), 'NBD runs over TCP or unix sockets, not UDP');
    // Paused at accept without TLS: adoptWithReader takes the handle before anything is read.
    const server = createServer({ noDelay: true, pauseOnConnect: !opts.tls }, onSocket);
    const listen = (at: string | undefined) =>
      new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new NbdListenError(formatAddress(a), err.message, { cause: err })));
        if (at !== undefined) server.listen(at, resolve);
        else if (a.type === 'tcp') server.listen(a.port, a.host, resolve);
      });
    if (a.type === 'unix') {
      await claimListenPath(a.path, formatAddress(a));
      // Created with its mode, owner and group whatever the umask: the socket's mode guards every export.
      await createUnixSocket(a.path, opts.socketAccess ?? PRIVATE_SOCKET, listen, () => void server.close()).catch(
        (err: unknown) => {
          if (!(err instanceof UnixPathError)) throw err;
          throw new NbdListenError(formatAddress(a), err.reason, { cause: err });
        },
      );
    } else await listen(undefined);
    server.on('error', (err) => logger.error({ err, address: formatAddress(a) }, 'NBD listener error'));
    const bound = server.address();
    const address: Address =
      a.type === 'tcp' && bound && typeof bound === 'object' ? { type: 'tcp', host: a.host, port: bound.port } : a;
    servers.push({ server, address });
    logger.info({ address: formatAddress(address) }, 'NBD server listening');
  };

  const closeListeners = async (): Promise<void> => {
    await Promise.all(
      servers.map(
        ({ server, address }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            if (address.type === 'unix') void unlink(address.path).catch(() => {});
          }),
      ),
    );
    servers.length = 0;
  };

  return {
    async open() {
      try {
        for (const a of opts.listen) await listenOne(a);
      } catch (err) {
        await closeListeners();
        throw err;
      }
    },
    addresses: () => servers.map((s) => s.address),
    stats,
    get connections() {
      return conns.size;
    },
    close() {
      closing ??= (async () => {
        const listeners = closeListeners();
        await Promise.all([...conns].map((c) => c.shutdown()));
        await listeners;
        await scheduler.idle();
        await Promise.allSettled(opts.exports.list().map((e) => e.backend.flush()));
      })();
      return closing;
    },
    async destroy() {
      destroyed = true;
      for (const c of conns) c.socket.destroy();
      await closeListeners();
    },
  };
}

/**
 * One read buffer for every plain connection of the process: libuv reads
 * into it and the connection parses (and copies what it keeps) before the
 * next read, so one buffer serves all. Without it Node allocates 64 KiB per
 * read; with it a 1 MiB write payload also arrives in fewer, larger reads.
 */
const READ_BUFFER = Buffer.allocUnsafe(1024 * 1024);

/** Routes a socket's `onread` callbacks to its connection (bound right after the socket is made). */
class Reader {
  conn: NbdConnection | undefined;
  readonly onread = {
    buffer: READ_BUFFER,
    callback: (nread: number, buf: Buffer): boolean => (this.conn ? this.conn.onRead(nread, buf) : true),
  };
}

/**
 * Kernel socket buffers per connection: 4 MiB each way, so a 1 MiB reply or
 * write payload passes in one or two syscalls instead of waiting on a
 * ~200 KiB default buffer several times (the native addon's SO_*BUFFORCE, as
 * root; best effort: without the addon or the privilege the defaults stay).
 */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/** Removes a leftover unix socket file from an earlier run; refuses a live one or anything else in the way. */
async function claimListenPath(path: string, address: string): Promise<void> {
  try {
    await claimUnixPath(path);
  } catch (err) {
    if (!(err instanceof UnixPathError)) throw err;
    const reason = err.live ? 'another server is answering on it; stop it or choose another path' : err.reason;
    throw new NbdListenError(address, reason, { cause: err });
  }
}
