/**
 * Cluster control-plane benchmark: N hosts' ClusterAgents (membership and
 * locations, the daemon's code without the data plane), `--ports` MACs each,
 * spread over `--workers` child processes (bench/cluster-worker.ts; the
 * agents of one worker share one EtcdConnection, each has its own lease and
 * watches), against a real etcd started here (one member, loopback).
 *
 * For each N it measures:
 * - initial sync: from the start until every agent is registered and has
 *   installed every other host's MACs;
 * - convergence: a new MAC learned at a random host (and then moved to
 *   another) until all N-1 other agents installed it (at seq 1, and at seq 2
 *   toward the new host), one change at a time: p50/p99;
 * - etcd writes per change: the revision delta over those changes;
 * - CPU and RSS per agent at rest and during a burst of `--burst` new MACs
 *   (all at once; their convergence p50/p99 too);
 * - join: one more host (its own connection) from start to every MAC installed;
 * - with N = `--outage-hosts`: etcd killed for `--outage-s`, then the time
 *   until every agent is registered with all its MACs written under its
 *   current lease and every MAC known, and until a MAC learned at that moment
 *   is installed by all the other agents (their watches resumed); CPU per
 *   agent during the outage.
 *
 *   node dist/bench/cluster.js [--hosts 10,100,1000] [--ports 10] [--workers 4] [--samples 100]
 *        [--burst 1000] [--rest-s 10] [--outage-s 30] [--outage-hosts 100] [--ttl 10]
 *        [--per-conn 50] [--load-rate 200] [--json FILE]
 *
 * Start-up: the agents start (register, read, watch) in groups of 10 per
 * worker, then publish their MACs at `--load-rate` per second in all; the
 * agents of a worker share one EtcdConnection per `--per-conn` agents.
 *
 * Outside the test run; no result here is a pass/fail threshold.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { EtcdConnection } from '../src/cluster/etcd.js';
import { silentLogger } from '../src/log.js';
import { startEtcd } from '../test/helpers/etcd.js';
import type { FromWorker, ToWorker } from './cluster-worker.js';
import { benchMac, machineInfo, median } from './util.js';

const { values: args } = parseArgs({
  options: {
    hosts: { type: 'string', default: '10,100,1000' },
    ports: { type: 'string', default: '10' },
    workers: { type: 'string', default: '4' },
    samples: { type: 'string', default: '100' },
    burst: { type: 'string', default: '1000' },
    'rest-s': { type: 'string', default: '10' },
    'outage-s': { type: 'string', default: '30' },
    'outage-hosts': { type: 'string', default: '100' },
    ttl: { type: 'string', default: '10' },
    'per-conn': { type: 'string', default: '50' },
    'load-rate': { type: 'string', default: '200' },
    json: { type: 'string' },
  },
});
const PORTS = Number(args.ports);
const SAMPLES = Number(args.samples);
const BURST = Number(args.burst);
const TTL = Number(args.ttl);
const PREFIX = '/vmlink/';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? 0;
}
const r1 = (x: number) => Math.round(x * 10) / 10;

/** CPU ms used so far by the etcd processes this bench started (children named etcd). */
function etcdCpuMs(): number {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (!stat.includes('(etcd)') || Number(rest[1]) !== process.pid) continue;
      ticks += Number(rest[11]) + Number(rest[12]);
    } catch {
      // gone
    }
  }
  return ticks * 10;
}

class Worker {
  readonly proc: ChildProcess;
  readonly #waiters = new Map<string, (m: FromWorker) => void>();
  rssBase = 0;

  constructor(
    readonly hosts: string[],
    readonly base: number,
  ) {
    this.proc = fork(new URL('./cluster-worker.js', import.meta.url), [], { execArgv: ['--expose-gc'] });
    this.proc.on('message', (m: FromWorker) => {
      const key = 'id' in m ? `${m.op}:${m.id}` : m.op;
      const f = this.#waiters.get(key);
      this.#waiters.delete(key);
      f?.(m);
    });
  }

  send(m: ToWorker): void {
    this.proc.send(m);
  }

