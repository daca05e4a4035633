import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flatten, formatDuration, formatPairs, formatTable } from '../../../src/cli/output.js';

describe('cli output', () => {
  test('aligns table columns, right-aligns numbers and leaves no trailing spaces', () => {
    const out = formatTable(
      [{ header: 'NAME' }, { header: 'VNI', align: 'right' }, { header: 'PORTS' }],
      [
        ['lab', '100', 'vm1,vm2'],
        ['a-long-name', '7', '-'],
      ],
      false,
    );
    assert.equal(out, ['NAME         VNI  PORTS', 'lab          100  vm1,vm2', 'a-long-name    7  -', ''].join('\n'));
  });

  test('pads a right-aligned last column', () => {
    const out = formatTable([{ header: 'N' }, { header: 'MACS', align: 'right' }], [['a', '3']], false);
    assert.equal(out, 'N  MACS\na     3\n');
  });

  test('adds colour only when asked', () => {
    const out = formatTable([{ header: 'A' }], [['x']], true);
    assert.ok(out.startsWith('\x1b[1m'));
    assert.ok(!formatTable([{ header: 'A' }], [['x']], false).includes('\x1b'));
  });

  test('prints aligned key/value pairs with section headings', () => {
    assert.equal(
      formatPairs(
        [
          ['name', 'vm1'],
          ['transport', ''],
          ['  listen', 'unix:/a'],
        ],
        false,
      ),
      'name      vm1\ntransport\n  listen  unix:/a\n',
    );
  });

  test('flattens nested objects into dotted keys', () => {
    assert.deepEqual(flatten({ a: 1, b: { c: 'x', d: [1, 2] }, e: null, f: {} }), [
      ['a', '1'],
      ['b.c', 'x'],
      ['b.d', '1, 2'],
      ['e', '-'],
      ['f', '{}'],
    ]);
  });

  test('formats durations for people', () => {
    assert.deepEqual([0, 42, 302, 7260, 90000].map(formatDuration), ['0s', '42s', '5m 2s', '2h 1m', '1d 1h']);
  });
});
