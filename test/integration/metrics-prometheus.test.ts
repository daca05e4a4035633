/**
 * A real Prometheus server (Debian's `prometheus`) scrapes the daemon's
 * `/metrics` every second, and a PromQL rate over its HTTP API follows the
 * traffic the test sends through a port.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { attach, framed, startDaemon, stopDaemon, tempDirs, twoPortConfig } from '../helpers/api-daemon.js';

const newDir = await tempDirs('vmlink-prom-');

/** A TCP port free on loopback now (Prometheus needs a fixed listen address). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Polls `f` until it returns a value (generous deadline, no fixed sleep). */
async function until<T>(what: string, f: () => Promise<T | undefined>, deadlineMs = 90_000): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** An instant PromQL query; the value of its only series, or undefined while it has none. */
async function query(prom: string, q: string): Promise<number | undefined> {
  const res = await request(`${prom}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.body.json()) as { status: string; data: { result: { value: [number, string] }[] } };
  assert.equal(body.status, 'success', q);
  const r = body.data.result;
  return r.length === 1 ? Number(r[0]?.value[1]) : undefined;
}

/** Starts Prometheus on loopback scraping `target` (host:port) every second; stopped in after(). */
async function startPrometheus(dir: string, target: string): Promise<string> {
  await mkdir(join(dir, 'tsdb'), { recursive: true });
  const cfg = join(dir, 'prometheus.yml');
  await writeFile(
    cfg,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: vmlink',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const child: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${cfg}`,
      `--storage.tsdb.path=${join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });
  const base = `http://127.0.0.1:${port}`;
  await until(`prometheus to be ready (stderr: ${stderr})`, async () => {
    if (child.exitCode !== null) assert.fail(`prometheus exited ${child.exitCode}: ${stderr}`);
    const res = await request(`${base}/-/ready`);
    await res.body.dump();
    return res.statusCode === 200 ? true : undefined;
  });
  return base;
}

describe('Prometheus scraping the daemon', () => {
  it('answers a PromQL rate of a port under known traffic, and the exact total once it stops', async (t) => {
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: 'tcp:127.0.0.1:0' } }, dir);
    after(() => stopDaemon(r));
    const at = (await r.client.status()).http?.listen[0];
    assert.ok(at, 'the HTTP endpoint listens');
    const prom = await startPrometheus(dir, at.slice(4));

    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    after(() => {
      a.sock.destroy();
      b.sock.destroy();
    });
    // Broadcasts from a: each reaches b; b drains what it gets.
    const f = Buffer.alloc(1000, 0x11);
    Buffer.from('ffffffffffff02000000000a', 'hex').copy(f, 0);
    f.writeUInt16BE(0x0800, 12);
    const burst = Buffer.concat(Array.from({ length: 10 }, () => framed(f)));
    b.sock.resume();
    let sent = 0;
    const timer = setInterval(() => {
      a.sock.write(burst);
      sent += 10 * f.length;
    }, 50);

    const up = await until('the target to be up', () =>
      query(prom, 'up{job="vmlink"}').then((v) => (v === 1 ? v : undefined)),
    );
    assert.equal(up, 1);
    const rateQ = 'rate(vmlink_port_receive_bytes_total{port="a"}[5s])';
    const rate = await until('a rate above 0', () =>
      query(prom, rateQ).then((v) => (v !== undefined && v > 0 ? v : undefined)),
    );
    clearInterval(timer);
    const total = sent;
    // Over a 5 s window the increase Prometheus extrapolates is at most about 3 times what it saw (two samples one
    // scrape apart, each end extended by up to 1.1 intervals); what it saw is at most what was sent.
    t.diagnostic(`PromQL rate ${Math.round(rate)} B/s while sending; ${total} bytes sent in all`);
    assert.ok(rate * 5 <= 3.5 * total, `rate ${rate} B/s is consistent with ${total} bytes sent`);

    // Once the traffic stops, Prometheus holds the exact counter, and the rate falls to 0.
    const last = await until('the exact total to be scraped', async () => {
      const port = await r.client.getPort('a');
      if (port.counters.rx_bytes !== total) return undefined;
      const v = await query(prom, 'vmlink_port_receive_bytes_total{port="a"}');
      return v === total ? v : undefined;
    });
    assert.equal(last, total);
    assert.equal(
      await query(prom, 'vmlink_port_receive_frames_total{port="a",network="lan",kind="stream"}'),
      total / f.length,
    );
    await until('the rate to fall to 0', () => query(prom, rateQ).then((v) => (v === 0 ? v : undefined)));
  });
});
