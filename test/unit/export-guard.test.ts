import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportSchema } from '../../src/config/schema.js';
import { checkExport, type ExportClaims, type GuardContext } from '../../src/daemon/export-guard.js';

let root = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmlink-guard-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const spec = (raw: unknown) => exportSchema.parse(raw);
const ctx = (admitted: Record<string, ExportClaims> = {}): GuardContext => ({
  roots: [root],
  memoryLimit: 4 << 20,
  memoryLimitIsDefault: false,
  admitted: new Map(Object.entries(admitted)),
  ownAddresses: [
    { type: 'unix', path: join(root, 'nbd.sock') },
    { type: 'tcp', host: '0.0.0.0', port: 10809 },
  ],
});
const code = (err: unknown) => (err as { code?: string }).code;

describe('export guard', () => {
  it('records which of our own exports a remote backend reads, over our unix socket or TCP port', async () => {
    const viaTcp = await checkExport(
      spec({ name: 'a', backend: { type: 'remote', address: 'tcp:127.0.0.1:10809', export: 'b' } }),
      ctx(),
    );
    assert.deepEqual(viaTcp.reads, ['b']);
    const viaUnix = await checkExport(
      spec({ name: 'a', backend: { type: 'remote', address: `unix:${join(root, 'nbd.sock')}`, export: 'c' } }),
      ctx(),
    );
    assert.deepEqual(viaUnix.reads, ['c']);
    const elsewhere = await checkExport(
      spec({ name: 'a', backend: { type: 'remote', address: 'tcp:192.0.2.7:10809', export: 'b' } }),
      ctx(),
    );
    assert.deepEqual(elsewhere.reads, []);
  });

  it('refuses the export that closes a loop of reads over TCP, naming the chain', async () => {
    const a: ExportClaims = { files: [], memoryBytes: 0, reads: ['b'] };
    const b: ExportClaims = { files: [], memoryBytes: 0, reads: ['c'] };
    await assert.rejects(
      checkExport(
        spec({
          name: 'c',
          backend: {
            type: 'cow',
            base: { type: 'remote', address: 'tcp:localhost:10809', export: 'a' },
            overlay: { type: 'memory', size: '1M' },
          },
        }),
        ctx({ a, b }),
      ),
      (err: unknown) => {
        assert.equal(code(err), 'ERR_EXPORT_COW_LOOP');
        assert.match(String(err), /"c" -> "a" -> "b" -> "c"/);
        return true;
      },
    );
  });

  it('sums the memory of every admitted export, cow overlays included', async () => {
    const held: ExportClaims = { files: [], memoryBytes: 3 << 20, reads: [] };
    const ok = await checkExport(spec({ name: 'm', backend: { type: 'memory', size: '1M' } }), ctx({ held }));
    assert.equal(ok.memoryBytes, 1 << 20);
    await assert.rejects(
      checkExport(
        spec({
          name: 'c',
          backend: { type: 'cow', base: { type: 'memory', size: '1M' }, overlay: { type: 'memory', size: '1M' } },
        }),
        ctx({ held }),
      ),
      (err: unknown) => code(err) === 'ERR_EXPORT_MEMORY_LIMIT',
    );
  });

  it('refuses a file in a directory next to a root whose name starts like it', async () => {
    await assert.rejects(
      checkExport(spec({ name: 'f', backend: { type: 'file', path: `${root}-other/x.img`, size: '1M' } }), ctx()),
      (err: unknown) => code(err) === 'ERR_EXPORT_PATH_OUTSIDE_ROOTS',
    );
  });
});
