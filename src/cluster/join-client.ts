/**
 * The joining host's side of `vmlink cluster join TOKEN` (the issuer's side
 * and the steps are in join.ts, the wire in join-protocol.ts). For each join
 * address of the token, in order:
 *
 * 1. fetch the CA certificate over TLS without verification, and accept it
 *    only if it is a CA whose public key has the SHA-256 the token pins
 *    (else try the next address; none: ERR_JOIN_CA_MISMATCH, nothing sent);
 * 2. send the credential, the host id and a CSR for the host's own key
 *    (made here, reused if `<keyDir>/<host>.key` exists) over TLS verified
 *    against that CA. The server name is not checked: any certificate the
 *    fabric CA signed is a fabric host, and join addresses are bare IPs;
 * 3. check the answer (the certificate is signed by the pinned CA, names the
 *    host, holds our public key) and write the files.
 *
 * An address that cannot be reached is skipped; a refusal from an issuer
 * (bad, expired or used token, host exists) is final: the token may be
 * consumed, so no other issuer is asked.
 */
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { describeError } from '../errors.js';
import { createKeyAndCsr, publicKeyFingerprint } from '../pki/csr.js';
import { JoinCaMismatchError, JoinRefusedError, JoinUnavailableError } from './join-errors.js';
import { CA_PATH, JOIN_PATH, type JoinAnswer, type JoinRequest, parseJoinAddress } from './join-protocol.js';
import { parseToken } from './token.js';

/** Largest answer read from an issuer, bytes. */
const MAX_ANSWER = 1 << 20;
const STATUSES = new Set([400, 403, 404, 409, 413, 422, 500, 503]);

/** Options of {@link joinFabric}. */
export interface JoinFabricOptions {
  /** The token `vmlink cluster token` printed. */
  token: string;
  /** This host's id: its certificate's CN. */
  hostId: string;
  /** Directory for this host's files (made with mode 0700); see {@link JoinedFabric}. */
  keyDir: string;
  /** This host's IP addresses for its certificate's subjectAltName (its overlay address); default none. */
  ips?: string[];
  /** Time allowed for each request, ms; default 15000. */
  timeoutMs?: number;
}

/** What a join leaves on the host: file paths (PEM) and the fabric's etcd settings. */
export interface JoinedFabric {
  /** `<keyDir>/<host>.pem`: the host certificate, signed by the fabric CA. */
  certPath: string;
  /** `<keyDir>/<host>.key` (mode 0600): made on this host, never sent. */
  keyPath: string;
  /** `<keyDir>/ca.pem`: the fabric CA certificate. */
  caPath: string;
  etcd: {
    endpoints: string[];
    /**
     * etcd client TLS when the fabric uses it: `<keyDir>/etcd-ca.pem`, and
     * `etcd-client.pem`/`etcd-client.key` when the issuer sent them, else this
     * host's own certificate and key.
     */
    tls?: { ca: string; cert: string; key: string };
  };
  /** The fabric's key prefix in etcd. */
  prefix: string;
}

interface Answer {
  status: number;
  body: unknown;
}

/** One HTTPS request; rejects on a network or TLS failure, resolves with any answer. */
function call(address: string, path: string, body: string | undefined, ca: string | undefined, ms: number) {
  const a = parseJoinAddress(address);
  if (typeof a === 'string') return Promise.reject(new Error(a));
  return new Promise<Answer>((resolve, reject) => {
    const req = request(
      {
        host: a.host,
        port: a.port,
        method: body === undefined ? 'GET' : 'POST',
        path,
        agent: false,
        timeout: ms,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(ca === undefined
          ? { rejectUnauthorized: false }
          : { ca, rejectUnauthorized: true, checkServerIdentity: () => undefined }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER) req.destroy(new Error(`answer larger than ${MAX_ANSWER} bytes`));
          else chunks.push(c);
        });
        res.once('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            reject(new Error(`answered ${res.statusCode} with a body that is not JSON`));
            return;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.once('error', reject);
      },
    );
    req.once('timeout', () => req.destroy(new Error(`no answer within ${ms} ms`)));
    req.once('error', reject);
    req.end(body);
  });
}

/** The CA an address serves, if it is the pinned one; else why not. */
async function fetchCa(address: string, pin: string, ms: number): Promise<{ ca: string } | { why: string }> {
  let r: Answer;
  try {
    r = await call(address, CA_PATH, undefined, undefined, ms);
  } catch (err) {
    return { why: `unreachable: ${describeError(err)}` };
  }
  const ca = (r.body as { ca?: unknown } | null)?.ca;
  if (r.status !== 200 || typeof ca !== 'string') return { why: `answered ${r.status} without a CA certificate` };
  try {
    const fp = publicKeyFingerprint(ca);
    if (fp !== pin) return { why: `its CA's public key has sha256 ${fp}` };
    if (!new X509Certificate(ca).ca) return { why: 'its CA certificate is not a CA' };
  } catch (err) {
    return { why: `its CA certificate is unreadable: ${describeError(err)}` };
  }
  return { ca };
}

