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
import {
  type ConnectionOptions,
  createServer as createTlsServer,
  type PeerCertificate,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { adoptWithReader, directWriter } from '../../util/sockets.js';
import { explainDial } from './dial-errors.js';
import { LinkDialError, LinkProtocolError } from './errors.js';
import { LinkReader } from './link-reader.js';
import { HELLO_TIMEOUT_MS, StreamChannel } from './stream-channel.js';
import type { LinkChannel, LinkTransport, PeerHello, TransportAddress } from './transport.js';

/** PEM material of one host: the fabric CA, its certificate and key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

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
  /** Most connections in the handshake at once (more are refused). Default 64. */
  maxPending?: number | undefined;
}

/**
 * TLS 1.3 suites offered and accepted, fastest first: AES-128-GCM takes 10
 * AES rounds to AES-256's 14 at the same GHASH cost (Node's default puts
 * AES-256 first). Peers that prefer another suite still agree on one.
 */
export const LINK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

const fmt = (host: string | undefined, port: number | undefined) =>
  `tcp:${host?.includes(':') ? `[${host}]` : host}:${port}`;

/** The common name of a certificate, or undefined. */
function commonName(cert: PeerCertificate | undefined): string | undefined {
  const cn = cert?.subject?.CN as string | string[] | undefined;
  return Array.isArray(cn) ? cn[0] : cn;
}

export class TcpTransport implements LinkTransport {
  readonly kind: string;
  readonly #opts: TcpTransportOptions;
  readonly #log: Logger;
  #server: Server | undefined;
  readonly #channels = new Set<StreamChannel>();
  #pending = 0;
  #closed = false;
  /** Connections refused (failed TLS handshake, bad or refused hello). */
  refused = 0;

  constructor(opts: TcpTransportOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.kind = opts.tls ? 'tls' : 'tcp';
  }

  listen(address: TransportAddress, onChannel: (ch: LinkChannel) => void): Promise<TransportAddress> {
    const tls = this.#opts.tls;
    const server: Server = tls
      ? createTlsServer({
          ca: tls.ca,
          cert: tls.cert,
          key: tls.key,
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.3',
          ciphers: LINK_CIPHERS,
          honorCipherOrder: true,
          handshakeTimeout: HELLO_TIMEOUT_MS,
        })
      : createNetServer({ pauseOnConnect: true });
    const onSocket = (sock: Socket) => {
      const remote = fmt(sock.remoteAddress, sock.remotePort);
      if (this.#closed || this.#pending >= (this.#opts.maxPending ?? 64)) {
        this.#log.warn({ peer: remote }, `refused link connection from ${remote}: too many handshakes in progress`);
        sock.destroy();
        return;
      }
      if (tls) {
        this.#accept(sock, remote, onChannel);
        return;
      }
      // Nothing was read yet (pauseOnConnect): re-wrap the handle to read into a receive window.
      const reader = new LinkReader();
      this.#accept(adoptWithReader(sock, reader.onread), remote, onChannel, reader);
    };
    if (tls) {
      server.on('secureConnection', onSocket);
      // Addresses of connections in their TLS handshake: one that fails may have lost its own.
      const remotes = new WeakMap<object, string>();
      server.on('connection', (raw: Socket) => remotes.set(raw, fmt(raw.remoteAddress, raw.remotePort)));
      server.on('tlsClientError', (err, sock) => {
        this.refused++;
        const remote =
          sock.remoteAddress !== undefined
            ? fmt(sock.remoteAddress, sock.remotePort)
            : (remotes.get((sock as unknown as { _parent?: object })._parent ?? sock) ?? 'an unknown address');
        this.#log.warn(
          { peer: remote, reason: describeError(err) },
          `refused link peer ${remote}: TLS handshake failed (${describeError(err)}); it needs a certificate from this fabric's CA`,
        );
      });
    } else {
      server.on('connection', onSocket);
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

  #accept(sock: Socket, remote: string, onChannel: (ch: LinkChannel) => void, reader?: LinkReader): void {
    this.#pending++;
    const ch = this.#channel(sock, remote, false, reader);
    ch.handshake().then(
      () => {
        this.#pending--;
        if (this.#closed) {
          void ch.close('the daemon is stopping');
          return;
        }
        onChannel(ch);
      },
      (err: unknown) => {
        this.#pending--;
        this.refused++;
        this.#log.info({ peer: remote, reason: describeError(err) }, `link connection from ${remote} not established`);
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
      verify: tls
        ? (hello) => {
            const cn = commonName((sock as TLSSocket).getPeerCertificate());
            return cn === hello.host
              ? undefined
              : `its hello says host "${hello.host}" but its certificate is for "${cn ?? '(no common name)'}"`;
          }
        : undefined,
    });
    this.#channels.add(ch);
    sock.once('close', () => this.#channels.delete(ch));
    return ch;
  }

  dial(address: TransportAddress, signal?: AbortSignal): Promise<LinkChannel> {
    const where = fmt(address.host, address.port);
    const tls = this.#opts.tls;
    return new Promise<LinkChannel>((resolve, reject) => {
      if (this.#closed) {
        reject(new LinkDialError(where, 'the transport is closed'));
        return;
      }
      const reader = new LinkReader();
      const sock: Socket = tls
        ? tlsConnect({
            host: address.host,
            port: address.port,
            ca: tls.ca,
            cert: tls.cert,
            key: tls.key,
            minVersion: 'TLSv1.3',
            ciphers: LINK_CIPHERS,
            rejectUnauthorized: true,
            // The CA vouches for host ids, not addresses: the host id is checked against the hello below.
            checkServerIdentity: () => undefined,
            // Node passes `onread` to the socket of a TLS client too; its types do not list it.
            onread: reader.onread,
          } as ConnectionOptions)
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
            const why =
              err instanceof LinkProtocolError ? err.message.replace(/^link peer \S+: /, '') : describeError(err);
            fail(new LinkDialError(where, why, { cause: err }));
          },
        );
      });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const server = this.#server;
    const done = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    await Promise.all([...this.#channels].map((c) => c.close('the daemon is stopping')));
    await done;
  }
}
