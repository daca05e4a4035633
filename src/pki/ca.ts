/**
 * The fabric's certificate authority, made with the openssl command (the
 * `openssl` Debian package; Node cannot issue X.509 certificates itself).
 * Why openssl and not a JavaScript X.509 library: it is the most used and
 * audited implementation, already on every host that has Node's own
 * OpenSSL-based TLS, adds no npm dependency, and only `vmlink ca init` and
 * `vmlink host cert` call it (never the daemon).
 *
 * Keys are ECDSA P-256. The CA certificate is `ca.pem` with `ca.key` (mode
 * 0600) in the CA directory; a host gets `<host>.pem` and `<host>.key` with
 * its host id as the common name, for TLS server and client use, plus a copy
 * of `ca.pem`, in its output directory.
 */
import { chmod, copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CaError } from './errors.js';
import { exists, HOST_ID_RE, NEW_EC_KEY, openssl, randomSerial } from './openssl.js';

export interface CaFiles {
  cert: string;
  key: string;
}

/** Creates a CA in `dir` (made with mode 0700); refuses to overwrite one unless `force`. */
export async function caInit(
  dir: string,
  opts: { name?: string; days?: number; force?: boolean } = {},
): Promise<CaFiles> {
  const cert = join(dir, 'ca.pem');
  const key = join(dir, 'ca.key');
  if (!opts.force && ((await exists(cert)) || (await exists(key))))
    throw new CaError(`${dir} already holds a CA (ca.pem/ca.key); use another directory, or --force to replace it`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const cn = `vmlink fabric CA${opts.name ? ` ${opts.name}` : ''}`.slice(0, 64);
  await openssl([
    'req',
    '-x509',
    '-new',
    ...NEW_EC_KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    String(opts.days ?? 3650),
    '-subj',
    `/CN=${cn}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await chmod(key, 0o600);
  return { cert, key };
}

export interface HostCertFiles {
  ca: string;
  cert: string;
  key: string;
}

/** Issues a certificate for `host` from the CA in `caDir` into `outDir` (with a copy of ca.pem). */
export async function hostCert(
  caDir: string,
  host: string,
  outDir: string,
  opts: { days?: number; force?: boolean } = {},
): Promise<HostCertFiles> {
  if (!HOST_ID_RE.test(host))
    throw new CaError(`"${host}" is not a host id: 1-32 letters, digits, '_', '.', '-' (not first)`);
  const caCert = join(caDir, 'ca.pem');
  const caKey = join(caDir, 'ca.key');
  if (!(await exists(caCert)) || !(await exists(caKey)))
    throw new CaError(`${caDir} holds no CA (ca.pem and ca.key); make one with: vmlink ca init --dir ${caDir}`);
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  const cert = join(outDir, `${host}.pem`);
  const key = join(outDir, `${host}.key`);
  if (!opts.force && ((await exists(cert)) || (await exists(key))))
    throw new CaError(`${outDir} already holds a certificate for "${host}"; use --force to replace it`);
  const tmp = join(outDir, `.${host}.${process.pid}`);
  try {
    await writeFile(
      `${tmp}.ext`,
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n',
    );
    await openssl(['req', '-new', ...NEW_EC_KEY, '-keyout', key, '-out', `${tmp}.csr`, '-subj', `/CN=${host}`]);
    await chmod(key, 0o600);
    await openssl([
      'x509',
      '-req',
      '-in',
      `${tmp}.csr`,
      '-CA',
      caCert,
      '-CAkey',
      caKey,
      '-set_serial',
      randomSerial(),
      '-days',
      String(opts.days ?? 825),
      '-extfile',
      `${tmp}.ext`,
      '-out',
      cert,
    ]);
    const caCopy = join(outDir, 'ca.pem');
    if (caCopy !== caCert) await copyFile(caCert, caCopy);
    return { ca: caCopy, cert, key };
  } finally {
    await rm(`${tmp}.ext`, { force: true });
    await rm(`${tmp}.csr`, { force: true });
  }
}
