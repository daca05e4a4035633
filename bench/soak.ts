/**
 * Soak run: starts two real daemons as a user does (`vmlink daemon --config`),
 * linked over loopback, and runs mixed traffic through daemon A for a while:
 * stream socket peers, a vhost-user front-end, a TAP port in a namespace (when
 * run as root), the overlay link to daemon B, NBD reads and writes (one steady
 * client, one connecting for every op), stream connection churn and control
 * API churn (network create/delete, so the state store writes).
 *
 * Every second it samples daemon A's RSS (/proc/PID/status), open fds
 * (/proc/PID/fd) and event-loop delay (`process` in GET /v1/status). After
 * the warm-up the churn stops for a moment and the fd count and RSS are taken
 * as the baseline; after the run the churn stops again and the fd count must
 * come back to exactly the baseline (a leak of one fd per connection shows).
 *
 *   sh scripts/soak.sh [seconds] [--warmup S] [--out FILE]
 *   node dist/bench/soak.js [seconds] [--warmup S] [--out FILE]
 *
 * Writes the samples and a summary as JSON (default bench/results/soak-<time>.json).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import { startDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { Netns, uniqueIfname } from '../test/helpers/netns.js';
import {
  apiSource,
  type Counts,
  churnSource,
  nbdSource,
  type Source,
  streamSource,
  tapSource,
  vhostSource,
} from './soak-traffic.js';

export interface SoakOptions {
  /** Seconds of traffic after the warm-up. */
  seconds: number;
  /** Seconds of warm-up traffic before the baseline; default 15. */
  warmupSeconds?: number;
  /** Frames each stream peer and the vhost-user front-end send per destination every 20 ms; default 2 (100/s). */
  perTick?: number;
  /** Progress lines; default none. */
  log?: (line: string) => void;
}

/** One sample of daemon A. */
export interface Sample {
  /** Seconds since the traffic started. */
  t: number;
  phase: 'warmup' | 'traffic';
  rssBytes: number;
  /** JavaScript heap in use, from the status API. */
  heapUsedBytes: number;
  fds: number;
  /** Event-loop delay of the last one-second window, ms. */
  eldP99Ms: number;
  eldMaxMs: number;
}

export interface SoakResult {
  samples: Sample[];
  /** Daemon A after the warm-up, churn paused. */
  baseline: { rssBytes: number; fds: number };
  /** Daemon A after the run, churn stopped. */
  end: { rssBytes: number; fds: number };
  /** Largest one-second p99 and max event-loop delay seen, ms. */
  eld: { p99MaxMs: number; maxMs: number };
  counts: Record<string, Counts>;
  /** Paths that were not exercised, and why (e.g. the TAP port without root). */
  skipped: string[];
}

// Locally administered MACs of the peers.
const S1 = '020000000001';
const S2 = '020000000002';
const R1 = '020000000003';
const V1 = '020000000004';
const CHURN = '020000000005';
const colons = (m: string): string => m.replace(/(..)(?!$)/g, '$1:');

function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

function fdsOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Polls `fn` every 100 ms until it returns true or `ms` pass. */
async function until(fn: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (await fn()) return true;
  return false;
}

interface Rig {
  a: TestDaemon;
  b: TestDaemon;
  ns: Netns | undefined;
  tapIf: string | undefined;
}

