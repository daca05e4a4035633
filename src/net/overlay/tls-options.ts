/**
 * TLS 1.3 with mutual authentication for links (docs/overlay.md "TLS"): the
 * options of the listening and the dialling side, and the check that a
 * peer's hello speaks for the host its certificate names.
 */
import type { OnReadOpts, Socket } from 'node:net';
import type { ConnectionOptions, PeerCertificate, TLSSocket, TlsOptions } from 'node:tls';
import type { PeerHello } from './transport.js';

/** PEM material of one host: the fabric CA, its certificate and key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

/**
 * TLS 1.3 suites offered and accepted, fastest first: AES-128-GCM takes 10
 * AES rounds to AES-256's 14 at the same GHASH cost (Node's default puts
 * AES-256 first). Peers that prefer another suite still agree on one.
 */
export const LINK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** The listener's options: a client certificate from the CA is required. `handshakeTimeout` in ms. */
export function serverOptions(tls: TlsMaterial, handshakeTimeout: number): TlsOptions {
  return {
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ciphers: LINK_CIPHERS,
    honorCipherOrder: true,
    handshakeTimeout,
  };
}

/** The dialler's options to `host:port`; `onread` is the receive window records are parsed in (link-reader.ts). */
export function clientOptions(tls: TlsMaterial, host: string, port: number, onread: OnReadOpts): ConnectionOptions {
  return {
    host,
    port,
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    minVersion: 'TLSv1.3',
    ciphers: LINK_CIPHERS,
    rejectUnauthorized: true,
    // The CA vouches for host ids, not addresses: the host id is checked against the hello (verifyHello).
    checkServerIdentity: () => undefined,
    // Node passes `onread` to the socket of a TLS client too; its types do not list it.
    onread,
  } as ConnectionOptions;
}

/** The common name of a certificate, or undefined. */
function commonName(cert: PeerCertificate | undefined): string | undefined {
  const cn = cert?.subject?.CN as string | string[] | undefined;
  return Array.isArray(cn) ? cn[0] : cn;
}

/** A check of the peer's hello on TLS socket `sock`: why it is refused (its host id is not its certificate's), or undefined. */
export function verifyHello(sock: Socket): (hello: PeerHello) => string | undefined {
  return (hello) => {
    const cn = commonName((sock as TLSSocket).getPeerCertificate());
    return cn === hello.host
      ? undefined
      : `its hello says host "${hello.host}" but its certificate is for "${cn ?? '(no common name)'}"`;
  };
}

/** The plain socket under a TLS socket the server accepted (Node keeps it as `_parent`). */
export const rawOf = (tls: Socket): Socket | undefined => (tls as unknown as { _parent?: Socket })._parent;
