import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RateTracker } from '../../src/api/overview-rates.js';
import type { OverviewExport, OverviewLink, OverviewPort, OverviewView } from '../../src/api/views.js';

function port(host: string, name: string, c: Partial<OverviewPort> = {}): OverviewPort {
  return {
    host,
    name,
    kind: 'stream',
    network: 'lab',
    state: 'up',
    macs: [],
    mac_count: 0,
    rx_bytes: 0,
    rx_frames: 0,
    tx_bytes: 0,
    tx_frames: 0,
    drops: { runt: 0, queue_full: 0 },
    ...c,
  };
}

function exp(host: string, name: string, c: Partial<OverviewExport> = {}): OverviewExport {
  return {
    host,
    name,
    state: 'up',
    size: 1 << 20,
    clients: 1,
    requests: 0,
    errors: 0,
    bytes_read: 0,
    bytes_written: 0,
    ...c,
  };
}

/** An overview answered by h1 at `at`, with h2's numbers taken at `at2`. */
function view(
  at: number,
  ports: OverviewPort[],
  opts: { at2?: number; exports?: OverviewExport[]; links?: OverviewLink[] } = {},
): OverviewView {
  return {
    at,
    host: 'h1',
    scope: 'fabric',
    hosts: [
      { id: 'h1', state: 'up', local: true, at },
      { id: 'h2', state: 'up', local: false, at: opts.at2 ?? at },
    ],
    networks: [{ name: 'lab', vni: 100, mtu: 1500, hosts: ['h1', 'h2'] }],
    ports,
    links: opts.links ?? [],
    exports: opts.exports ?? [],
  };
}

