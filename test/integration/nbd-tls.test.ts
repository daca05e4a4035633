/**
 * STARTTLS with real clients: nbdinfo and nbdcopy (libnbd, GnuTLS) with
 * `nbds://` URIs and qemu-img with `tls-creds-x509`, against a server in
 * TLS-required mode that verifies client certificates, and one in optional
 * mode with a TLS-only export. Certificates are made at test time (openssl).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileBackend } from '../../src/storage/backends/file.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { loadNbdTls } from '../../src/storage/nbd/tls.js';
import type { Address } from '../../src/util/address.js';
import { type RunningServer, run, runOk, sha256File, startServer } from '../helpers/nbd-peer.js';
import { type CertDir, makeCerts } from '../helpers/tls-certs.js';

const SIZE = 8 * 1024 * 1024;
let dir = '';
let pki: CertDir;
let strangerPki: CertDir;
/** Trusts our CA but has no client certificate. */
let caOnly = '';
let forced: RunningServer;
let selective: RunningServer;

const tcpPort = (s: RunningServer): number => {
  const a = s.server.addresses().find((x): x is Extract<Address, { type: 'tcp' }> => x.type === 'tcp');
  if (!a) throw new Error('no TCP listener');
  return a.port;
};
const nbds = (s: RunningServer, name: string, certs = pki.dir): string =>
  `nbds://localhost:${tcpPort(s)}/${name}?tls-certificates=${certs}`;
const tlsObject = (certs = pki.dir): string => `tls-creds-x509,id=tls0,dir=${certs},endpoint=client`;
const qemuOpts = (s: RunningServer, name: string): string =>
  `driver=raw,file.driver=nbd,file.host=localhost,file.port=${tcpPort(s)},file.export=${name},file.tls-creds=tls0`;
const listen = (sock: string): Address[] => [
  { type: 'tcp', host: '127.0.0.1', port: 0 },
  { type: 'unix', path: sock },
];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-tls-'));
  pki = await makeCerts(join(dir, 'pki'));
  strangerPki = await makeCerts(join(dir, 'stranger'), { cn: 'another CA' });
  caOnly = join(dir, 'ca-only');
  await mkdir(caOnly);
  await copyFile(pki.ca, join(caOnly, 'ca-cert.pem'));
  const tls = await loadNbdTls({ cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, verifyClients: true });
  forced = await startServer(
    dir,
    'forced',
    [
      { name: 'disk', backend: new MemoryBackend({ size: SIZE }) },
      // A file export: its reads come from the buffer pool and go back to it after the TLS socket took them.
      { name: 'other', backend: await FileBackend.open({ path: join(dir, 'other.img'), size: SIZE }) },
    ],
    { tls, listen: listen(join(dir, 'forced.sock')) },
  );
  const optional = await loadNbdTls({ cert: pki.serverCert, key: pki.serverKey, mode: 'optional' });
  selective = await startServer(
    dir,
    'selective',
    [
      { name: 'open', backend: new MemoryBackend({ size: SIZE }) },
      { name: 'secret', backend: new MemoryBackend({ size: SIZE }), tlsOnly: true },
    ],
    { tls: optional, listen: listen(join(dir, 'selective.sock')) },
  );
});

