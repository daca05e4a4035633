/**
 * The issuer's join endpoint: a small HTTPS server (node:https) on a fabric
 * host that holds the fabric CA key (an issuer, `issuer: true` in its
 * `members/<host>` record, `join: "IP:PORT"`). `vmlink cluster join TOKEN`
 * on a new host talks to it (join-client.ts; protocol in join-protocol.ts):
 *
 * 1. the new host fetches the CA certificate and pins it by the fingerprint
 *    in the token; everything after goes over TLS verified against it (this
 *    server's certificate is signed by the fabric CA; the issuer's host
 *    certificate does);
 * 2. it sends the token's `<id>.<secret>`, its host id and a CSR for a key
 *    it made itself (its private key never leaves it);
 * 3. the issuer checks the token (token.ts), checks that the host id is not
 *    a member with another key, signs the CSR with the host id as CN and the
 *    host's IPs as subjectAltName (src/pki/csr.ts), and consumes the token in
 *    one etcd transaction that also records the host's key under
 *    `certs/<host>` `{v: 1, key: sha256 of its public key, issued, expires}`;
 * 4. it answers the certificate, the CA, the etcd endpoints (with etcd's
 *    client TLS material when the fabric uses it) and the key prefix.
 *
 * A host id is "registered" when `members/<host>` or `certs/<host>` exists.
 * A join for it with the same public key (a join run again) is accepted;
 * with another key only by a token made with `rejoin: <host>`.
 *
 * It faces the network, so everything is bounded: connections (32, 4 per
 * source, each closed after one request and within 20 s, util/admission.ts),
 * header and body sizes (8 KiB, 16 KiB), joins in flight (4, each answered
 * within 10 s even when etcd hangs), and failures
 * per source (10 a minute, then the source is refused for the rest of the
 * minute). Bad input never throws out of the handler: a TLS or HTTP parse
 * failure is counted, a bad request answered with its error.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import type { Namespace } from 'etcd3';
import { describeError, VmlinkError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CaFiles } from '../pki/ca.js';
import { csrPublicKey, publicKeyFingerprint, signCsr } from '../pki/csr.js';
import { AdmissionGate, isRefusal, sourceKey } from '../util/admission.js';
import {
  JoinBadRequestError,
  JoinBusyError,
  JoinHostExistsError,
  JoinServerError,
  JoinUnavailableError,
} from './join-errors.js';
import { DEFAULT_LIMITS, FailureWindow, type JoinLimits, readBody } from './join-limits.js';
import {
  CA_PATH,
  type EtcdAccessPem,
  JOIN_PATH,
  type JoinAnswer,
  parseJoinAddress,
  validJoinRequest,
} from './join-protocol.js';
import { checkToken, consumeToken } from './token.js';

/** etcd access handed to joining hosts; file paths (PEM). */
export interface JoinEtcdAccess {
  endpoints: string[];
  /** The fabric's key prefix in etcd, e.g. `/vmlink/`. */
  prefix: string;
  /**
   * etcd client TLS: `ca` verifies etcd's server certificate. `cert`/`key`
   * are sent to joining hosts only when given: when etcd trusts the fabric
   * CA, a joined host's own certificate is its etcd client certificate.
   */
  tls?: { ca: string; cert?: string; key?: string };
}

/** A host that joined, for the caller's log or records. */
export interface JoinedHost {
  host: string;
  /** SHA-256 (hex) of its public key. */
  key: string;
  ips: string[];
  /** Where the request came from. */
  remote: string;
  /** It replaced the key of a registered host (a rejoin). */
  replaced: boolean;
}

/** Options of {@link startJoinServer}. */
export interface JoinServerOptions {
  /** Address to listen on, `IP:PORT` (`[v6]:PORT`); port 0 picks a free one. */
  listen: string;
  /** The fabric CA certificate and key files (PEM): the key signs joining hosts' certificates. */
  ca: CaFiles;
  /** This endpoint's TLS certificate and key files (PEM), signed by the fabric CA (e.g. the issuer's host certificate). */
  serverCert: { cert: string; key: string };
  /** The fabric's etcd namespace (etcd3 `client.namespace(prefix)`): `tokens/`, `members/`, `certs/`. */
  kv: Namespace;
  etcd: JoinEtcdAccess;
  logger: Logger;
  /** Called after each successful join. */
  onJoined?: (joined: JoinedHost) => void;
  limits?: Partial<JoinLimits>;
  /** Validity of the certificates it signs, days; default 825. */
  certDays?: number;
}

/** A running join endpoint. */
export interface JoinServer {
  /** The address it listens on, `IP:PORT`. */
  readonly address: string;
  /** Stops listening and closes every connection. Idempotent. */
  close(): Promise<void>;
}

async function readPem(what: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new JoinServerError(`join endpoint: cannot read ${what} ${path}: ${describeError(err)}`, { cause: err });
  }
}

