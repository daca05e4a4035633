/**
 * Test certificates made at test time with the openssl CLI: a CA, a server
 * certificate for localhost / 127.0.0.1 / ::1 and a client certificate, laid
 * out as both libnbd (`tls-certificates=DIR`) and QEMU (`tls-creds-x509,dir=DIR`)
 * expect: ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
 * client-key.pem.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

async function openssl(args: string[], cwd: string): Promise<void> {
  await exec('openssl', args, { cwd, timeout: 30_000 });
}

export interface CertDir {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/**
 * Writes a CA and certificates signed by it into `dir`. `client: false`
 * leaves the client certificate out (a client that has none).
 */
export async function makeCerts(dir: string, opts: { client?: boolean; cn?: string } = {}): Promise<CertDir> {
  await mkdir(dir, { recursive: true });
  const days = ['-days', '2'];
  await openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca-key.pem'].concat(
      ['-out', 'ca-cert.pem', '-subj', `/CN=${opts.cn ?? 'vmlink test CA'}`, ...days],
      ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ),
    dir,
  );
  const leaf = async (name: string, cn: string, ext: string): Promise<void> => {
    await openssl(
      ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-key.pem`].concat([
        '-out',
        `${name}.csr`,
        '-subj',
        `/CN=${cn}`,
      ]),
      dir,
    );
    await writeFile(join(dir, `${name}.ext`), ext);
    await openssl(
      ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial'].concat([
        '-out',
        `${name}-cert.pem`,
        '-extfile',
        `${name}.ext`,
        ...days,
      ]),
      dir,
    );
  };
  await leaf(
    'server',
    'localhost',
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n',
  );
  if (opts.client !== false)
    await leaf(
      'client',
      'vmlink-test-client',
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n',
    );
  return {
    dir,
    ca: join(dir, 'ca-cert.pem'),
    serverCert: join(dir, 'server-cert.pem'),
    serverKey: join(dir, 'server-key.pem'),
    clientCert: join(dir, 'client-cert.pem'),
    clientKey: join(dir, 'client-key.pem'),
  };
}
