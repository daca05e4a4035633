/**
 * `npm run bench:metrics`: what `/metrics` costs.
 *
 * (a) 64-byte frames between two stream ports of one daemon (bench/stream's
 *     generator and sink), with `/metrics` scraped every 100 ms and without,
 *     in the same run: phases of --seconds (default 1) interleaved in blocks
 *     of four (off, on, on, off), --repeat blocks (default 15); the ratio of
 *     frames/s.
 * (b) The cost of a scrape (the daemon's CPU time, the time seen by the
 *     scraper) and its size with 2, 100 and 1,000 ports.
 *
 * The daemon is started as a user starts it: `vmlink daemon --config FILE`
 * with default settings and an `http:` section.
 *
 *   node dist/bench/metrics.js [--seconds S] [--repeat N] [--pin] [--ports 2,100,1000] [--scrapes N]
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { run as streamRun } from './stream.js';
import type { Measure, RateOpts, ScenarioResult } from './types.js';
import { fmtM, machineInfo, median, startBenchDaemon, writeResult } from './util.js';

const root = new URL('../..', import.meta.url).pathname;
const SCRAPE_INTERVAL_MS = 100;
const HTTP_LINE = 'http: { listen: "tcp:127.0.0.1:0" }';

/** GET on the control socket, JSON. */
function controlGet(sock: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: sock, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The daemon's HTTP base URL from `GET /v1/status` (port 0 resolved). */
async function httpBase(control: string): Promise<string> {
  const s = (await controlGet(control, '/v1/status')) as { http?: { listen: string[]; reason?: string } };
  const listen = s.http?.listen[0];
  if (!listen) throw new Error(`the daemon's HTTP endpoint is not listening: ${s.http?.reason ?? 'no http in status'}`);
  return `http://${listen.replace(/^tcp:/, '')}`;
}

interface Scrape {
  ms: number;
  bytes: number;
}

/** One scrape of `/metrics` (a kept-alive connection, as Prometheus keeps one); fails unless 200. */
async function scrape(base: string): Promise<Scrape> {
  const t0 = performance.now();
  const res = await fetch(`${base}/metrics`);
  const body = await res.arrayBuffer();
  const ms = performance.now() - t0;
  if (res.status !== 200)
    throw new Error(`GET /metrics answered ${res.status}: ${Buffer.from(body).toString().slice(0, 200)}`);
  return { ms, bytes: body.byteLength };
}

/** Scrapes every `intervalMs` (start to start) until stopped; resolves with every scrape's time. */
function scraper(base: string, intervalMs: number): { stop: () => Promise<Scrape[]> } {
  const done: Scrape[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      done.push(await scrape(base));
      const wait = intervalMs - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return done;
    },
  };
}

