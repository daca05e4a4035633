/**
 * What `vmlink top` shows: rates from the deltas of two reads, drop reasons
 * per second, sorting, SI numbers, and frames cut to the terminal's size.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LinkView, PortView } from '../../../src/api/client.js';
import { renderFrame, si, sortRows, type TopSample, topRows } from '../../../src/cli/top-view.js';

function port(name: string, c: Partial<PortView['counters']> = {}, network = 'lab'): PortView {
  return {
    name,
    kind: 'stream',
    source: 'api',
    state: 'up',
    network,
    spec: {},
    transport: {},
    macs: 0,
    counters: { rx_frames: 0, rx_bytes: 0, tx_frames: 0, tx_bytes: 0, drops: {}, ...c },
  };
}

function link(name: string, c: Partial<LinkView> = {}): LinkView {
  return {
    name,
    transport: 'tcp',
    peer: 'b',
    state: 'up',
    rtt_ms: 0.42,
    rx_bytes: 0,
    tx_bytes: 0,
    rx_frames: 0,
    tx_frames: 0,
    drops: { queue_full: 0, too_big: 0, unknown_vni: 0, down: 0, split_horizon: 0 },
    ...c,
  } as LinkView;
}

const sample = (at: number, ports: PortView[], links: LinkView[] = []): TopSample => ({ at, ports, links });

describe('topRows', () => {
  test('computes bits/s, frames/s and drops/s by reason from two reads', () => {
    const a = sample(1000, [port('vm1', { rx_bytes: 1000, rx_frames: 10, tx_bytes: 0, drops: { mtu: 1, down: 0 } })]);
    const b = sample(3000, [
      port('vm1', { rx_bytes: 251_000, rx_frames: 2010, tx_bytes: 500, tx_frames: 4, drops: { mtu: 21, down: 4 } }),
    ]);
    const [r] = topRows(a, b).ports;
    assert.equal(r?.rxBps, 1_000_000); // 250,000 bytes in 2 s
    assert.equal(r?.txBps, 2000);
    assert.equal(r?.rxFps, 1000);
    assert.equal(r?.txFps, 2);
    assert.equal(r?.dropsPs, 12);
    assert.deepEqual(r?.reasons, [
      ['mtu', 10],
      ['down', 2],
    ]);
  });

  test('shows no rate for a port or link that is new, or whose counters went down (re-created)', () => {
    const a = sample(0, [port('old', { rx_bytes: 5000 })]);
    const b = sample(1000, [port('old', { rx_bytes: 100 }), port('new', { rx_bytes: 9000 })], [link('l1')]);
    const rows = topRows(a, b);
    assert.deepEqual(
      rows.ports.map((r) => [r.name, r.rxBps]),
      [
        ['old', 0],
        ['new', 0],
      ],
    );
    assert.equal(rows.links[0]?.rxBps, 0);
    assert.equal(topRows(undefined, b).ports[1]?.rxBps, 0);
  });

  test('gives links their peer, transport and RTT', () => {
    const a = sample(0, [], [link('to-b', { tx_bytes: 0 })]);
    const b = sample(
      1000,
      [],
      [link('to-b', { tx_bytes: 125, tx_frames: 1, drops: { ...link('x').drops, too_big: 3 } })],
    );
    const [r] = topRows(a, b).links;
    assert.deepEqual([r?.name, r?.kind, r?.where, r?.txBps, r?.rttMs, r?.dropsPs], ['to-b', 'tcp', 'b', 1000, 0.42, 3]);
  });
});

describe('sortRows', () => {
  const rows = topRows(
    sample(0, [port('a'), port('b', { drops: { storm: 0 } }), port('c')]),
    sample(1000, [
      port('a', { rx_bytes: 10, tx_bytes: 10 }),
      port('b', { rx_bytes: 100, drops: { storm: 1 } }),
      port('c', { tx_bytes: 50, tx_frames: 99 }),
    ]),
  ).ports;
  const names = (k: Parameters<typeof sortRows>[1]) => sortRows(rows, k).map((r) => r.name);

  test('orders by rate, rx, tx, frames, drops, busiest first, and by name', () => {
    assert.deepEqual(names('rate'), ['b', 'c', 'a']);
    assert.deepEqual(names('rx'), ['b', 'a', 'c']);
    assert.deepEqual(names('tx'), ['c', 'a', 'b']);
    assert.deepEqual(names('frames'), ['c', 'a', 'b']);
    assert.deepEqual(names('drops'), ['b', 'a', 'c']);
    assert.deepEqual(names('name'), ['a', 'b', 'c']);
  });
});

describe('si', () => {
  test('writes three significant digits with SI prefixes', () => {
    assert.deepEqual([0, 0.5, 7, 999, 1000, 1234, 12_345, 123_456, 9_999_999, 2.5e9].map(si), [
      '0',
      '0.5',
      '7',
      '999',
      '1.00k',
      '1.23k',
      '12.3k',
      '123k',
      '10.0M',
      '2.50G',
    ]);
  });
});

describe('renderFrame', () => {
  const many = sample(
    1000,
    Array.from({ length: 50 }, (_, i) => port(`p${String(i).padStart(2, '0')}`, { rx_bytes: i * 1000 })),
    [link('to-b', { rx_bytes: 10 }), link('to-c')],
  );
  const rows = topRows(
    sample(
      0,
      many.ports.map((p) => port(p.name)),
      [...many.links],
    ),
    many,
  );
  const opts = { sort: 'rate' as const, interval: 1, host: 'h1', time: '12:00:00', live: true };

  test('fits the rows and columns it is given, busiest ports first, links below, the rest counted', () => {
    const f = renderFrame(rows, { ...opts, rows: 20, cols: 70 });
    assert.equal(f.length, 20);
    assert.ok(f.every((l) => l.length <= 70));
    assert.match(f[0] ?? '', /^vmlink top - host h1 - 50 ports, 2 links/);
    assert.match(f[2] ?? '', /^PORT +KIND +NETWORK +STATE +RX bit\/s/);
    assert.match(f[3] ?? '', /^p49 /);
    assert.ok(f.some((l) => /^\.\.\. \d+ more$/.test(l)));
    const li = f.findIndex((l) => l.startsWith('LINK '));
    assert.ok(li > 3, f.join('\n'));
    assert.match(f[li + 1] ?? '', /^to-b +tcp +b +up /);
    const wide = renderFrame(rows, { ...opts, rows: 20, cols: 200 });
    assert.match(wide.find((l) => l.startsWith('to-b')) ?? '', / 0\.42ms$/);
  });

  test('shows every row when there is room, and the error when the daemon stopped answering', () => {
    const few = topRows(undefined, sample(0, [port('vm1')]));
    const f = renderFrame(few, { ...opts, rows: 40, cols: 200, error: 'cannot read the daemon: ECONNREFUSED' });
    assert.deepEqual(f.slice(1), [
      '! cannot read the daemon: ECONNREFUSED',
      'PORT  KIND    NETWORK  STATE  RX bit/s  TX bit/s  RX fr/s  TX fr/s  DROP/s  REASONS',
      'vm1   stream  lab      up            0         0        0        0       0',
    ]);
  });

  test('keeps within a tiny window', () => {
    for (const [r, c] of [
      [1, 10],
      [3, 20],
      [5, 5],
    ] as const) {
      const f = renderFrame(rows, { ...opts, rows: r, cols: c });
      assert.ok(f.length <= r && f.every((l) => l.length <= c), `${r}x${c}: ${f.join('|')}`);
    }
  });
});
