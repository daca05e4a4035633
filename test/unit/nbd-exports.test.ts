import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { ExportRegistry } from '../../src/storage/exports.js';

const mem = (readOnly = false) => new MemoryBackend({ size: 4096, readOnly });

describe('NBD export registry', () => {
  it('serves the only export for the empty (default) name, and none when there are several', () => {
    const r = new ExportRegistry();
    r.add({ name: 'a', backend: mem() });
    assert.equal(r.resolve('')?.name, 'a');
    r.add({ name: 'b', backend: mem() });
    assert.equal(r.resolve(''), undefined);
    assert.equal(r.resolve('b')?.name, 'b');
  });

  it('tells its watchers of exports served and removed and of each client joining and leaving once', () => {
    const r = new ExportRegistry();
    const seen: string[] = [];
    const stop = r.onChange((c) => seen.push(`${c.open ? 'open' : 'close'}/${c.subject}/${c.export}/${c.clients}`));
    r.onChange(() => {
      throw new Error('a broken watcher');
    });
    const exp = r.add({ name: 'a', backend: mem() });
    const leave = r.clientJoined(exp);
    assert.equal(exp.stats.clients, 1);
    leave();
    leave();
    assert.equal(exp.stats.clients, 0, 'a client leaves once');
    r.remove('a');
    stop();
    r.add({ name: 'b', backend: mem() });
    assert.deepEqual(seen, ['open/export/a/0', 'open/client/a/1', 'close/client/a/0', 'close/export/a/0']);
  });

  it('serves the configured default export for the empty name', () => {
    const r = new ExportRegistry({ defaultExport: 'b' });
    r.add({ name: 'a', backend: mem() });
    r.add({ name: 'b', backend: mem() });
    assert.equal(r.resolve('')?.name, 'b');
  });

  it('is read-only when asked or when the backend is, and defaults the weight to 1', () => {
    const r = new ExportRegistry();
    assert.equal(r.add({ name: 'a', backend: mem(), readOnly: true }).readOnly, true);
    assert.equal(r.add({ name: 'b', backend: mem(true) }).readOnly, true);
    const c = r.add({ name: 'c', backend: mem() });
    assert.equal(c.readOnly, false);
    assert.equal(c.weight, 1);
  });

  it('rejects duplicate names, bad names and bad weights with stable codes and the value in the message', () => {
    const r = new ExportRegistry();
    r.add({ name: 'a', backend: mem() });
    assert.throws(
      () => r.add({ name: 'a', backend: mem() }),
      (e: Error) => hasCode(e, 'ERR_EXPORT_EXISTS') && /"a"/.test(e.message),
    );
    assert.throws(
      () => r.add({ name: '-x', backend: mem() }),
      (e: Error) => hasCode(e, 'ERR_EXPORT_INVALID') && /"-x"/.test(e.message),
    );
    assert.throws(
      () => r.add({ name: 'w', backend: mem(), weight: 0 }),
      (e: Error) => hasCode(e, 'ERR_EXPORT_INVALID') && /weight 0/.test(e.message),
    );
    assert.throws(
      () => r.remove('zz'),
      (e: Error) => hasCode(e, 'ERR_EXPORT_NOT_FOUND') && /"zz".*known: a/.test(e.message),
    );
  });
});
