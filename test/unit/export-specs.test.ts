import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { exportSchema, parseSize } from '../../src/config/schema.js';
import { backendSpec, clientPolicy, defaultDiskId } from '../../src/daemon/export-specs.js';

describe('export specs', () => {
  test('reads sizes as bytes or with binary units, and names a bad size in the message', () => {
    assert.equal(parseSize(65536), 65536);
    assert.equal(parseSize('64M'), 64 * 2 ** 20);
    assert.equal(parseSize('1G'), 2 ** 30);
    assert.equal(parseSize('1GiB'), 2 ** 30);
    assert.equal(parseSize('512k'), 512 * 1024);
    for (const bad of ['0', '-1', '1.5G', '12Q', 'lots', '', '9P9']) {
      assert.match(String(parseSize(bad)), new RegExp(`^"${bad}" is not a size`), bad);
    }
    assert.match(String(parseSize('9999P')), /is not a size in bytes from 1 to 2\^53/);
  });

  test('maps a config export onto the storage layer spec, the cow base opened read-only', () => {
    const e = exportSchema.parse({
      name: 'vm2',
      backend: {
        type: 'cow',
        base: { type: 'remote', address: 'tcp:10.0.0.2:10809', export: 'golden' },
        overlay: { type: 'file', path: '/var/lib/o.img', size: '1G' },
        block_size: 4096,
        bitmap_path: '/var/lib/o.bitmap',
      },
    });
    assert.equal(e.read_only, false);
    assert.equal(e.weight, 1);
    assert.deepEqual(backendSpec(e.backend, e.read_only), {
      kind: 'cow',
      base: {
        kind: 'remote',
        address: { type: 'tcp', host: '10.0.0.2', port: 10809 },
        export: 'golden',
        readOnly: true,
      },
      overlay: { kind: 'file', path: '/var/lib/o.img', size: 2 ** 30, readOnly: false },
      blockSize: 4096,
      bitmapPath: '/var/lib/o.bitmap',
    });
    // A read-only file export opens its image read-only unless it has to create it.
    assert.deepEqual(backendSpec({ type: 'file', path: '/a.img' }, true), {
      kind: 'file',
      path: '/a.img',
      size: undefined,
      readOnly: true,
    });
  });

  test('allowed_clients admits listed addresses and networks, IPv4-mapped peers, and every unix client', () => {
    const allow = clientPolicy(['10.1.0.0/16', '192.0.2.7', 'fd00::/64']);
    assert.ok(allow);
    assert.equal(allow('10.1.200.3'), true);
    assert.equal(allow('::ffff:10.1.0.1'), true);
    assert.equal(allow('192.0.2.7'), true);
    assert.equal(allow('fd00::1234'), true);
    assert.equal(allow(undefined), true);
    assert.equal(allow('10.2.0.1'), false);
    assert.equal(allow('192.0.2.8'), false);
    assert.equal(allow('fd01::1'), false);
    assert.equal(clientPolicy(undefined), undefined);
    assert.equal(clientPolicy([])?.('127.0.0.1'), false);
  });

  test('a QEMU node id comes from the export name, prefixed when the name does not start with a letter', () => {
    assert.equal(defaultDiskId('vm1-root'), 'vm1-root');
    assert.equal(defaultDiskId('0disk'), 'nbd-0disk');
  });
});
