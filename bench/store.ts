/**
 * State store benchmark: how long `POST /v1/networks` takes as the number of
 * stored networks grows. Starts the real daemon (as a user does) on a fresh
 * state dir, creates networks one at a time through the control API and
 * reports the median and p99 latency of the POSTs made around each of the
 * given counts, plus the bytes on disk in the state dir.
 *
 *   node dist/bench/store.js [--counts 100,2700] [--window 100] [--root CHECKOUT] [--json FILE]
 *
 * `--root` runs the daemon of another built checkout (default this one), to
 * compare two versions of the store under the same conditions.
 *
 * Outside the test run; no result here is a pass/fail threshold.
 */
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import { machineInfo, median, startBenchDaemon } from './util.js';

const thisRoot = new URL('../..', import.meta.url).pathname;

interface Point {
  /** Networks stored when the window ended. */
  networks: number;
  medianMs: number;
  p99Ms: number;
  /** Bytes of every file in the state dir at that point. */
  stateBytes: number;
}

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? 0;
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) n += statSync(join(dir, f)).size;
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      counts: { type: 'string', default: '100,2700' },
      window: { type: 'string', default: '100' },
      root: { type: 'string', default: thisRoot },
      json: { type: 'string' },
    },
  });
  const root = values.root;
  const counts = values.counts.split(',').map(Number);
  const window = Number(values.window);
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-store-'));
  const { proc, control } = await startBenchDaemon(root, dir, [
    `{ name: p0, kind: stream, network: bench, listen: "unix:${join(dir, 'p0.sock')}" }`,
  ]);
  const client = new ControlClient({ socketPath: control });
  const points: Point[] = [];
  try {
    let made = 1; // the config's own network
    for (const target of counts) {
      const times: number[] = [];
      while (made < target) {
        const t0 = process.hrtime.bigint();
        await client.createNetwork({ name: `n${made}`, vni: 1000 + made });
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        made++;
        if (target - made < window) times.push(ms);
      }
      const point = {
        networks: made,
        medianMs: median(times),
        p99Ms: p99(times),
        stateBytes: dirBytes(join(dir, 'state')),
      };
      points.push(point);
      console.log(
        `${String(point.networks).padStart(5)} networks: POST median ${point.medianMs.toFixed(2)} ms, ` +
          `p99 ${point.p99Ms.toFixed(2)} ms over the last ${times.length}; state dir ${point.stateBytes} bytes`,
      );
    }
  } finally {
    await client.close();
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ machine: machineInfo(), points }, null, 2)}\n`);
}

await main();