describe('rates from successive overviews', () => {
  it('shows no rate for the first sample of a port', () => {
    const m = new RateTracker().update(view(1000, [port('h1', 'a', { rx_bytes: 5000, rx_frames: 50 })]));
    assert.equal(m.ports.length, 1);
    assert.deepEqual([m.ports[0]?.rx_bps, m.ports[0]?.rx_fps, m.ports[0]?.drops_ps], [0, 0, 0]);
    assert.equal(m.ports[0]?.key, 'h1/a');
  });

  it('divides counter growth by the time between the samples: bits/s, frames/s, drops/s by reason', () => {
    const t = new RateTracker();
    t.update(view(1000, [port('h1', 'a', { rx_bytes: 1000, rx_frames: 10, tx_bytes: 500, tx_frames: 5 })]));
    const m = t.update(
      view(3000, [
        port('h1', 'a', {
          rx_bytes: 3000,
          rx_frames: 30,
          tx_bytes: 900,
          tx_frames: 9,
          drops: { runt: 4, queue_full: 0 },
        }),
      ]),
    );
    const a = m.ports[0]!;
    assert.equal(a.rx_bps, 8000, '2000 bytes in 2 s');
    assert.equal(a.tx_bps, 1600);
    assert.equal(a.rx_fps, 10);
    assert.equal(a.tx_fps, 2);
    assert.equal(a.drops_total, 4);
    assert.equal(a.drops_ps, 2);
    assert.deepEqual(a.drop_rates, { runt: 2 }, 'only the reasons that grew');
    assert.deepEqual(a.history, [9600]);
  });

  it("uses each host's own sample time and keeps the rates of a host whose numbers did not change time", () => {
    const t = new RateTracker();
    t.update(view(1000, [port('h1', 'a'), port('h2', 'b')], { at2: 500 }));
    const m1 = t.update(
      view(2000, [port('h1', 'a', { rx_bytes: 1000 }), port('h2', 'b', { rx_bytes: 1000 })], { at2: 1000 }),
    );
    const b1 = m1.ports.find((p) => p.key === 'h2/b')!;
    assert.equal(m1.ports.find((p) => p.key === 'h1/a')?.rx_bps, 8000, '1000 bytes in 1 s');
    assert.equal(b1.rx_bps, 16000, 'h2 took its numbers 0.5 s apart');
    // A cached answer of h2: the same sample time again.
    const m2 = t.update(
      view(3000, [port('h1', 'a', { rx_bytes: 1000 }), port('h2', 'b', { rx_bytes: 1000 })], { at2: 1000 }),
    );
    assert.equal(m2.ports.find((p) => p.key === 'h1/a')?.rx_bps, 0, 'h1 idle for a second');
    assert.equal(m2.ports.find((p) => p.key === 'h2/b')?.rx_bps, 16000, 'h2 keeps what was shown');
  });

  it('starts over when a counter goes back (a port made again under the same name)', () => {
    const t = new RateTracker();
    t.update(view(1000, [port('h1', 'a', { rx_bytes: 10_000 })]));
    t.update(view(2000, [port('h1', 'a', { rx_bytes: 20_000 })]));
    const m = t.update(view(3000, [port('h1', 'a', { rx_bytes: 100 })]));
    assert.equal(m.ports[0]?.rx_bps, 0);
    assert.deepEqual(m.ports[0]?.history, []);
    const next = t.update(view(4000, [port('h1', 'a', { rx_bytes: 1100 })]));
    assert.equal(next.ports[0]?.rx_bps, 8000);
  });

  it('forgets a port that left the overview', () => {
    const t = new RateTracker();
    t.update(view(1000, [port('h1', 'a', { rx_bytes: 100 }), port('h1', 'b')]));
    const m = t.update(view(2000, [port('h1', 'b')]));
    assert.deepEqual(
      m.ports.map((p) => p.key),
      ['h1/b'],
    );
    const back = t.update(view(3000, [port('h1', 'a', { rx_bytes: 5000 }), port('h1', 'b')]));
    assert.equal(back.ports.find((p) => p.key === 'h1/a')?.rx_bps, 0, 'a new port: no rate from old numbers');
  });

  it('gives export read and write bytes/s and requests/s', () => {
    const t = new RateTracker();
    t.update(view(1000, [], { exports: [exp('h2', 'd', { requests: 10, bytes_read: 4096 })] }));
    const m = t.update(
      view(1500, [], { exports: [exp('h2', 'd', { requests: 60, bytes_read: 8192, bytes_written: 512 })] }),
    );
    assert.deepEqual(
      [m.exports[0]?.read_Bps, m.exports[0]?.write_Bps, m.exports[0]?.req_ps, m.exports[0]?.key],
      [8192, 1024, 100, 'h2/d'],
    );
  });

  it("rates each link from its byte counters and its host's sample time, not the daemon's one-second window", () => {
    const link = (host: string, tx: number, rx: number, bps: number): OverviewLink => ({
      host,
      name: host === 'h1' ? 'h2' : 'h1',
      peer: host === 'h1' ? 'h2' : 'h1',
      state: 'up',
      path: 'direct',
      transport: 'tcp',
      tx_bps: bps,
      rx_bps: bps,
      tx_bytes: tx,
      rx_bytes: rx,
      drops: {},
    });
    const t = new RateTracker();
    const first = t.update(view(1000, [], { at2: 900, links: [link('h1', 0, 0, 5), link('h2', 0, 0, 0)] }));
    // The first sample shows the daemon's own rate.
    assert.deepEqual(
      first.view.links.map((l) => l.tx_bps),
      [5, 0],
    );
    // h2's own window said 0 (sampled between bursts); its counters grew by 250,000 bytes in 2 s.
    const m = t.update(
      view(3000, [], { at2: 2900, links: [link('h1', 250_000, 250_000, 7), link('h2', 250_000, 125_000, 0)] }),
    );
    assert.deepEqual(
      m.view.links.map((l) => [l.host, l.tx_bps, l.rx_bps]),
      [
        ['h1', 1_000_000, 1_000_000],
        ['h2', 1_000_000, 500_000],
      ],
    );
    // A cached answer for h2 (same sample time): its shown rates stay.
    const again = t.update(
      view(4000, [], { at2: 2900, links: [link('h1', 250_000, 250_000, 0), link('h2', 250_000, 125_000, 0)] }),
    );
    assert.deepEqual(
      again.view.links.map((l) => [l.host, l.tx_bps, l.rx_bps]),
      [
        ['h1', 0, 0],
        ['h2', 1_000_000, 500_000],
      ],
    );
  });
});