/** Checks the issuer's answer against the pinned CA and our key; what is wrong is a JoinUnavailableError. */
function checkAnswer(body: unknown, ca: string, host: string, keyFp: string, address: string): JoinAnswer {
  const bad = (why: string) => new JoinUnavailableError(`the issuer at ${address} answered ${why}`);
  const b = body as Partial<JoinAnswer> | null;
  if (typeof b?.cert !== 'string' || typeof b.ca !== 'string' || typeof b.prefix !== 'string')
    throw bad('without cert, ca and prefix');
  const e = b.etcd;
  if (!e || !Array.isArray(e.endpoints) || !e.endpoints.every((x) => typeof x === 'string'))
    throw bad('without etcd endpoints');
  if (e.tls !== undefined && (typeof e.tls.ca !== 'string' || (e.tls.cert === undefined) !== (e.tls.key === undefined)))
    throw bad('with incomplete etcd TLS material');
  if (b.ca.trim() !== ca.trim()) throw bad('with another CA than the one it served');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(b.cert);
  } catch (err) {
    throw bad(`with an unreadable certificate: ${describeError(err)}`);
  }
  const caCert = new X509Certificate(ca);
  if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) throw bad('with a certificate the CA did not sign');
  if (cert.subject !== `CN=${host}`) throw bad(`with a certificate for ${cert.subject}, not CN=${host}`);
  if (publicKeyFingerprint(b.cert) !== keyFp) throw bad("with a certificate for another key than this host's");
  return b as JoinAnswer;
}

async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

/**
 * Joins this host to the fabric of `token`: gets a certificate for a key
 * made here, the CA and the etcd settings, and writes them to `keyDir`.
 * Errors: JoinTokenInvalidError (malformed token, before anything is sent),
 * JoinCaMismatchError, JoinUnavailableError (no issuer reachable, or a bad
 * answer), JoinRefusedError (the issuer's refusal, with its code).
 */
export async function joinFabric(opts: JoinFabricOptions): Promise<JoinedFabric> {
  const t = parseToken(opts.token);
  const ms = opts.timeoutMs ?? 15_000;
  await mkdir(opts.keyDir, { recursive: true, mode: 0o700 });
  const { keyPath, csrPem } = await createKeyAndCsr(opts.keyDir, opts.hostId);
  const keyFp = publicKeyFingerprint(await readFile(keyPath, 'utf8'));
  const reasons: string[] = [];
  let mismatch = false;
  for (const address of t.join) {
    const got = await fetchCa(address, t.ca, ms);
    if ('why' in got) {
      reasons.push(got.why);
      mismatch ||= !got.why.startsWith('unreachable');
      continue;
    }
    const body: JoinRequest = {
      token: `${t.id}.${t.secret}`,
      host: opts.hostId,
      csr: csrPem,
      ...(opts.ips !== undefined ? { ips: opts.ips } : {}),
    };
    let r: Answer;
    try {
      r = await call(address, JOIN_PATH, JSON.stringify(body), got.ca, ms);
    } catch (err) {
      reasons.push(`join request failed: ${describeError(err)}`);
      continue;
    }
    if (r.status !== 200) {
      const e = (r.body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
      if (typeof e?.code === 'string' && /^ERR_[A-Z0-9_]+$/.test(e.code) && STATUSES.has(r.status))
        throw new JoinRefusedError(e.code, `issuer ${address}: ${String(e.message)}`, r.status);
      throw new JoinUnavailableError(`the issuer at ${address} answered ${r.status} without an error code`);
    }
    return await writeFiles(opts, checkAnswer(r.body, got.ca, opts.hostId, keyFp, address), keyPath);
  }
  if (mismatch) throw new JoinCaMismatchError(t.join, t.ca, reasons);
  throw new JoinUnavailableError(
    `no issuer could be reached: ${t.join.map((a, i) => `${a}: ${reasons[i] ?? '?'}`).join('; ')}`,
  );
}

async function writeFiles(opts: JoinFabricOptions, a: JoinAnswer, keyPath: string): Promise<JoinedFabric> {
  const dir = opts.keyDir;
  const certPath = join(dir, `${opts.hostId}.pem`);
  const caPath = join(dir, 'ca.pem');
  await writeAtomic(certPath, a.cert, 0o644);
  await writeAtomic(caPath, a.ca, 0o644);
  const out: JoinedFabric = { certPath, keyPath, caPath, etcd: { endpoints: a.etcd.endpoints }, prefix: a.prefix };
  const tls = a.etcd.tls;
  if (tls) {
    const etcdCa = join(dir, 'etcd-ca.pem');
    await writeAtomic(etcdCa, tls.ca, 0o644);
    out.etcd.tls = { ca: etcdCa, cert: certPath, key: keyPath };
    if (tls.cert !== undefined && tls.key !== undefined) {
      out.etcd.tls.cert = join(dir, 'etcd-client.pem');
      out.etcd.tls.key = join(dir, 'etcd-client.key');
      await writeAtomic(out.etcd.tls.cert, tls.cert, 0o644);
      await writeAtomic(out.etcd.tls.key, tls.key, 0o600);
    }
  }
  return out;
}
