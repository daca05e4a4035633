/**
 * State store benchmark: what creating one more network costs as the number
 * of stored networks grows. Two modes:
 *
 * - `api` (default): starts the real daemon (as a user does) on a fresh state
 *   dir and creates networks one at a time with `POST /v1/networks`;
 * - `store`: calls the embedded store's putNetwork in this process (the store
 *   alone: no HTTP, no switch).
 *
 * For the changes made just before each of the given counts it reports the
 * median and p99 latency, the bytes the daemon (or this process) wrote per
 * change (`wchar` of /proc/PID/io: files, sockets and logs), and the bytes in
 * the state dir.
 *
 *   node dist/bench/store.js [--mode api|store] [--counts 100,2700] [--window 100] [--root CHECKOUT] [--json FILE]
 *
 * `--root` uses the build of another checkout (its bin/vmlink.js, or its
 * dist/src/control/embedded-store.js), to compare two versions under the same
 * conditions.
 *
 * Outside the test run; no result here is a pass/fail threshold.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import type { StateStore } from '../src/control/store.js';
import { machineInfo, median, startBenchDaemon } from './util.js';

const thisRoot = new URL('../..', import.meta.url).pathname;

interface Point {
  /** Networks stored when the window ended. */
  networks: number;
  medianMs: number;
  p99Ms: number;
  /** Mean bytes written (wchar) per change over the window. */
  bytesPerChange: number;
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

/** Bytes process `pid` has written through write(2) and friends so far. */
function wchar(pid: number): number {
  return Number(/wchar: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
}

/** Creates networks n1, n2, ... with `create` until each count, timing the last `window` of each. */
async function measure(
  create: (i: number) => Promise<void>,
  counts: number[],
  window: number,
  pid: number,
  stateDir: string,
): Promise<Point[]> {
  const points: Point[] = [];
  let made = 1; // the config's own network (api mode); the store mode starts at 1 too, for the same names
  for (const target of counts) {
    const times: number[] = [];
    let w0 = 0;
    while (made < target) {
      if (target - made === window) w0 = wchar(pid);
      const t0 = process.hrtime.bigint();
      await create(made);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      made++;
      if (target - made < window) times.push(ms);
    }
    const point = {
      networks: made,
      medianMs: median(times),
      p99Ms: p99(times),
      bytesPerChange: Math.round((wchar(pid) - w0) / times.length),
      stateBytes: dirBytes(stateDir),
    };
    points.push(point);
    console.log(
      `${String(point.networks).padStart(5)} networks: median ${point.medianMs.toFixed(2)} ms, ` +
        `p99 ${point.p99Ms.toFixed(2)} ms, ${point.bytesPerChange} bytes written per change ` +
        `(last ${times.length}); state dir ${point.stateBytes} bytes`,
    );
  }
  return points;
}

async function viaApi(root: string, counts: number[], window: number): Promise<Point[]> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-store-'));
  const { proc, control } = await startBenchDaemon(root, dir, [
    `{ name: p0, kind: stream, network: bench, listen: "unix:${join(dir, 'p0.sock')}" }`,
  ]);
  const client = new ControlClient({ socketPath: control });
  try {
    const create = async (i: number) => void (await client.createNetwork({ name: `n${i}`, vni: 1000 + i }));
    return await measure(create, counts, window, proc.pid as number, join(dir, 'state'));
  } finally {
    await client.close();
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function inProcess(root: string, counts: number[], window: number): Promise<Point[]> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-store-'));
  const mod = (await import(pathToFileURL(join(root, 'dist/src/control/embedded-store.js')).href)) as {
    createEmbeddedStore(o: { dir: string }): StateStore;
  };
  const store = mod.createEmbeddedStore({ dir });
  try {
    await store.load();
    const create = (i: number) => store.putNetwork({ name: `n${i}`, vni: 1000 + i });
    return await measure(create, counts, window, process.pid, dir);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      mode: { type: 'string', default: 'api' },
      counts: { type: 'string', default: '100,2700' },
      window: { type: 'string', default: '100' },
      root: { type: 'string', default: thisRoot },
      json: { type: 'string' },
    },
  });
  const counts = values.counts.split(',').map(Number);
  const window = Number(values.window);
  if (values.mode !== 'api' && values.mode !== 'store')
    throw new Error(`--mode must be api or store, not "${values.mode}"`);
  const points = await (values.mode === 'api' ? viaApi : inProcess)(values.root, counts, window);
  if (values.json)
    writeFileSync(
      values.json,
      `${JSON.stringify({ machine: machineInfo(), mode: values.mode, root: values.root, points }, null, 2)}\n`,
    );
}

await main();
