/**
 * TLS for the NBD server (proto.md "TLS support"): the settings a server runs
 * with, loading them from PEM files, and upgrading a client's socket after
 * `NBD_OPT_STARTTLS` was acknowledged.
 */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls';
import { StorageError } from '../errors.js';

/**
 * `required`: FORCEDTLS, every option other than STARTTLS and ABORT is
 * refused with `NBD_REP_ERR_TLS_REQD` until TLS is up. `optional`:
 * SELECTIVETLS, clients may upgrade; exports marked `tlsOnly` need it.
 */
export type NbdTlsMode = 'required' | 'optional';

/** What the server needs to offer TLS. */
export interface NbdTls {
  /** Certificate, key and (for client certificates) the CA. */
  context: SecureContext;
  /** See {@link NbdTlsMode}. */
  mode: NbdTlsMode;
  /** Ask every client for a certificate signed by the CA and refuse clients without one. */
  verifyClients: boolean;
}

/** TLS settings as file paths (the config's `storage.tls`). */
export interface NbdTlsFiles {
  /** PEM server certificate (chain). */
  cert: string;
  /** PEM private key of the certificate. */
  key: string;
  /** PEM CA certificate(s) that sign client certificates; needed with `verifyClients`. */
  ca?: string | undefined;
  /** Default false. */
  verifyClients?: boolean | undefined;
  /** Default `required`. */
  mode?: NbdTlsMode | undefined;
}

/** TLS settings that cannot be used: a file is missing or not PEM, the key does not fit the certificate. */
export class NbdTlsConfigError extends StorageError {
  override readonly status = 400;
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_NBD_TLS_CONFIG', message, options);
  }
}

/** Reads the PEM files and builds the TLS context; throws ERR_NBD_TLS_CONFIG naming the file at fault. */
export async function loadNbdTls(files: NbdTlsFiles): Promise<NbdTls> {
  const read = async (what: string, path: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new NbdTlsConfigError(`TLS ${what} ${path} cannot be read: ${(err as Error).message}`, { cause: err });
    }
  };
  const verifyClients = files.verifyClients ?? false;
  if (verifyClients && !files.ca)
    throw new NbdTlsConfigError('TLS verify_clients needs a ca file: the CA that signs client certificates');
  const cert = await read('certificate', files.cert);
  const key = await read('key', files.key);
  const ca = files.ca ? await read('CA certificate', files.ca) : undefined;
  let context: SecureContext;
  try {
    // proto.md "TLS versions": TLS 1.2 or later only.
    context = createSecureContext({ cert, key, ...(ca ? { ca } : {}), minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new NbdTlsConfigError(
      `TLS certificate ${files.cert} and key ${files.key} cannot be used: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { context, mode: files.mode ?? 'required', verifyClients };
}

/**
 * Starts the server side of a TLS session on a socket whose NBD_REP_ACK to
 * STARTTLS has been written. Must run in the same tick as that write: the
 * client sends its ClientHello only once it has the ACK, so no byte of it has
 * been read from the plain socket yet.
 */
export function upgradeToTls(socket: Socket, tls: NbdTls): TLSSocket {
  return new TLSSocket(socket, {
    isServer: true,
    secureContext: tls.context,
    requestCert: tls.verifyClients,
    rejectUnauthorized: tls.verifyClients,
  });
}