  wait<T extends FromWorker>(key: string): Promise<T> {
    return new Promise((r) => this.#waiters.set(key, r as (m: FromWorker) => void));
  }

  async usage(): Promise<Extract<FromWorker, { op: 'usage' }>> {
    const p = this.wait<Extract<FromWorker, { op: 'usage' }>>('usage');
    this.send({ op: 'usage' });
    return p;
  }
}

let nextId = 1;

/** Sends `expect` for `tag` to every worker (the count of its agents that must install it), then runs `go`. */
async function converge(workers: Worker[], tag: string, except: string, go: () => Promise<number>): Promise<number> {
  const id = nextId++;
  const reached = workers.map((w) => {
    const p = w.wait<Extract<FromWorker, { op: 'reached' }>>(`reached:${id}`);
    w.send({ op: 'expect', id, tag, count: w.hosts.length - (w.hosts.includes(except) ? 1 : 0) });
    return p;
  });
  const t0 = await go();
  const ats = await Promise.all(reached);
  return Math.max(...ats.map((m) => m.at)) - t0;
}

async function learn(w: Worker, host: string, mac: string, port: string): Promise<number> {
  const id = nextId++;
  const p = w.wait<Extract<FromWorker, { op: 'learned' }>>(`learned:${id}`);
  w.send({ op: 'learn', id, host, mac, port });
  return (await p).at;
}

async function allSynced(workers: Worker[], up: number, known: number): Promise<number> {
  const id = nextId++;
  const ats = await Promise.all(
    workers.map((w) => {
      const p = w.wait<Extract<FromWorker, { op: 'synced' }>>(`synced:${id}`);
      w.send({ op: 'synced', id, up, known });
      return p;
    }),
  );
  return Math.max(...ats.map((m) => m.at));
}

/** CPU (% of one core) and RSS (MiB) per agent over the time since the last usage call. */
async function usage(workers: Worker[], ms: number): Promise<{ cpuPct: number; rssMiB: number; workerRssMiB: number }> {
  const us = await Promise.all(workers.map((w) => w.usage()));
  const agents = us.reduce((s, u) => s + u.agents, 0);
  const cpuMs = us.reduce((s, u) => s + u.cpuMs, 0);
  const rss = us.reduce((s, u, i) => s + u.rss - (workers[i]?.rssBase ?? 0), 0);
  return {
    cpuPct: Math.round((((cpuMs / ms) * 100) / agents) * 1000) / 1000,
    rssMiB: Math.round((rss / agents / 2 ** 20) * 100) / 100,
    workerRssMiB: Math.round(Math.max(...us.map((u) => u.rss)) / 2 ** 20),
  };
}

async function runN(hosts: number): Promise<Record<string, unknown>> {
  let n = hosts;
  const etcd = await startEtcd({ extraArgs: ['--quota-backend-bytes', String(4 * 2 ** 30)] });
  const raw = new EtcdConnection({ endpoints: etcd.endpoints, prefix: PREFIX, logger: silentLogger() });
  const revision = async () => Number((await raw.kv.get('fabric').exec()).header.revision);
  const wn = Math.min(Number(args.workers), n);
  const ids = Array.from({ length: n }, (_, i) => `h${String(i).padStart(4, '0')}`);
  const workers: Worker[] = [];
  for (let w = 0; w < wn; w++) {
    const from = Math.floor((w * n) / wn);
    workers.push(new Worker(ids.slice(from, Math.floor(((w + 1) * n) / wn)), from));
  }
  const workerOf = (host: string) => workers.find((w) => w.hosts.includes(host)) as Worker;
  const out: Record<string, unknown> = { hosts: n, ports: n * PORTS, workers: wn, ttlSec: TTL };
  try {
    // Initial sync.
    const t0 = now();
    await Promise.all(
      workers.map(async (w) => {
        const p = w.wait<Extract<FromWorker, { op: 'started' }>>('started');
        w.send({
          op: 'start',
          endpoints: etcd.endpoints,
          prefix: PREFIX,
          hosts: w.hosts,
          ports: PORTS,
          base: w.base,
          ttlSec: TTL,
          perConn: Number(args['per-conn']),
          rate: Number(args['load-rate']) / wn,
        });
        w.rssBase = (await p).rssBase;
      }),
    );
    let known = n * PORTS;
    out['initialSyncS'] = Math.round((await allSynced(workers, n, known)) - t0) / 1000;
    console.log(`N=${n}: initial sync of ${known} MACs at ${n} agents: ${out['initialSyncS']} s`);

    // At rest.
    await sleep(2000);
    await usage(workers, 1);
    const e0 = etcdCpuMs();
    const rev0 = await revision();
    const restMs = Number(args['rest-s']) * 1000;
    await sleep(restMs);
    out['rest'] = {
      ...(await usage(workers, restMs)),
      etcdCpuPct: r1(((etcdCpuMs() - e0) / restMs) * 100),
      writes: (await revision()) - rev0,
    };
    console.log(`N=${n}: at rest`, out['rest']);

    // Convergence of a new MAC, then of a move, one change at a time.
    const lat: number[] = [];
    const owners: string[] = [];
    let rev = await revision();
    for (let i = 0; i < SAMPLES; i++) {
      const host = ids[Math.floor(Math.random() * n)] as string;
      const mac = benchMac(10_000_000 + i);
      owners.push(host);
      lat.push(await converge(workers, `${mac}|${host}|1`, host, () => learn(workerOf(host), host, mac, 'new')));
    }
    known += SAMPLES;
    out['newMac'] = {
      p50Ms: r1(median(lat)),
      p99Ms: r1(pct(lat, 0.99)),
      writesPerChange: ((await revision()) - rev) / SAMPLES,
    };
    console.log(`N=${n}: new MAC`, out['newMac']);
    const mv: number[] = [];
    rev = await revision();
    for (let i = 0; i < SAMPLES; i++) {
      const from = owners[i] as string;
      let to = from;
      while (to === from) to = ids[Math.floor(Math.random() * n)] as string;
      const mac = benchMac(10_000_000 + i);
      mv.push(await converge(workers, `${mac}|${to}|2`, to, () => learn(workerOf(to), to, mac, 'moved')));
    }
    out['move'] = {
      p50Ms: r1(median(mv)),
      p99Ms: r1(pct(mv, 0.99)),
      writesPerChange: ((await revision()) - rev) / SAMPLES,
    };
    console.log(`N=${n}: move`, out['move']);

    // A burst of new MACs at random hosts, all at once.
    await usage(workers, 1);
    const e1 = etcdCpuMs();
    rev = await revision();
    const tb = now();
    const burst = await Promise.all(
      Array.from({ length: BURST }, (_, i) => {
        const host = ids[Math.floor(Math.random() * n)] as string;
        const mac = benchMac(20_000_000 + i);
        return converge(workers, `${mac}|${host}|1`, host, () => learn(workerOf(host), host, mac, 'burst'));
      }),
    );
    known += BURST;
    const burstMs = now() - tb;
    out['burst'] = {
      changes: BURST,
      allConvergedS: Math.round(burstMs) / 1000,
      p50Ms: r1(median(burst)),
      p99Ms: r1(pct(burst, 0.99)),
      writesPerChange: ((await revision()) - rev) / BURST,
      ...(await usage(workers, burstMs)),
      etcdCpuPct: r1(((etcdCpuMs() - e1) / burstMs) * 100),
    };
    console.log(`N=${n}: burst`, out['burst']);

    // One more host joins the populated fabric: start to every MAC installed.
    const j = workers[0] as Worker;
    const jid = nextId++;
    const joined = j.wait<Extract<FromWorker, { op: 'joined' }>>(`joined:${jid}`);
    j.send({ op: 'join', id: jid, host: 'joiner', endpoints: etcd.endpoints, prefix: PREFIX, ttlSec: TTL });
    out['join'] = { macs: known, ms: r1((await joined).ms) };
    console.log(`N=${n}: a host joins`, out['join']);
    j.hosts.push('joiner');
    n += 1;

    if (n - 1 === Number(args['outage-hosts'])) {
      const outMs = Number(args['outage-s']) * 1000;
      await usage(workers, 1);
      await etcd.killAll();
      await sleep(outMs);
      const during = await usage(workers, outMs);
      await etcd.startAll();
      const back = now();
      const at = await allSynced(workers, n, known);
      // A change right after etcd is back: it converges once the publisher's write gets through and
      // every agent's watch has resumed.
      const host = ids[0] as string;
      const mac = benchMac(30_000_000);
      const first = await converge(workers, `${mac}|${host}|1`, host, async () => {
        await learn(workerOf(host), host, mac, 'after');
        return back;
      });
      out['outage'] = {
        outageS: outMs / 1000,
        resyncS: Math.round(at - back) / 1000,
        firstChangeConvergedS: Math.round(first) / 1000,
        cpuPctDuring: during.cpuPct,
      };
      console.log(`N=${n}: outage`, out['outage']);
    }
  } finally {
    for (const w of workers) w.send({ op: 'exit' });
    await Promise.all(
      workers.map((w) =>
        Promise.race([new Promise((r) => w.proc.once('exit', r)), sleep(10_000).then(() => w.proc.kill('SIGKILL'))]),
      ),
    );
    await raw.close();
    await etcd.stop();
  }
  return out;
}

const results = [];
for (const n of String(args.hosts).split(',').map(Number)) results.push(await runN(n));
const report = { bench: 'cluster', date: new Date().toISOString(), machine: machineInfo(), ttlSec: TTL, results };
console.log(JSON.stringify(report, null, 2));
writeFileSync(
  args.json ?? `bench/results/cluster-${report.date.replace(/[:.]/g, '-')}.json`,
  `${JSON.stringify(report, null, 2)}\n`,
);