/** CPU time (user + system) a process has used, ms, from /proc/PID/stat (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] as number;
}

/** Frames port `name` has sent to its peer, from the control socket. */
async function txFrames(control: string, name: string): Promise<number> {
  const v = (await controlGet(control, `/v1/ports/${name}`)) as { port: { counters: { tx_frames: number } } };
  return v.port.counters.tx_frames;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Seconds of traffic before the first phase (the daemon's forwarding code gets optimised). */
const WARM_S = 3;
/** Phase order in blocks of four (ABBA): a drift of the machine's load favours neither. */
const BLOCK = [false, true, true, false];

/**
 * (a): one long 64 B run through one daemon, cut into phases of `o.seconds`
 * alternating not scraped / scraped (ABBA blocks); each phase's rate is the
 * delta of port b's transmitted frames over it (read on the control socket
 * at both ends of every phase, scraped or not, so that read costs both
 * alike). Interleaving by the second rather than by whole runs keeps the
 * shared machine's drift out of the comparison.
 */
async function throughput(o: RateOpts): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-metrics-'));
  const off: number[] = [];
  const on: number[] = [];
  const blocks: number[] = [];
  const scrapes: Scrape[] = [];
  /** This process's CPU time (ms) in the phases not scraped and scraped: the scraper's own share of the machine. */
  let cpuOff = 0;
  let cpuOn = 0;
  let whole: Measure;
  try {
    const d = await startBenchDaemon(
      o.root,
      dir,
      ['a', 'b'].map((n) => `{ name: ${n}, network: bench, kind: stream, listen: "unix:${join(dir, `${n}.sock`)}" }`),
      o.pin ? '0-1' : undefined,
      1500,
      [HTTP_LINE],
    );
    try {
      const base = await httpBase(d.control);
      await scrape(base);
      const phases = BLOCK.length * o.repeat;
      const traffic = streamRun(
        // Phases run a little longer than o.seconds (the counter reads, the scraper's stop): a margin of 20% and 5 s.
        { ...o, seconds: WARM_S + phases * o.seconds * 1.2 + 5 },
        64,
        join(dir, 'b.sock'),
        'connect',
        join(dir, 'a.sock'),
      );
      await sleep(WARM_S * 1000);
      const pairSum = (xs: number[], b: number) => (xs[b] as number) + (xs[b + 1] as number);
      for (let i = 0; i < phases; i++) {
        const scraped = BLOCK[i % BLOCK.length] as boolean;
        const c0 = process.cpuUsage();
        const s = scraped ? scraper(base, SCRAPE_INTERVAL_MS) : undefined;
        const f0 = await txFrames(d.control, 'b');
        const t0 = performance.now();
        await sleep(o.seconds * 1000);
        const f1 = await txFrames(d.control, 'b');
        const fps = (f1 - f0) / ((performance.now() - t0) / 1000);
        if (s) scrapes.push(...(await s.stop()));
        const c = process.cpuUsage(c0);
        if (scraped) cpuOn += (c.user + c.system) / 1000;
        else cpuOff += (c.user + c.system) / 1000;
        (scraped ? on : off).push(fps);
        if (i % BLOCK.length === BLOCK.length - 1) {
          const b = blocks.length * 2;
          blocks.push(pairSum(on, b) / pairSum(off, b));
          console.log(
            `metrics (a) block ${blocks.length}: not scraped ${fmtM(pairSum(off, b) / 2)} f/s, scraped ${fmtM(pairSum(on, b) / 2)} f/s`,
          );
        }
      }
      whole = await traffic;
    } finally {
      d.proc.kill('SIGTERM');
      await once(d.proc, 'close');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
  // The blocks' ratios are the samples: their mean, and twice its standard error (about a 95% interval).
  const m = mean(blocks);
  const se = Math.sqrt(blocks.reduce((a, x) => a + (x - m) ** 2, 0) / Math.max(1, blocks.length - 1) / blocks.length);
  return {
    frame_bytes: 64,
    blocks: o.repeat,
    phase_seconds: o.seconds,
    not_scraped_fps: Math.round(mean(off)),
    scraped_fps: Math.round(mean(on)),
    ratio: +(mean(on) / mean(off)).toFixed(4),
    median_block_ratio: +median(blocks).toFixed(4),
    mean_block_ratio: +m.toFixed(4),
    mean_block_ratio_95: [+(m - 2 * se).toFixed(4), +(m + 2 * se).toFixed(4)],
    block_ratios: blocks.map((r) => +r.toFixed(4)),
    not_scraped_median_fps: Math.round(median(off)),
    scraped_median_fps: Math.round(median(on)),
    whole_run_fps: Math.round(whole.fps),
    scrapes: scrapes.length,
    scrape_ms_median: +median(scrapes.map((x) => x.ms)).toFixed(2),
    scrape_bytes: scrapes.at(-1)?.bytes ?? 0,
    scraper_cpu_ms_per_scrape: +((cpuOn - cpuOff) / scrapes.length).toFixed(2),
  };
}

/** (b): a daemon with `n` listening stream ports; `count` scrapes one after another. */
async function scrapeCost(o: RateOpts, n: number, count: number): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-metrics-'));
  try {
    const lines = Array.from(
      { length: n },
      (_, i) => `{ name: p${i}, network: bench, kind: stream, listen: "unix:${join(dir, `p${i}.sock`)}" }`,
    );
    const d = await startBenchDaemon(o.root, dir, lines, o.pin ? '0-1' : undefined, 1500, [HTTP_LINE]);
    try {
      const base = await httpBase(d.control);
      for (let i = 0; i < 3; i++) await scrape(base); // warm up (JIT, connection)
      // At least `count` scrapes and at least 3 s of them, so the daemon's CPU time (10 ms ticks) is measurable.
      const runs: Scrape[] = [];
      const pid = d.proc.pid as number;
      const cpu0 = cpuMs(pid);
      const t0 = performance.now();
      while (runs.length < count || performance.now() - t0 < 3000) runs.push(await scrape(base));
      const cpu = (cpuMs(pid) - cpu0) / runs.length;
      const text = await (await fetch(`${base}/metrics`)).text();
      const samples = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
      const families = text.split('\n').filter((l) => l.startsWith('# TYPE ')).length;
      const ms = runs.map((r) => r.ms);
      console.log(
        `metrics (b) ${n} ports: ${cpu.toFixed(2)} ms CPU per scrape, median ${median(ms).toFixed(1)} ms, ${runs.at(-1)?.bytes} bytes`,
      );
      return {
        ports: n,
        scrapes: runs.length,
        cpu_ms_per_scrape: +cpu.toFixed(2),
        ms_median: +median(ms).toFixed(2),
        ms_p90: +pct(ms, 0.9).toFixed(2),
        ms_max: +Math.max(...ms).toFixed(2),
        bytes: runs.at(-1)?.bytes ?? 0,
        samples,
        families,
      };
    } finally {
      d.proc.kill('SIGTERM');
      await once(d.proc, 'close');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function markdown(a: Record<string, unknown>, b: Record<string, unknown>[], o: RateOpts): string {
  const kib = (x: unknown) => `${((x as number) / 1024).toFixed(0)} KiB`;
  return [
    '## Metrics: the cost of `/metrics` (`npm run bench:metrics`)',
    '',
    `(a) 64 B frames, generator -> port a -> switch -> port b -> sink (bench/stream's peers), one daemon started with defaults and \`${HTTP_LINE}\`; one run: ${WARM_S} s of warm-up, then ${o.repeat} blocks of four ${o.seconds} s phases (not scraped, scraped, scraped, not scraped); scraped: \`/metrics\` fetched every ${SCRAPE_INTERVAL_MS} ms (start to start, one kept-alive connection). A phase's rate is the delta of port b's transmitted frames over it; ${o.pin ? 'pinned' : 'unpinned'}, ${cpus().length} cores.`,
    '',
    '| not scraped frames/s (mean) | scraped frames/s (mean) | scraped/not | block ratios: median | mean (about 95% interval) | scrapes | scrape time (median) | body |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${fmtM(a['not_scraped_fps'] as number)} | ${fmtM(a['scraped_fps'] as number)} | ${a['ratio']} | ${a['median_block_ratio']} | ${a['mean_block_ratio']} (${(a['mean_block_ratio_95'] as number[]).join(' to ')}) | ${a['scrapes']} | ${a['scrape_ms_median']} ms | ${kib(a['scrape_bytes'])} |`,
    '',
    `Block ratios (scraped/not): ${(a['block_ratios'] as number[]).join(', ')}. The scraper (this bench process, on the same ${cpus().length} cores as the generator, the daemon and the sink) used ${a['scraper_cpu_ms_per_scrape']} ms of CPU per scrape. Target (issue 15): at most 2% fewer frames/s when scraped (ratio >= 0.98).`,
    '',
    "(b) Scrape cost and size, a daemon with N listening stream ports (no peers, otherwise idle), scrapes one after another: the daemon's CPU time per scrape (from /proc, user + system, over all scrapes), and the time a scrape takes seen from the client (request to last byte over loopback):",
    '',
    '| ports | scrapes | daemon CPU per scrape | median | p90 | max | body | samples | families |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...b.map(
      (r) =>
        `| ${r['ports']} | ${r['scrapes']} | ${r['cpu_ms_per_scrape']} ms | ${r['ms_median']} ms | ${r['ms_p90']} ms | ${r['ms_max']} ms | ${kib(r['bytes'])} | ${r['samples']} | ${r['families']} |`,
    ),
    '',
    "Reading these: a scrape runs on the daemon's one event loop, so its CPU time per scrape times the scrape rate is the share of that loop taken from forwarding (scraped every 100 ms, the figure of (b) in ms is that share in per cent of a core); while it runs (a few ms at a few ports, tens of ms at 1,000), the ports are not served and their socket buffers fill. In (a) the scraper also runs on the same cores as the generator, the daemon and the sink, as a Prometheus on the same host would. Every NBD export adds 184 samples (8 operations: a 17-bucket histogram, requests and errors; state, size, clients, bytes, in flight).",
  ].join('\n');
}

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '1' },
    repeat: { type: 'string', default: '15' },
    pin: { type: 'boolean', default: false },
    ports: { type: 'string', default: '2,100,1000' },
    scrapes: { type: 'string', default: '30' },
  },
});
const seconds = Number(values.seconds);
const repeat = Number(values.repeat);
const scrapes = Number(values.scrapes);
const portCounts = values.ports.split(',').map(Number);
if (
  !(seconds > 0) ||
  !Number.isInteger(repeat) ||
  repeat < 1 ||
  !Number.isInteger(scrapes) ||
  scrapes < 1 ||
  !portCounts.every((n) => Number.isInteger(n) && n >= 1)
) {
  console.error('usage: metrics.js [--seconds S>0] [--repeat N>=1] [--pin] [--ports N,N...] [--scrapes N>=1]');
  process.exit(2);
}
const o: RateOpts = { root, seconds, repeat, pin: values.pin === true };
const a = await throughput(o);
const b: Record<string, unknown>[] = [];
for (const n of portCounts) b.push(await scrapeCost(o, n, scrapes));
const result: ScenarioResult = {
  scenario: 'metrics',
  when: new Date().toISOString(),
  machine: machineInfo(),
  rows: [{ part: 'throughput', ...a }, ...b.map((r) => ({ part: 'scrape', ...r }))],
  markdown: markdown(a, b, o),
};
writeResult(root, result, new Date().toISOString().replace(/[:.]/g, '-'));
