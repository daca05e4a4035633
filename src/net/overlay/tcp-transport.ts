/**
 * The TCP transport of links, plain or TLS 1.3 with mutual authentication
 * (docs/overlay.md). One listener per daemon; dialling makes one attempt
 * per call (the overlay retries with backoff).
 *
 * With TLS both ends present a certificate issued by the fabric CA; the
 * handshake fails for anyone else (logged as a refused peer). The host id in
 * the peer's hello must equal the common name of its certificate, so a host
 * cannot speak for another. Addresses are not checked against the
 * certificate (hosts move between addresses; the CA vouches for host ids).
 */
import { createServer as createNetServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { AdmissionGate, type AdmissionStatus, type AdmissionTicket, isRefusal } from '../../util/admission.js';
import { adoptWithReader, directWriter } from '../../util/sockets.js';
import { explainDial } from './dial-errors.js';
import { LinkDialError, LinkProtocolError } from './errors.js';
import { HELLO_TIMEOUT_MS } from './hello.js';
import { LinkReader } from './link-reader.js';
import { RefusalLog } from './link-refusals.js';
import { StreamChannel } from './stream-channel.js';
import { clientOptions, rawOf, serverOptions, type TlsMaterial, verifyHello } from './tls-options.js';
import type { LinkChannel, LinkTransport, PeerHello, TransportAddress } from './transport.js';

export type { TlsMaterial };

export interface TcpTransportOptions {
  logger: Logger;
  /** Our hello, read at each handshake (networks change). */
  hello: () => PeerHello;
  /** TLS material; undefined: plain TCP (trusted labs only). */
  tls?: TlsMaterial | undefined;
  /** Keepalive interval, ms. */
  keepaliveMs: number;
  /** Egress bound per channel, bytes. */
  queueBytes?: number | undefined;
  /**
   * Inbound connections at once, in the handshake and established; when
   * full, one still in its handshake (the oldest of the source holding the
   * most) is closed for the new one (docs/overlay.md "Admission"). Default 256.
   */
  maxConnections?: number | undefined;
  /** Inbound connections at once from one source address (IPv6: one /64). Default 8. */
  maxConnectionsPerSource?: number | undefined;
  /**
   * An inbound connection must finish TLS and send a valid hello within this
   * many ms. Default 5000; keep it below the link protocol's own hello
   * deadline (HELLO_TIMEOUT_MS, 10 s), which otherwise ends it first.
   */
  helloTimeoutMs?: number | undefined;
  /** Source addresses that may connect at all, checked at accept; undefined: every address. */
  allowedClients?: ((address: string) => boolean) | undefined;
}

/** An inbound connection's place in the admission budget. */
interface Admitted {
  ticket: AdmissionTicket;
  /** The socket accepted (under TLS, the TLS socket's transport). */
  raw: Socket;
  /** `tcp:HOST:PORT` (`tls:` with TLS) of the peer. */
  remote: string;
  /** The socket the connection goes on with: re-wrapped (plain) or the TLS socket. */
  sock: Socket;
}

/** The config fields that set each limit, named in the refusal report. */
const ADMISSION_FIELDS = {
  not_allowed: 'overlay.allowed_clients',
  per_source: 'overlay.max_connections_per_source',
  listener_full: 'overlay.max_connections',
  evicted: 'overlay.max_connections',
  handshake_timeout: 'overlay.hello_timeout_ms',
} as const;

/** `KIND:HOST:PORT`, IPv6 in brackets: how links show the address of a peer. */
const fmt = (kind: string, host: string | undefined, port: number | undefined) =>
  `${kind}:${host?.includes(':') ? `[${host}]` : host}:${port}`;

export class TcpTransport implements LinkTransport {
  readonly kind: string;
  readonly #opts: TcpTransportOptions;
  readonly #log: Logger;
  #server: Server | undefined;
  readonly #channels = new Set<StreamChannel>();
  readonly #gate: AdmissionGate;
  /** Admitted TLS connections by raw socket, until their TLS handshake is done. */
  readonly #admitted = new WeakMap<Socket, Admitted>();
  /** Raw sockets admission refused or closed: counted there, not logged one by one. */
  readonly #dropped = new WeakSet<Socket>();
  #closed = false;
  readonly #refusals: RefusalLog;
  /** Connections refused (failed TLS handshake, bad or refused hello); admission's refusals are counted apart. */
  refused = 0;

  constructor(opts: TcpTransportOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.kind = opts.tls ? 'tls' : 'tcp';
    this.#refusals = new RefusalLog(opts.logger);
    this.#gate = new AdmissionGate({
      name: 'link listener',
      logger: opts.logger,
      limits: {
        maxConnections: opts.maxConnections ?? 256,
        maxPerSource: opts.maxConnectionsPerSource ?? 8,
        maxUnix: 0,
        handshakeTimeoutMs: opts.helloTimeoutMs ?? 5000,
        allowed: opts.allowedClients,
      },
      fields: ADMISSION_FIELDS,
    });
  }

  /** Inbound connections now and refused since start, by reason (`GET /v1/status` `admission.links`). */
  admission(): AdmissionStatus {
    return this.#gate.status();
  }

  /**
   * Admission of an inbound socket, before TLS or any byte is read:
   * undefined when refused (the socket is then closed).
   */
  #admit(raw: Socket): Admitted | undefined {
    if (this.#closed) {
      raw.destroy();
      return undefined;
    }
    const a = { raw, sock: raw, remote: fmt(this.kind, raw.remoteAddress, raw.remotePort) } as Admitted;
    const t = this.#gate.admit(raw.remoteAddress ?? '', () => {
      this.#dropped.add(raw);
      a.sock.destroy();
    });
    if (isRefusal(t)) {
      this.#dropped.add(raw);
      raw.destroy();
      return undefined;
    }
    a.ticket = t;
    return a;
  }

  listen(address: TransportAddress, onChannel: (ch: LinkChannel) => void): Promise<TransportAddress> {
    const tls = this.#opts.tls;
    const server: Server = tls
      ? // The handshake timeout is a backstop only: admission closes a connection without a hello first, counted, without a log line each.
        createTlsServer(serverOptions(tls, this.#gate.admission.limits.handshakeTimeoutMs + HELLO_TIMEOUT_MS))
      : createNetServer({ pauseOnConnect: true });
    if (tls) {
      // Before the TLS server's own listener starts a handshake on it.
      server.prependListener('connection', (raw: Socket) => {
        const a = this.#admit(raw);
        if (!a) return;
        this.#admitted.set(raw, a);
        raw.once('close', a.ticket.release);
      });
      server.on('secureConnection', (sock: TLSSocket) => {
        const raw = rawOf(sock);
        const a = raw && this.#admitted.get(raw);
        if (!a) {
          sock.destroy();
          return;
        }
        this.#admitted.delete(a.raw);
        a.sock = sock;
        this.#accept(sock, a, onChannel);
      });
      server.on('tlsClientError', (err, sock) => {
        const raw = rawOf(sock);
        if (raw && this.#dropped.has(raw)) return;
        this.refused++;
        const remote = (raw && this.#admitted.get(raw)?.remote) ?? fmt(this.kind, sock.remoteAddress, sock.remotePort);
        this.#refusals.tlsFailed(remote, err, raw?.bytesRead ?? 0);
      });
    } else {
      server.on('connection', (raw: Socket) => {
        const a = this.#admit(raw);
        if (!a) return;
        // Nothing was read yet (pauseOnConnect): re-wrap the handle to read into a receive window.
        const reader = new LinkReader();
        a.sock = adoptWithReader(raw, reader.onread);
        a.sock.once('close', a.ticket.release);
        this.#accept(a.sock, a, onChannel, reader);
      });
    }
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.#log.error({ err: describeError(err) }, 'link listener error'));
        this.#server = server;
        const a = server.address();
        resolve(typeof a === 'object' && a ? { host: a.address, port: a.port } : address);
      });
    });
  }

  #accept(sock: Socket, a: Admitted, onChannel: (ch: LinkChannel) => void, reader?: LinkReader): void {
    const remote = a.remote;
    const ch = this.#channel(sock, remote, false, reader);
    ch.handshake().then(
      () => {
        a.ticket.established();
        if (this.#closed) {
          void ch.close('the daemon is stopping');
          return;
        }
        onChannel(ch);
      },
      (err: unknown) => {
        if (this.#dropped.has(a.raw)) return;
        this.refused++;
        this.#refusals.helloFailed(remote, err);
      },
    );
  }

  #channel(sock: Socket, remote: string, outbound: boolean, reader: LinkReader | undefined): StreamChannel {
    const tls = this.#opts.tls;
    const ch = new StreamChannel(sock, {
      kind: this.kind,
      outbound,
      remote,
      hello: this.#opts.hello(),
      logger: this.#log,
      keepaliveMs: this.#opts.keepaliveMs,
      queueBytes: this.#opts.queueBytes,
      reader,
      direct: tls ? undefined : directWriter(sock),
      verify: tls ? verifyHello(sock) : undefined,
    });
    this.#channels.add(ch);
    sock.once('close', () => this.#channels.delete(ch));
    return ch;
  }

  dial(address: TransportAddress, signal?: AbortSignal): Promise<LinkChannel> {
    const where = fmt(this.kind, address.host, address.port);
    const tls = this.#opts.tls;
    return new Promise<LinkChannel>((resolve, reject) => {
      if (this.#closed) {
        reject(new LinkDialError(where, 'the transport is closed'));
        return;
      }
      const reader = new LinkReader();
      const sock: Socket = tls
        ? tlsConnect(clientOptions(tls, address.host, address.port, reader.onread))
        : netConnect({ host: address.host, port: address.port, onread: reader.onread });
      const timer = setTimeout(
        () => fail(new Error(`no answer within ${HELLO_TIMEOUT_MS / 1000} s`)),
        HELLO_TIMEOUT_MS,
      );
      const onAbort = () => fail(new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      let settled = false;
      function fail(err: Error) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        sock.destroy();
        reject(err instanceof LinkDialError ? err : new LinkDialError(where, explainDial(err), { cause: err }));
      }
      sock.once('error', fail);
      sock.once(tls ? 'secureConnect' : 'connect', () => {
        sock.off('error', fail);
        clearTimeout(timer);
        const ch = this.#channel(sock, where, true, reader);
        ch.handshake().then(
          () => {
            settled = true;
            signal?.removeEventListener('abort', onAbort);
            resolve(ch);
          },
          (err: unknown) => {
            const why = err instanceof LinkProtocolError ? err.reason : explainDial(err);
            fail(new LinkDialError(where, why, { cause: err }));
          },
        );
      });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#gate.close();
    const server = this.#server;
    const done = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    await Promise.all([...this.#channels].map((c) => c.close('the daemon is stopping')));
    await done;
  }
}