/** Refuses to start with a CA key that is not the CA certificate's, or an endpoint certificate the CA did not sign. */
function checkMaterial(caPem: string, caKeyPem: string, serverPem: string, opts: JoinServerOptions): void {
  try {
    const ca = new X509Certificate(caPem);
    if (publicKeyFingerprint(caKeyPem) !== publicKeyFingerprint(caPem))
      throw new Error(`${opts.ca.key} is not the key of ${opts.ca.cert}`);
    const server = new X509Certificate(serverPem);
    if (!server.checkIssued(ca) || !server.verify(ca.publicKey))
      throw new Error(`${opts.serverCert.cert} is not signed by the fabric CA ${opts.ca.cert}`);
  } catch (err) {
    throw new JoinServerError(`join endpoint: ${describeError(err)}`, { cause: err });
  }
}

/**
 * `p`, or a JoinUnavailableError after `ms`: a join waiting on an etcd that
 * does not answer must not hold its in-flight place for ever.
 */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new JoinUnavailableError(
            `the issuer could not complete the join within ${ms} ms (etcd or openssl did not answer)`,
          ),
        ),
      ms,
    );
  });
  p.catch(() => undefined); // settled late: nobody waits for it any more
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    connection: 'close',
  });
  res.end(text);
}

/** Starts the join endpoint; resolves once it listens. */
export async function startJoinServer(opts: JoinServerOptions): Promise<JoinServer> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const log = opts.logger;
  const addr = parseJoinAddress(opts.listen);
  if (typeof addr === 'string') throw new JoinServerError(`join endpoint: listen address ${addr}`);
  const caPem = await readPem('the fabric CA certificate', opts.ca.cert);
  const etcd: EtcdAccessPem = { endpoints: opts.etcd.endpoints };
  if (opts.etcd.tls) {
    const t = opts.etcd.tls;
    etcd.tls = { ca: await readPem("etcd's CA certificate", t.ca) };
    if (t.cert !== undefined) etcd.tls.cert = await readPem('the etcd client certificate', t.cert);
    if (t.key !== undefined) etcd.tls.key = await readPem('the etcd client key', t.key);
  }
  const serverCertPem = await readPem('the endpoint certificate', opts.serverCert.cert);
  checkMaterial(caPem, await readPem('the fabric CA key', opts.ca.key), serverCertPem, opts);
  const joinAnswer = (cert: string): JoinAnswer => ({ cert, ca: caPem, etcd, prefix: opts.etcd.prefix });

  const failures = new FailureWindow(limits.maxFailuresPerMinute);
  let inFlight = 0;
  let busy = 0;
  const gate = new AdmissionGate({
    name: 'join endpoint',
    logger: log,
    limits: {
      maxConnections: limits.maxConnections,
      maxPerSource: limits.maxPerSource,
      maxUnix: 0,
      // Never established: each connection carries one request and lives at most this long.
      handshakeTimeoutMs: 20_000,
    },
  });
  const sockets = new Set<Socket>();

  const join = async (req: IncomingMessage, remote: string): Promise<JoinAnswer> => {
    const body = await readBody(req, limits.maxBodyBytes);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new JoinBadRequestError('the join request body is not JSON');
    }
    const r = validJoinRequest(parsed);
    const checked = await checkToken(opts.kv, r.token);
    let key: string;
    try {
      key = publicKeyFingerprint(await csrPublicKey(r.csr));
    } catch (err) {
      if (/not installed/.test(describeError(err))) throw new JoinUnavailableError(describeError(err));
      throw new JoinBadRequestError(`"csr" is not a readable certificate request: ${describeError(err)}`);
    }
    const [member, certs] = await Promise.all([
      opts.kv.get(`members/${r.host}`).exec(),
      opts.kv.get(`certs/${r.host}`).exec(),
    ]);
    const certsKv = certs.kvs[0];
    let recordedKey: unknown;
    try {
      recordedKey = certsKv && (JSON.parse(certsKv.value.toString('utf8')) as { key?: unknown }).key;
    } catch {
      recordedKey = undefined;
    }
    const registered = member.kvs.length > 0 || certsKv !== undefined;
    const replaced = registered && recordedKey !== key;
    if (replaced && checked.rejoin !== r.host) throw new JoinHostExistsError(r.host);
    const days = opts.certDays ?? 825;
    let cert: string;
    try {
      cert = await signCsr(opts.ca, r.csr, { cn: r.host, ips: r.ips ?? [], days });
    } catch (err) {
      // The request was readable (csrPublicKey): a refusal now is its self-signature.
      if (/self-signature|verify/i.test(describeError(err)))
        throw new JoinBadRequestError(`"csr" was refused: ${describeError(err)}`);
      throw new JoinUnavailableError(`the issuer could not sign the certificate: ${describeError(err)}`, {
        cause: err,
      });
    }
    const issued = new Date();
    const record = {
      v: 1,
      key,
      issued: issued.toISOString(),
      expires: new Date(issued.getTime() + days * 86_400_000).toISOString(),
    };
    const consumed = await consumeToken(opts.kv, checked, r.token, r.host, {
      unchanged: [
        { key: `members/${r.host}`, modRevision: member.kvs[0]?.mod_revision ?? '0' },
        { key: `certs/${r.host}`, modRevision: certsKv?.mod_revision ?? '0' },
      ],
      puts: [{ key: `certs/${r.host}`, value: JSON.stringify(record) }],
    });
    if (!consumed) throw new JoinHostExistsError(r.host);
    const joined: JoinedHost = { host: r.host, key, ips: r.ips ?? [], remote, replaced };
    log.info(joined, `host "${r.host}" joined the fabric from ${remote}${replaced ? ' (its key replaced)' : ''}`);
    try {
      opts.onJoined?.(joined);
    } catch (err) {
      log.error({ err: describeError(err) }, 'join endpoint: onJoined failed');
    }
    return joinAnswer(cert);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const ip = req.socket.remoteAddress ?? '';
    const source = sourceKey(ip);
    const remote = `${ip}:${req.socket.remotePort}`;
    try {
      if (req.method === 'GET' && req.url === CA_PATH) {
        answer(res, 200, { ca: caPem });
        return;
      }
      if (req.method !== 'POST' || req.url !== JOIN_PATH)
        throw new JoinBadRequestError(`no such endpoint: ${req.method} ${req.url?.slice(0, 64)}`);
      if (failures.blocked(source, Date.now()))
        throw new JoinBusyError(`too many refused requests from ${source} in the last minute`);
      if (inFlight >= limits.maxInFlight) throw new JoinBusyError(`${inFlight} joins are in progress`);
      inFlight++;
      try {
        answer(res, 200, await withDeadline(join(req, remote), limits.joinTimeoutMs));
      } finally {
        inFlight--;
      }
    } catch (err) {
      const e =
        err instanceof VmlinkError
          ? err
          : new JoinUnavailableError(`the issuer cannot reach the fabric store: ${describeError(err)}`);
      if (e instanceof JoinBusyError) {
        // Counted, not logged one by one: a source hammering the endpoint must not flood the log.
        busy++;
        log.debug({ remote, busy }, `join endpoint: ${e.message}`);
      } else if (e.status === 503) log.error({ remote, code: e.code }, `join endpoint: ${e.message}`);
      else {
        log.warn({ remote, code: e.code }, `join endpoint: refused a request from ${remote}: ${e.message}`);
        if (failures.fail(source, Date.now()))
          log.warn(
            { source },
            `join endpoint: ${source} is refused for the rest of the minute after repeated failures`,
          );
      }
      answer(res, e.status, { error: { code: e.code, message: e.message } });
      // A body left unread (too large, or refused before reading) is not drained: the connection closes.
      if (!req.complete) res.once('finish', () => req.socket.destroy());
    }
  };

  const server: Server = createServer(
    {
      cert: serverCertPem,
      key: await readPem('the endpoint key', opts.serverCert.key),
      minVersion: 'TLSv1.2',
      handshakeTimeout: 10_000,
      maxHeaderSize: 8192,
      requestTimeout: 15_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 1000,
    },
    (req, res) => {
      void handle(req, res);
    },
  );
  server.prependListener('connection', (raw: Socket) => {
    const t = gate.admit(raw.remoteAddress ?? '', () => raw.destroy());
    if (isRefusal(t)) {
      raw.destroy();
      return;
    }
    sockets.add(raw);
    raw.once('close', () => {
      t.release();
      sockets.delete(raw);
    });
  });
  // Garbage instead of TLS, or instead of HTTP inside it: close the connection, count it, log it only at debug.
  let garbage = 0;
  server.on('tlsClientError', (err, sock) => {
    garbage++;
    log.debug({ err: describeError(err), garbage }, 'join endpoint: TLS handshake failed');
    sock.destroy();
  });
  server.on('clientError', (err, sock) => {
    garbage++;
    log.debug({ err: describeError(err), garbage }, 'join endpoint: bad HTTP request');
    sock.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new JoinServerError(`join endpoint: cannot listen on ${opts.listen}: ${describeError(err)}`)),
    );
    server.listen({ host: addr.host, port: addr.port }, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => log.error({ err: describeError(err) }, 'join endpoint error'));
      resolve();
    });
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? bound.port : addr.port;
  const address = `${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${port}`;
  log.info({ address }, `join endpoint listening on ${address}`);

  let closed: Promise<void> | undefined;
  return {
    address,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        gate.close();
      });
      return closed;
    },
  };
}