after(async () => {
  await forced?.close();
  await selective?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('NBD over TLS with real clients', { timeout: 180_000 }, () => {
  describe('TLS required, client certificates verified', () => {
    it('nbdinfo connects with nbds:// and reports a TLS session', async () => {
      const out = await runOk('nbdinfo', [nbds(forced, 'disk')]);
      assert.match(out, /with TLS/);
      assert.match(out, /export-size: 8388608/);
    });

    it('nbdinfo --list over TLS shows every export', async () => {
      const out = await runOk('nbdinfo', ['--list', '--json', nbds(forced, '')]);
      const names = (JSON.parse(out) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']);
      assert.deepEqual(names.sort(), ['disk', 'other']);
    });

    it('copies a random image in and out with nbdcopy over TLS, checksums equal', async () => {
      const src = join(dir, 'random.img');
      const back = join(dir, 'back.img');
      await writeFile(src, randomBytes(SIZE));
      await runOk('nbdcopy', [src, nbds(forced, 'disk')]);
      await runOk('nbdcopy', [nbds(forced, 'disk'), back]);
      assert.equal(await sha256File(back), await sha256File(src));
    });

    it('round-trips an image through qemu-img convert and compare with tls-creds-x509 (file export)', async () => {
      const src = join(dir, 'qemu.img');
      await writeFile(src, randomBytes(SIZE));
      const common = ['--object', tlsObject(), '--image-opts'];
      await runOk(
        'qemu-img',
        ['convert', '-n', '-f', 'raw', '--target-image-opts', '--object', tlsObject()].concat([
          src,
          qemuOpts(forced, 'other'),
        ]),
      );
      await runOk('qemu-img', ['compare', ...common, qemuOpts(forced, 'other'), `driver=raw,file.filename=${src}`]);
      const back = join(dir, 'other-back.img');
      await runOk('nbdcopy', [nbds(forced, 'other'), back]);
      assert.equal(await sha256File(back), await sha256File(src));
    });

    it('serves TLS over its unix socket too', async () => {
      const out = await runOk('nbdinfo', [
        '--size',
        `nbds+unix:///disk?socket=${join(dir, 'forced.sock')}&tls-certificates=${pki.dir}&tls-hostname=localhost`,
      ]);
      assert.equal(out.trim(), String(SIZE));
    });

    it('refuses a plain client: no export is reachable without STARTTLS', async () => {
      const r = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${tcpPort(forced)}/disk`]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /TLS|tls/);
    });

    it('refuses a client without a certificate and one that trusts another CA; good clients still work', async () => {
      const before = forced.server.stats.connections;
      const noCert = await run('nbdinfo', ['--size', nbds(forced, 'disk', caOnly)]);
      assert.notEqual(noCert.code, 0, 'no client certificate');
      const stranger = await run('nbdinfo', ['--size', nbds(forced, 'disk', strangerPki.dir)]);
      assert.notEqual(stranger.code, 0, 'server certificate from an unknown CA');
      assert.ok(forced.server.stats.connections >= before + 2, 'both reached the server');
      assert.equal((await runOk('nbdinfo', ['--size', nbds(forced, 'disk')])).trim(), String(SIZE));
    });
  });

  describe('TLS optional, one TLS-only export', () => {
    it('serves the plain export without TLS and the TLS-only export only over TLS', async () => {
      const plain = `nbd://127.0.0.1:${tcpPort(selective)}`;
      assert.equal((await runOk('nbdinfo', ['--size', `${plain}/open`])).trim(), String(SIZE));
      const refused = await run('nbdinfo', ['--size', `${plain}/secret`]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /TLS/);
      assert.equal((await runOk('nbdinfo', ['--size', nbds(selective, 'secret', caOnly)])).trim(), String(SIZE));
    });

    it('leaves the TLS-only export out of a plain --list and shows it over TLS', async () => {
      const names = async (uri: string): Promise<string[]> =>
        (
          JSON.parse(await runOk('nbdinfo', ['--list', '--json', uri])) as { exports: { 'export-name': string }[] }
        ).exports
          .map((e) => e['export-name'])
          .sort();
      assert.deepEqual(await names(`nbd://127.0.0.1:${tcpPort(selective)}/`), ['open']);
      assert.deepEqual(await names(nbds(selective, '', caOnly)), ['open', 'secret']);
    });
  });

  describe('TLS settings', () => {
    it('names the file that cannot be read, a missing CA and a key that does not fit', async () => {
      await assert.rejects(loadNbdTls({ cert: join(dir, 'nope.pem'), key: pki.serverKey }), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'ERR_NBD_TLS_CONFIG');
        assert.match(err.message, /nope\.pem/);
        return true;
      });
      await assert.rejects(loadNbdTls({ cert: pki.serverCert, key: pki.serverKey, verifyClients: true }), {
        code: 'ERR_NBD_TLS_CONFIG',
        message: /needs a ca/,
      });
      await assert.rejects(loadNbdTls({ cert: pki.serverCert, key: strangerPki.serverKey }), {
        code: 'ERR_NBD_TLS_CONFIG',
        message: /cannot be used/,
      });
    });
  });
});
