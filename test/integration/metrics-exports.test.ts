/**
 * The export families of `/metrics` after real NBD I/O: qemu-io and nbdcopy
 * (libnbd) against a daemon's exports, requests of known sizes, then the
 * export views rendered by registerExportMetrics and parsed back as
 * Prometheus text: bytes and requests equal what the clients did, every
 * histogram's count equals its request count, errors are counted per
 * operation, nothing is left in flight.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import parse, { type PromFamily } from 'parse-prometheus-text-format';
import { Registry } from 'prom-client';
import type { ExportView } from '../../src/api/client.js';
import { registerExportMetrics } from '../../src/api/metrics-exports.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { IO_OPS, type IoOp } from '../../src/storage/io-stats.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { hostConfig, type Running, startDaemon, stopDaemon, tempDirs } from '../helpers/api-daemon.js';
import { runOk, startServer } from '../helpers/nbd-peer.js';

type Family = PromFamily;
/**
 * The text format's histogram samples by `export/op` (parse-prometheus-text-format merges the series of a
 * labelled histogram into one, so these lines are read here).
 */
function histograms(
  text: string,
  name: string,
): Map<string, { buckets: [string, number][]; sum: number; count: number }> {
  const out = new Map<string, { buckets: [string, number][]; sum: number; count: number }>();
  const re = new RegExp(
    String.raw`^${name}_(bucket|sum|count)\{export="([^"]+)",op="([^"]+)"(?:,le="([^"]+)")?\} (\S+)$`,
    'gm',
  );
  for (const m of text.matchAll(re)) {
    const [, kind, exp, op, le, v] = m as unknown as [string, string, string, string, string | undefined, string];
    const key = `${exp}/${op}`;
    const h = out.get(key) ?? { buckets: [], sum: 0, count: 0 };
    out.set(key, h);
    if (kind === 'bucket') h.buckets.push([le as string, Number(v)]);
    else if (kind === 'sum') h.sum = Number(v);
    else h.count = Number(v);
  }
  return out;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const COPY_SIZE = 4 * MiB;
const dirFor = await tempDirs('vmlink-metrics-exports-');

describe('export metrics after real NBD I/O', { timeout: 180_000 }, () => {
  let r: Running;
  let dir = '';
  let sock = '';
  const uri = (name: string) => `nbd+unix:///${name}?socket=${sock}`;

  before(async () => {
    dir = dirFor();
    sock = join(dir, 'nbd.sock');
    r = await startDaemon(
      hostConfig(dir, {
        storage: { listen: [`unix:${sock}`] },
        http: { listen: 'tcp:127.0.0.1:0' },
        exports: [
          { name: 'qio', backend: { type: 'memory', size: '32M' } },
          { name: 'copy', backend: { type: 'memory', size: COPY_SIZE } },
          { name: 'ro', backend: { type: 'memory', size: '1M' }, read_only: true },
        ],
      }),
      dir,
    );
  });

  after(async () => {
    if (r) await stopDaemon(r);
  });

  /** The exports' views now, rendered by registerExportMetrics into a fresh registry and parsed back. */
  async function scrape(): Promise<{ views: ExportView[]; families: Map<string, Family>; text: string }> {
    const views = await r.client.listExports();
    const registry = new Registry();
    registerExportMetrics(registry, () => views);
    const text = await registry.metrics();
    return { views, families: new Map(parse(text).map((f) => [f.name, f])), text };
  }

  function value(families: Map<string, Family>, name: string, labels: Record<string, string>): number {
    const f = families.get(name);
    assert.ok(f, `family ${name} is missing`);
    const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
    assert.ok(m, `${name}${JSON.stringify(labels)} is missing`);
    return Number(m.value);
  }

  test('counts the bytes and requests of qemu-io and nbdcopy exactly, per operation', async () => {
    // qemu-io: two writes (64 KiB + 128 KiB), three reads (64 KiB + 128 KiB + 4 KiB); qemu flushes at close after writing.
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 0 64k',
      '-c',
      'write -P 0x5b 1M 128k',
      '-c',
      'read -P 0x5a 0 64k',
      '-c',
      'read -P 0x5b 1M 128k',
      '-c',
      'read 4M 4k',
      uri('qio'),
    ]);
    // nbdcopy: 4 MiB of random data up in 256 KiB requests (16 writes), then back down (16 reads).
    const src = join(dir, 'src.img');
    await writeFile(src, randomBytes(COPY_SIZE));
    await runOk('nbdcopy', ['--request-size=262144', src, uri('copy')]);
    await runOk('nbdcopy', ['--request-size=262144', uri('copy'), join(dir, 'back.img')]);

    const { views, families } = await scrape();
    const get = (name: string, labels: Record<string, string>) => value(families, name, labels);
    assert.equal(get('vmlink_export_write_bytes_total', { export: 'qio' }), 192 * KiB);
    assert.equal(get('vmlink_export_read_bytes_total', { export: 'qio' }), 196 * KiB);
    assert.equal(get('vmlink_export_requests_total', { export: 'qio', op: 'write' }), 2);
    assert.equal(get('vmlink_export_requests_total', { export: 'qio', op: 'read' }), 3);
    assert.ok(get('vmlink_export_requests_total', { export: 'qio', op: 'flush' }) >= 1, 'qemu flushes after writing');
    assert.equal(get('vmlink_export_write_bytes_total', { export: 'copy' }), COPY_SIZE);
    assert.equal(get('vmlink_export_read_bytes_total', { export: 'copy' }), COPY_SIZE);
    assert.equal(get('vmlink_export_requests_total', { export: 'copy', op: 'write' }), 16);
    assert.equal(get('vmlink_export_requests_total', { export: 'copy', op: 'read' }), 16);
    for (const name of ['qio', 'copy']) {
      const v = views.find((e) => e.name === name) as ExportView;
      // Every request received was answered: the per-operation counts add up to the export's request counter.
      const sum = IO_OPS.reduce((a, op) => a + get('vmlink_export_requests_total', { export: name, op }), 0);
      assert.equal(sum, v.counters.requests, `${name}: requests by operation`);
      assert.equal(get('vmlink_export_errors_total', { export: name, op: 'read' }), 0);
      assert.equal(get('vmlink_export_errors_total', { export: name, op: 'write' }), 0);
      assert.equal(get('vmlink_export_in_flight_requests', { export: name }), 0);
      assert.ok(get('vmlink_export_max_in_flight_requests', { export: name }) >= 1);
      assert.equal(get('vmlink_export_clients', { export: name }), 0);
    }
    // nbdcopy keeps several requests in flight at once (its default is 16 per connection).
    assert.ok(get('vmlink_export_max_in_flight_requests', { export: 'copy' }) > 1);
  });

  test('counts refused requests as errors of their operation: a write to a read-only export, a read past the end, an unknown command', async () => {
    const c = await NbdClient.connect({ address: { type: 'unix', path: sock }, export: 'ro' });
    await c.read(0, 4 * KiB);
    await assert.rejects(c.write(0, Buffer.alloc(4 * KiB)));
    await assert.rejects(c.read(1 * MiB, 4 * KiB));
    let mid = await scrape();
    assert.equal(value(mid.families, 'vmlink_export_clients', { export: 'ro' }), 1);
    // Command 99 is no NBD command: answered EINVAL, counted as `other`. The client cannot match the reply: drop it.
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(99, 6);
    h.writeBigUInt64BE(0xffffn, 8);
    c.writeRaw(h);
    const deadline = Date.now() + 30_000;
    for (;;) {
      mid = await scrape();
      if (value(mid.families, 'vmlink_export_requests_total', { export: 'ro', op: 'other' }) === 1) break;
      assert.ok(Date.now() < deadline, 'the unknown command was not counted within 30 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    c.destroy();
    const get = (name: string, labels: Record<string, string>) => value(mid.families, name, labels);
    assert.equal(get('vmlink_export_requests_total', { export: 'ro', op: 'read' }), 2);
    assert.equal(get('vmlink_export_errors_total', { export: 'ro', op: 'read' }), 1);
    assert.equal(get('vmlink_export_requests_total', { export: 'ro', op: 'write' }), 1);
    assert.equal(get('vmlink_export_errors_total', { export: 'ro', op: 'write' }), 1);
    assert.equal(get('vmlink_export_errors_total', { export: 'ro', op: 'other' }), 1);
    assert.equal(get('vmlink_export_read_bytes_total', { export: 'ro' }), 4 * KiB);
    assert.equal(get('vmlink_export_write_bytes_total', { export: 'ro' }), 0);
    const v = mid.views.find((e) => e.name === 'ro') as ExportView;
    assert.equal(v.counters.errors, 3);
    assert.equal(v.counters.requests, 4);
  });

  test('each histogram counts every request of its operation once: cumulative buckets ending at the count, a positive sum', async () => {
    const { families, views, text } = await scrape();
    assert.equal(families.get('vmlink_export_request_duration_seconds')?.type, 'HISTOGRAM');
    const h = histograms(text, 'vmlink_export_request_duration_seconds');
    for (const e of views) {
      for (const op of IO_OPS) {
        const m = h.get(`${e.name}/${op}`);
        assert.ok(m, `${e.name}/${op}: no histogram`);
        const requests = value(families, 'vmlink_export_requests_total', { export: e.name, op });
        assert.equal(m.count, requests, `${e.name}/${op}: histogram count`);
        assert.equal(m.count, e.io.ops[op as IoOp].requests);
        assert.equal(m.buckets.length, 18, 'one bucket per bound and +Inf');
        assert.equal(m.buckets.at(-1)?.[0], '+Inf');
        assert.equal(m.buckets.at(-1)?.[1], m.count);
        for (let i = 1; i < m.buckets.length; i++)
          assert.ok((m.buckets[i] as [string, number])[1] >= (m.buckets[i - 1] as [string, number])[1]);
        if (requests > 0) assert.ok(m.sum > 0, `${e.name}/${op}: sum of latencies`);
      }
    }
  });

  test('the export view shows the same I/O statistics, with the bucket bounds', async () => {
    const v = await r.client.getExport('qio');
    assert.equal(v.io.in_flight, 0);
    assert.deepEqual(v.io.latency_bounds_seconds.slice(0, 2), [0.00005, 0.0001]);
    assert.equal(v.io.latency_bounds_seconds.at(-1), 10);
    assert.deepEqual(Object.keys(v.io.ops), [...IO_OPS]);
    for (const op of IO_OPS) {
      const o = v.io.ops[op];
      assert.equal(o.buckets.length, v.io.latency_bounds_seconds.length + 1);
      assert.equal(
        o.buckets.reduce((a, b) => a + b, 0),
        o.requests,
      );
    }
    assert.equal(v.io.ops.write.requests, 2);
  });

  test("the daemon's GET /metrics carries the export families with the numbers of the export view", async () => {
    const listen = (await r.client.status()).http?.listen[0];
    assert.ok(listen, 'the HTTP endpoint listens');
    const res = await fetch(`http://${listen.slice('tcp:'.length)}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const families = new Map(parse(text).map((f) => [f.name, f]));
    for (const v of await r.client.listExports()) {
      assert.equal(value(families, 'vmlink_export_state', { export: v.name, state: 'up' }), 1);
      assert.equal(value(families, 'vmlink_export_state', { export: v.name, state: 'down' }), 0);
      assert.equal(value(families, 'vmlink_export_size_bytes', { export: v.name }), v.size);
      assert.equal(value(families, 'vmlink_export_read_bytes_total', { export: v.name }), v.counters.bytes_read);
      assert.equal(value(families, 'vmlink_export_write_bytes_total', { export: v.name }), v.counters.bytes_written);
      for (const op of IO_OPS) {
        assert.equal(value(families, 'vmlink_export_requests_total', { export: v.name, op }), v.io.ops[op].requests);
        assert.equal(value(families, 'vmlink_export_errors_total', { export: v.name, op }), v.io.ops[op].errors);
      }
      const h = histograms(text, 'vmlink_export_request_duration_seconds');
      assert.equal(h.get(`${v.name}/read`)?.count, v.io.ops.read.requests);
    }
  });

  test('promtool check metrics finds no problem in the export families', async () => {
    const { text } = await scrape();
    const file = join(dir, 'exports.prom');
    await writeFile(file, text);
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
  });
});

/** A memory backend whose reads wait until released. */
class GatedBackend extends MemoryBackend {
  #gate: Promise<void>;
  release: () => void = () => {};

  constructor(size: number) {
    super({ size });
    this.#gate = new Promise((resolve) => {
      this.release = resolve;
    });
  }

  override async read(offset: number, length: number): Promise<Buffer> {
    await this.#gate;
    return super.read(offset, length);
  }
}

describe('requests in flight', { timeout: 60_000 }, () => {
  test('counts the requests a backend holds as in flight, and keeps the most at once after they are answered', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const backend = new GatedBackend(1 * MiB);
    const server = await startServer(dir, 'gated', [{ name: 'gated', backend }]);
    after(() => server.close());
    const exp = server.exports.get('gated');
    assert.ok(exp);
    // Simple replies: every read goes to the backend (structured ones would answer the unwritten range as a hole).
    const c = await NbdClient.connect({ address: server.address, export: 'gated', structuredReplies: false });
    after(() => c.destroy());
    const reads = Array.from({ length: 5 }, (_, i) => c.read(i * 4 * KiB, 4 * KiB));
    const deadline = Date.now() + 30_000;
    while (exp.stats.io.inFlight < 5) {
      assert.ok(Date.now() < deadline, `only ${exp.stats.io.inFlight} of 5 reads in flight after 30 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(exp.stats.io.view().in_flight, 5);
    backend.release();
    await Promise.all(reads);
    const v = exp.stats.io.view();
    assert.equal(v.in_flight, 0);
    assert.equal(v.max_in_flight, 5);
    assert.equal(v.ops.read.requests, 5);
    assert.equal(
      v.ops.read.buckets.reduce((a, b) => a + b, 0),
      5,
    );
    await c.disconnect();
  });
});
