/**
 * The daemon's storage with `storage.tls` (optional mode) and a `tls_only`
 * export, the export list filtered by allowed_clients, and an export whose
 * image appears after the daemon started: retried with backoff and served
 * without a restart. Real nbdinfo over the daemon's sockets.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ExportView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { run, runOk } from '../helpers/nbd-peer.js';
import { type CertDir, makeCerts } from '../helpers/tls-certs.js';

const MiB = 1024 * 1024;

describe('vmlink daemon: NBD over TLS, export list policy, late backends', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let pkiDir = '';
  let pki: CertDir;
  let port = 0;
  const exportsJson = async (): Promise<ExportView[]> =>
    (await d.json<{ exports: ExportView[] }>(['export', 'list'])).exports;

  before(async () => {
    pkiDir = await mkdtemp(join(tmpdir(), 'vmlink-daemon-tls-'));
    pki = await makeCerts(pkiDir);
    d = await startDaemon({
      hostId: 'storage-tls',
      extra: (dir) => ({
        storage: {
          listen: [`unix:${join(dir, 'nbd.sock')}`, 'tcp:127.0.0.1:0'],
          tls: {
            cert: pki.serverCert,
            key: pki.serverKey,
            mode: 'optional',
            client_dir: pkiDir,
            hostname: 'localhost',
          },
          roots: [dir],
        },
        exports: [
          { name: 'open', backend: { type: 'memory', size: '1M' } },
          { name: 'secret', backend: { type: 'memory', size: '2M' }, tls_only: true },
          { name: 'lan', backend: { type: 'memory', size: '1M' }, allowed_clients: ['10.99.0.0/16'] },
          { name: 'late', backend: { type: 'file', path: join(dir, 'late.img') } },
        ],
      }),
    });
    const s = await d.json<{ storage: { listen: string[] } }>(['status']);
    port = Number(/:(\d+)$/.exec(s.storage.listen[1] ?? '')?.[1]);
  });

  after(async () => {
    await d?.cleanup();
    await rm(pkiDir, { recursive: true, force: true });
  });

  test('serves a tls_only export over nbds:// only, and shows tls_only in the export list', async () => {
    const size = await runOk('nbdinfo', ['--size', `nbds://localhost:${port}/secret?tls-certificates=${pkiDir}`]);
    assert.equal(size.trim(), String(2 * MiB));
    const plain = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/secret`]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /TLS/);
    assert.equal((await runOk('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/open`])).trim(), String(MiB));
    const secret = (await exportsJson()).find((e) => e.name === 'secret');
    assert.equal(secret?.tls_only, true);
  });

  test('disk-args gives QEMU the TLS credentials for a tls_only export, and qemu-img opens it with them', async () => {
    const d1 = await d.json<{ args: string[] }>(['disk-args', 'secret']);
    assert.equal(d1.args[0], '-object');
    assert.equal(d1.args[1], `tls-creds-x509,id=vmlink-tls,dir=${pkiDir},endpoint=client`);
    const blockdev = d1.args[d1.args.indexOf('-blockdev') + 1] as string;
    assert.match(blockdev, /,tls-creds=vmlink-tls,tls-hostname=localhost/);
    const info = await runOk('qemu-img', ['info', '--object', d1.args[1] as string, '--image-opts', blockdev]);
    assert.match(info, /virtual size: 2 MiB/);
    const plain = await d.json<{ args: string[] }>(['disk-args', 'open']);
    assert.ok(!plain.args.includes('-object'), 'a plain export needs no TLS in optional mode');
  });

  test('nbdinfo --list over TCP shows only what that client may open', async () => {
    const names = async (uri: string): Promise<string[]> =>
      (
        JSON.parse(await runOk('nbdinfo', ['--list', '--json', uri])) as { exports: { 'export-name': string }[] }
      ).exports
        .map((e) => e['export-name'])
        .sort();
    const plain = await names(`nbd://127.0.0.1:${port}/`);
    assert.ok(plain.includes('open'));
    assert.ok(!plain.includes('secret'), 'TLS-only export hidden before TLS');
    assert.ok(!plain.includes('lan'), 'export of another network hidden');
    const tls = await names(`nbds://localhost:${port}/?tls-certificates=${pkiDir}`);
    assert.ok(tls.includes('secret') && !tls.includes('lan'), tls.join());
  });

  test('an export whose image is missing at start is retried and served once the image appears', async () => {
    const before = (await exportsJson()).find((e) => e.name === 'late');
    assert.equal(before?.state, 'down');
    assert.match(before?.reason ?? '', /retrying/);
    await writeFile(d.path('late.img'), Buffer.alloc(3 * MiB, 0x61));
    const deadline = Date.now() + 60_000;
    let state: string | undefined = before?.state;
    while (state !== 'up' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      state = (await exportsJson()).find((e) => e.name === 'late')?.state;
    }
    assert.equal(state, 'up', 'served without a restart');
    const size = await runOk('nbdinfo', ['--size', `nbd+unix:///late?socket=${d.path('nbd.sock')}`]);
    assert.equal(size.trim(), String(3 * MiB));
    assert.equal((await exportsJson()).find((e) => e.name === 'late')?.reason, 'served');
  });
});
