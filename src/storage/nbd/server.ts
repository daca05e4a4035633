/**
 * The NBD server: listens on TCP and unix sockets, runs one
 * {@link NbdConnection} per client, and sends every client's requests to the
 * backends through one shared {@link IoScheduler} (DWRR by export weight).
 */
import { unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../log.js';
import { type Address, formatAddress } from '../../util/address.js';
import { AdmissionGate, type AdmissionStatus, isRefusal } from '../../util/admission.js';
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
  /**
   * TCP connections at once over all TCP listen addresses; when full, a
   * connection still in its handshake (the oldest of the source holding the
   * most) is closed for the new one, and only when none is the new one is
   * refused (docs/storage.md "Admission"); default 1024.
   */
  maxConnections?: number | undefined;
  /** TCP connections at once from one source (IPv4 address, IPv6 /64); default 64. */
  maxConnectionsPerSource?: number | undefined;
  /** Unix-socket connections at once (a budget apart from TCP's); default 1024. */
  maxUnixConnections?: number | undefined;
  /** A client must finish the handshake (TLS included) within this many ms; default 10000. */
  handshakeTimeoutMs?: number | undefined;
  /** TCP client addresses that may connect at all, checked at accept; undefined: every address. */
  allowedClients?: ((address: string) => boolean) | undefined;
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
  /** Connections now and refused since start, by reason (docs/storage.md "Admission"). */
  admission(): AdmissionStatus;
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
  override readonly status = 422;
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
  const gate = new AdmissionGate({
    name: 'NBD server',
    logger,
    limits: {
      maxConnections: opts.maxConnections ?? 1024,
      maxPerSource: opts.maxConnectionsPerSource ?? 64,
      maxUnix: opts.maxUnixConnections ?? 1024,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10_000,
      allowed: opts.allowedClients,
    },
    fields: ADMISSION_FIELDS,
  });
  const conns = new Set<NbdConnection>();
  const servers: { server: Server; address: Address }[] = [];
  let closing: Promise<void> | undefined;
  let destroyed = false;

  const onSocket = (accepted: Socket, unix: boolean): void => {
    if (closing || destroyed) {
      logger.debug({ peer: accepted.remoteAddress }, 'refusing NBD connection: server is shutting down');
      accepted.destroy();
      return;
    }
    let conn: NbdConnection | undefined;
    // Checked before anything is read: a refused client costs an accept and a close.
    const ticket = gate.admit(unix ? undefined : (accepted.remoteAddress ?? ''), () =>
      (conn?.socket ?? accepted).destroy(),
    );
    if (isRefusal(ticket)) {
      accepted.destroy();
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
      onEstablished: ticket.established,
      tls: opts.tls,
    });
    conn = c;
    if (reader) {
      reader.conn = c;
      socket.resume();
    }
    conns.add(c);
    void c.closed.then(() => {
      conns.delete(c);
      ticket.release();
    });
  };

  const listenOne = async (a: Address): Promise<void> => {
    if (a.type === 'udp') throw new NbdListenError(formatAddress(a), 'NBD runs over TCP or unix sockets, not UDP');
    // Paused at accept without TLS: adoptWithReader takes the handle before anything is read.
    const unix = a.type === 'unix';
    const server = createServer({ noDelay: true, pauseOnConnect: !opts.tls }, (sock) => onSocket(sock, unix));
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
    admission: () => gate.status(),
    close() {
      closing ??= (async () => {
        gate.close();
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
      gate.close();
      for (const c of conns) c.socket.destroy();
      await closeListeners();
    },
  };
}

/** The config fields that set each limit, named in the refusal report. */
const ADMISSION_FIELDS = {
  not_allowed: 'storage.allowed_clients',
  per_source: 'storage.max_connections_per_source',
  listener_full: 'storage.max_connections, storage.max_unix_connections',
  evicted: 'storage.max_connections',
  handshake_timeout: 'storage.handshake_timeout_ms',
} as const;

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
