/**
 * The join endpoint's wire protocol, HTTPS with JSON bodies, shared by the
 * issuer (join.ts) and the joining host (join-client.ts):
 *
 * - `GET /v1/join/ca` -> `{ca: PEM}`: the fabric CA certificate. Public; the
 *   joining host takes it over an unverified connection and accepts it only
 *   if its public key has the fingerprint the token pins.
 * - `POST /v1/join` `{token: "<id>.<secret>", host, csr: PEM, ips?: [IP]}`
 *   -> {@link JoinAnswer}, over a connection verified against that CA. The
 *   token's payload is not sent: the issuer needs only the credential.
 * - A refusal: `{error: {code, message}}` with the error's HTTP status
 *   (join-errors.ts).
 */
import { isIP } from 'node:net';
import { HOST_ID_RE } from '../pki/openssl.js';
import { parseAddress } from '../util/address.js';
import { JoinBadRequestError } from './join-errors.js';

export const CA_PATH = '/v1/join/ca';
export const JOIN_PATH = '/v1/join';
/** Largest CSR accepted, characters (a P-256 CSR is about 450). */
const MAX_CSR = 4096;
/** Most IP addresses a joining host may have in its certificate. */
const MAX_IPS = 8;

/** Parses a join address `IP:PORT` (`[v6]:PORT`); returns what is wrong as a string. */
export function parseJoinAddress(text: string): { host: string; port: number } | string {
  const a = parseAddress(`tcp:${text}`, ['tcp']);
  if (typeof a === 'string' || a.type === 'unix')
    return `"${text}" is not IP:PORT (or [IPv6]:PORT) with a port 0-65535`;
  return { host: a.host, port: a.port };
}

/** What a joining host sends. */
export interface JoinRequest {
  /** `<id>.<secret>` of the token. */
  token: string;
  /** The host id: the certificate's CN. */
  host: string;
  /** Certificate signing request, PEM, for the host's own key. */
  csr: string;
  /** The host's IP addresses for the certificate's subjectAltName (its overlay address). */
  ips?: string[];
}

/** etcd access for a joined host; PEM texts. */
export interface EtcdAccessPem {
  endpoints: string[];
  /** etcd's client TLS: the CA of its server certificate, and a client certificate when the fabric's own is not accepted by etcd. */
  tls?: { ca: string; cert?: string; key?: string };
}

/** What the issuer answers to a join. */
export interface JoinAnswer {
  /** The host's certificate, PEM, signed by the fabric CA. */
  cert: string;
  /** The fabric CA certificate, PEM. */
  ca: string;
  etcd: EtcdAccessPem;
  /** The fabric's key prefix in etcd (e.g. `/vmlink/`). */
  prefix: string;
}

const CSR_RE = /^-----BEGIN CERTIFICATE REQUEST-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE REQUEST-----\s*$/;

/** Checks a parsed request body; what is wrong is a JoinBadRequestError naming the field. */
export function validJoinRequest(body: unknown): JoinRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new JoinBadRequestError('the join request is not a JSON object');
  const { token, host, csr, ips } = body as Record<string, unknown>;
  if (typeof token !== 'string' || token.length > 64)
    throw new JoinBadRequestError('the join request has no "token" (<id>.<secret>)');
  if (typeof host !== 'string' || !HOST_ID_RE.test(host))
    throw new JoinBadRequestError(
      `"host" ${JSON.stringify(host)?.slice(0, 40)} is not a host id: 1-32 letters, digits, '_', '.', '-' (not first)`,
    );
  if (typeof csr !== 'string' || csr.length > MAX_CSR || !CSR_RE.test(csr))
    throw new JoinBadRequestError(`"csr" is not a PEM certificate request of at most ${MAX_CSR} characters`);
  if (ips !== undefined) {
    if (!Array.isArray(ips) || ips.length > MAX_IPS)
      throw new JoinBadRequestError(`"ips" is not a list of at most ${MAX_IPS} IP addresses`);
    for (const ip of ips)
      if (typeof ip !== 'string' || isIP(ip) === 0)
        throw new JoinBadRequestError(`"ips": ${JSON.stringify(ip)?.slice(0, 40)} is not an IP address`);
  }
  return { token, host, csr, ...(ips !== undefined ? { ips: ips as string[] } : {}) };
}
