/**
 * Certificates for hosts that join a fabric without their private key ever
 * leaving them (`vmlink cluster join`): the joining host makes its key and a
 * certificate signing request (CSR) with {@link createKeyAndCsr}; the issuer
 * checks the request's self-signature and signs it with {@link signCsr},
 * which sets the subject and extensions itself (the host id as CN, the host
 * id and its addresses as subjectAltName) and copies nothing from the
 * request but its public key. Keys are ECDSA P-256, as in ca.ts.
 *
 * Public keys are compared and pinned by {@link publicKeyFingerprint}: the
 * SHA-256 of the DER SubjectPublicKeyInfo, in hex (what kubeadm's
 * `--discovery-token-ca-cert-hash sha256:...` pins).
 */
import { createHash, createPublicKey } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CaFiles } from './ca.js';
import { CaError } from './errors.js';
import { exists, HOST_ID_RE, NEW_EC_KEY, openssl, randomSerial } from './openssl.js';

/** A host's own key and its signing request. */
export interface KeyAndCsr {
  /** Path of the private key (`<dir>/<host>.key`, mode 0600). */
  keyPath: string;
  /** The request, PEM, subject CN=<host>. */
  csrPem: string;
}

function checkHost(host: string): void {
  if (!HOST_ID_RE.test(host))
    throw new CaError(`"${host}" is not a host id: 1-32 letters, digits, '_', '.', '-' (not first)`);
}

/**
 * Makes `<dir>/<host>.key` (mode 0600, `dir` made with mode 0700) unless it
 * exists, and a signing request for it. An existing key is kept and reused,
 * so a join that is run again presents the same public key.
 */
export async function createKeyAndCsr(dir: string, host: string): Promise<KeyAndCsr> {
  checkHost(host);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyPath = join(dir, `${host}.key`);
  const subj = ['-subj', `/CN=${host}`];
  if (await exists(keyPath)) return { keyPath, csrPem: await openssl(['req', '-new', '-key', keyPath, ...subj]) };
  const csrPem = await openssl(['req', '-new', ...NEW_EC_KEY, '-keyout', keyPath, ...subj]);
  await chmod(keyPath, 0o600);
  return { keyPath, csrPem };
}

/** Options of {@link signCsr}. */
export interface SignOptions {
  /** The subject's common name: the host id. */
  cn: string;
  /** IP addresses for subjectAltName besides `DNS:<cn>` (e.g. the host's overlay address); default none. */
  ips?: string[];
  /** Validity in days; default 825. */
  days?: number;
}

/**
 * Signs `csrPem` with the CA `ca` and returns the certificate (PEM). openssl
 * verifies the request's self-signature (proof that the requester holds the
 * key); the subject and every extension come from `opts`, none from the
 * request. For TLS server and client use, like ca.ts hostCert().
 */
export async function signCsr(ca: CaFiles, csrPem: string, opts: SignOptions): Promise<string> {
  checkHost(opts.cn);
  const ips = opts.ips ?? [];
  for (const ip of ips) if (isIP(ip) === 0) throw new CaError(`"${ip}" is not an IP address for subjectAltName`);
  const san = [`DNS:${opts.cn}`, ...ips.map((ip) => `IP:${ip}`)].join(',');
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-sign-'));
  try {
    await writeFile(join(dir, 'req.csr'), csrPem);
    await writeFile(
      join(dir, 'ext'),
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
        `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`,
    );
    return await openssl([
      'x509',
      '-req',
      '-in',
      join(dir, 'req.csr'),
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      randomSerial(),
      '-days',
      String(opts.days ?? 825),
      '-subj',
      `/CN=${opts.cn}`,
      '-extfile',
      join(dir, 'ext'),
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The public key of a signing request, PEM. Its self-signature is not checked
 * here (`openssl req -verify` exits 0 on a bad one): {@link signCsr} checks it.
 */
export async function csrPublicKey(csrPem: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-csr-'));
  try {
    await writeFile(join(dir, 'req.csr'), csrPem);
    return await openssl(['req', '-in', join(dir, 'req.csr'), '-noout', '-pubkey']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** SHA-256 (hex) of the DER SubjectPublicKeyInfo of a PEM certificate, public key or private key. */
export function publicKeyFingerprint(pem: string): string {
  const spki = createPublicKey(pem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}