async function startRig(skipped: string[]): Promise<Rig> {
  const bPort = await freePort();
  const root = process.getuid?.() === 0;
  const tapIf = root ? uniqueIfname('vlsk') : undefined;
  if (!root) skipped.push('tap: needs root');
  const networks = [{ name: 'lan', vni: 10 }];
  const b = await startDaemon({
    hostId: 'soak-b',
    networks,
    logLevel: 'warn',
    ports: (dir) => [{ name: 'r1', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'r1.sock')}` }],
    extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${bPort}`, plain: true } }),
  });
  let a: TestDaemon | undefined;
  let ns: Netns | undefined;
  try {
    a = await startDaemon({
      hostId: 'soak-a',
      networks,
      logLevel: 'warn',
      ports: (dir) => [
        ...['s1', 's2', 'churn'].map((n) => ({
          name: n,
          kind: 'stream',
          network: 'lan',
          listen: `unix:${join(dir, `${n}.sock`)}`,
        })),
        { name: 'v1', kind: 'vhost-user', network: 'lan', listen: `unix:${join(dir, 'v1.sock')}` },
        ...(tapIf ? [{ name: 't1', kind: 'tap', network: 'lan', ifname: tapIf }] : []),
      ],
      extra: (dir) => ({
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`] },
        exports: [{ name: 'disk', backend: { type: 'memory', size: '64M' } }],
        overlay: { plain: true },
        links: [{ name: 'b', connect: `tcp:127.0.0.1:${bPort}` }],
      }),
    });
    if (tapIf) {
      ns = await Netns.create('soak');
      await ns.adopt(tapIf, '10.77.0.1/24');
      // Pings to 10.77.0.2 go out the TAP as unicast frames to the first stream peer.
      await ns.ip('neigh', 'replace', '10.77.0.2', 'lladdr', colons(S1), 'dev', tapIf);
    }
    const client = new ControlClient({ socketPath: a.control });
    const up = await until(async () => (await client.listLinks()).some((l) => l.state === 'up'), 30_000);
    await client.close();
    if (!up) throw new Error(`the link between the soak daemons did not come up:\n${a.log}\n${b.log}`);
    return { a, b, ns, tapIf };
  } catch (err) {
    await ns?.delete();
    await a?.cleanup();
    await b.cleanup();
    throw err;
  }
}

/** Runs the soak; resolves with the samples and the summary figures. */
export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const log = o.log ?? (() => undefined);
  const perTick = o.perTick ?? 2;
  const warmup = o.warmupSeconds ?? 15;
  const skipped: string[] = [];
  const rig = await startRig(skipped);
  const { a, b } = rig;
  const pid = a.pid as number;
  const status = new ControlClient({ socketPath: a.control });
  const samples: Sample[] = [];
  const counts: Record<string, Counts> = {};
  const steady: Source[] = [];
  let churn: Source[] = [];
  const t0 = Date.now();
  let phase: Sample['phase'] = 'warmup';
  const sampler = setInterval(() => {
    void status.status().then(
      (s) => {
        const d = s.process.event_loop_delay_ms;
        samples.push({
          t: Math.round((Date.now() - t0) / 100) / 10,
          phase,
          rssBytes: rssOf(pid),
          heapUsedBytes: s.process.heap_used_bytes,
          fds: fdsOf(pid),
          eldP99Ms: d.p99,
          eldMaxMs: d.max,
        });
      },
      () => undefined,
    );
  }, 1000);
  const startChurn = (): Source[] => [
    churnSource('stream-churn', a.path('churn.sock'), CHURN, S1, 500),
    apiSource('api-churn', a.control, 1000),
  ];
  const stopChurn = async (): Promise<void> => {
    for (const s of churn) {
      await s.stop();
      const c = counts[s.name] ?? { sent: 0, received: 0, errors: 0 };
      counts[s.name] = c;
      c.sent += s.counts.sent;
      c.received += s.counts.received;
      c.errors += s.counts.errors;
    }
    churn = [];
  };
  /** Waits until the fd count stops changing (or equals `want`), at most 10 s; returns it. */
  const settledFds = async (want?: number): Promise<number> => {
    let last = -1;
    await until(() => {
      const n = fdsOf(pid);
      const done = want === undefined ? n === last : n === want;
      last = n;
      return done;
    }, 10_000);
    return fdsOf(pid);
  };
  try {
    steady.push(
      await streamSource('stream-s1', a.path('s1.sock'), S1, [S2, R1, V1], perTick),
      await streamSource('stream-s2', a.path('s2.sock'), S2, [S1], perTick),
      await streamSource('link-r1', b.path('r1.sock'), R1, [S1], perTick),
      await vhostSource('vhost-v1', a.path('v1.sock'), V1, S1, perTick),
      await nbdSource('nbd', a.path('nbd.sock'), 10, false),
    );
    churn = [...startChurn(), await nbdSource('nbd-churn', a.path('nbd.sock'), 2, true)];
    if (rig.ns) steady.push(tapSource('tap-t1', rig.ns, '10.77.0.2'));
    log(`soak: warm-up ${warmup} s`);
    await sleep(warmup * 1000);
    await stopChurn();
    const baseline = { fds: await settledFds(), rssBytes: rssOf(pid) };
    log(
      `soak: baseline ${baseline.fds} fds, RSS ${(baseline.rssBytes / 2 ** 20).toFixed(1)} MiB; traffic ${o.seconds} s`,
    );
    phase = 'traffic';
    churn = [...startChurn(), await nbdSource('nbd-churn', a.path('nbd.sock'), 2, true)];
    await sleep(o.seconds * 1000);
    await stopChurn();
    const end = { fds: await settledFds(baseline.fds), rssBytes: rssOf(pid) };
    log(`soak: end ${end.fds} fds, RSS ${(end.rssBytes / 2 ** 20).toFixed(1)} MiB`);
    for (const s of steady) counts[s.name] = s.counts;
    const tap = counts['tap-t1'];
    if (tap) {
      await steady.find((s) => s.name === 'tap-t1')?.stop();
      tap.received = counts['stream-s1']?.ipv4 ?? 0;
    }
    const eld = {
      p99MaxMs: Math.max(0, ...samples.map((s) => s.eldP99Ms)),
      maxMs: Math.max(0, ...samples.map((s) => s.eldMaxMs)),
    };
    return { samples, baseline, end, eld, counts, skipped };
  } finally {
    clearInterval(sampler);
    await stopChurn().catch(() => undefined);
    for (const s of steady) await s.stop().catch(() => undefined);
    await status.close();
    await rig.ns?.delete();
    await a.cleanup();
    await b.cleanup();
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { warmup: { type: 'string', default: '15' }, out: { type: 'string' }, rate: { type: 'string' } },
  });
  const seconds = Number(positionals[0] ?? 300);
  const r = await runSoak({
    seconds,
    warmupSeconds: Number(values.warmup),
    ...(values.rate ? { perTick: Number(values.rate) } : {}),
    log: (l) => console.log(l),
  });
  const root = new URL('../..', import.meta.url).pathname;
  const out =
    values.out ?? join(root, 'bench', 'results', `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const summary = {
    seconds,
    warmupSeconds: Number(values.warmup),
    baseline: r.baseline,
    end: r.end,
    rssGrowthMiB: Math.round(((r.end.rssBytes - r.baseline.rssBytes) / 2 ** 20) * 10) / 10,
    fdDelta: r.end.fds - r.baseline.fds,
    eventLoopDelay: r.eld,
    counts: r.counts,
    skipped: r.skipped,
  };
  writeFileSync(out, `${JSON.stringify({ summary, samples: r.samples }, null, 2)}\n`);
  console.log(JSON.stringify(summary, null, 2));
  console.log(`samples and summary: ${out}`);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) await main();
