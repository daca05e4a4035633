/**
 * NBD server benchmark: `qemu-img bench` against vmlink's NBD server (file
 * backend), nbdkit's file plugin and qemu-nbd, all serving the same raw file
 * over unix sockets on this machine, one after the other.
 *
 *   node dist/bench/nbd.js [--size-mib 256] [--repeat 3] [--out results.json]
 *     [--peers vmlink,nbdkit-file,qemu-nbd] [--uv-threads 16]
 *
 * Also run by `npm run bench` (bench/run.ts, scenario "nbd"). The servers
 * run side by side; each pass runs every scenario on every server back to
 * back, so background load falls on all of them alike.
 *
 * qemu-img bench has no random mode: "4k stride" uses a step of 1 MiB + 4 KiB
 * so consecutive requests land far apart (no merging, no readahead help).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ScenarioResult } from './types.js';
import { machineInfo, median } from './util.js';

interface Scenario {
  name: string;
  args: string[];
  count: number;
  bytes: number;
}

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = argv.indexOf(name);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const SIZE = Number(opt('--size-mib', '256')) * 1024 * 1024;
/** libuv thread pool size for vmlink's server (file I/O threads); default 16, like nbdkit's thread count. */
const UV_THREADS = opt('--uv-threads', '16');

const STRIDE = String(1024 * 1024 + 4096);
const scenarios: Scenario[] = [
  { name: '4k stride read, depth 16', args: ['-d', '16', '-s', '4k', '-S', STRIDE], count: 40000, bytes: 4096 },
  { name: '4k stride write, depth 16', args: ['-w', '-d', '16', '-s', '4k', '-S', STRIDE], count: 40000, bytes: 4096 },
  { name: '1M sequential read, depth 4', args: ['-d', '4', '-s', '1M'], count: 1500, bytes: 1 << 20 },
  { name: '1M sequential write, depth 4', args: ['-w', '-d', '4', '-s', '1M'], count: 1500, bytes: 1 << 20 },
];

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout + stderr),
    ),
  );
}

async function waitForSocket(uri: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await sh('nbdinfo', ['--size', uri]);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`server at ${uri} did not come up`);
}

interface Peer {
  name: string;
  start(image: string, sock: string): Promise<ChildProcess>;
}

const MAIN = new URL('../test/helpers/nbd-server-main.js', import.meta.url).pathname;
const peers: Peer[] = [
  {
    name: 'vmlink',
    async start(image, sock) {
      const cfg = { listen: [`unix:${sock}`], exports: [{ name: 'disk', backend: { kind: 'file', path: image } }] };
      const p = spawn(process.execPath, [MAIN, JSON.stringify(cfg)], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, UV_THREADPOOL_SIZE: UV_THREADS, VMLINK_LOG_LEVEL: 'warn' },
      });
      const lines = createInterface({ input: p.stdout as NodeJS.ReadableStream });
      await new Promise<void>((resolve, reject) => {
        lines.on('line', (l) => l.startsWith('READY') && resolve());
        p.once('exit', (c) => reject(new Error(`vmlink NBD server exited ${c}`)));
      });
      return p;
    },
  },
  {
    name: 'nbdkit-file',
    async start(image, sock) {
      const p = spawn('nbdkit', ['-f', '-U', sock, 'file', `file=${image}`], { stdio: 'inherit' });
      await waitForSocket(`nbd+unix:///?socket=${sock}`);
      return p;
    },
  },
  {
    name: 'qemu-nbd',
    async start(image, sock) {
      const p = spawn('qemu-nbd', ['-f', 'raw', '-k', sock, '--persistent', '--shared=8', image], { stdio: 'inherit' });
      await waitForSocket(`nbd+unix:///?socket=${sock}`);
      return p;
    },
  },
];

type Rates = Record<string, Record<string, { seconds: number; opsPerSec: number; mibPerSec: number }>>;

/** One measured qemu-img bench run (after an unmeasured warm-up of a quarter of its count). */
async function measure(s: Scenario, uri: string): Promise<{ seconds: number; opsPerSec: number; mibPerSec: number }> {
  // Warm-up, for every server alike: a JIT compiles vmlink's hot path during its first few
  // thousand requests (a first 4 KiB run measured about half the speed of the next ones).
  await sh('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', String(s.count >> 2), ...s.args, uri]);
  const out = await sh('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', String(s.count), ...s.args, uri]);
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`cannot parse qemu-img bench output: ${out}`);
  const seconds = Number(m[1]);
  return { seconds, opsPerSec: s.count / seconds, mibPerSec: (s.count * s.bytes) / seconds / (1 << 20) };
}

/**
 * `repeat` passes with every server running (an idle server costs nothing);
 * within a pass each scenario runs on every server back to back, so the
 * runs compared in one ratio are seconds apart and share the machine's load.
 */
async function runPasses(image: string, dir: string, only: string[], repeat: number, log: boolean): Promise<Rates[]> {
  const running: { name: string; proc: ChildProcess; uri: string }[] = [];
  const runs: Rates[] = [];
  try {
    for (const peer of peers.filter((p) => only.includes(p.name))) {
      const sock = join(dir, `${peer.name}.sock`);
      const proc = await peer.start(image, sock);
      running.push({
        name: peer.name,
        proc,
        uri: `nbd+unix:///${peer.name === 'vmlink' ? 'disk' : ''}?socket=${sock}`,
      });
    }
    for (let i = 0; i < repeat; i++) {
      const pass: Rates = {};
      for (const s of scenarios) {
        for (const { name, uri } of running) {
          const r = await measure(s, uri);
          pass[name] ??= {};
          (pass[name] as Rates[string])[s.name] = r;
          if (log)
            console.log(
              `pass ${i + 1} ${name.padEnd(12)} ${s.name.padEnd(30)} ${r.opsPerSec.toFixed(0).padStart(8)} ops/s ${r.mibPerSec.toFixed(1).padStart(8)} MiB/s`,
            );
        }
      }
      runs.push(pass);
    }
  } finally {
    for (const { proc } of running) {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    }
  }
  return runs;
}

const fmtOps = (n: number): string => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));

/** The "nbd" scenario: `repeat` passes over vmlink, nbdkit (file plugin) and qemu-nbd; medians and ratios. */
export async function nbdScenario(opts: {
  repeat: number;
  peers?: string[];
  log?: boolean;
}): Promise<ScenarioResult & { runs: Rates[] }> {
  const only = opts.peers ?? ['vmlink', 'nbdkit-file', 'qemu-nbd'];
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-bench-nbd-'));
  const image = join(dir, 'disk.img');
  const fh = await open(image, 'w');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  for (let off = 0; off < SIZE; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
  await fh.close();
  let runs: Rates[] = [];
  try {
    runs = await runPasses(image, dir, only, opts.repeat, opts.log ?? false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const med = (peer: string, s: string): number => median(runs.map((r) => r[peer]?.[s]?.opsPerSec ?? 0));
  const rows = scenarios.map((s) => {
    const v = med('vmlink', s.name);
    const k = med('nbdkit-file', s.name);
    const q = med('qemu-nbd', s.name);
    const perPass = (peer: string): number[] =>
      runs.map((r) => (r['vmlink']?.[s.name]?.opsPerSec ?? 0) / (r[peer]?.[s.name]?.opsPerSec ?? 1));
    return {
      scenario: s.name,
      vmlinkOps: v,
      nbdkitOps: k,
      qemuNbdOps: q,
      // Median of the per-pass ratios: each compares runs seconds apart under the same load.
      vsNbdkit: k ? median(perPass('nbdkit-file')) : null,
      vsQemuNbd: q ? median(perPass('qemu-nbd')) : null,
      vsNbdkitPerRun: perPass('nbdkit-file'),
    };
  });
  const ratio = (x: number | null): string => (x === null ? '-' : x.toFixed(2));
  const md = [
    '## NBD: vmlink versus nbdkit (file plugin) and qemu-nbd',
    '',
    `\`qemu-img bench\` (cache=none on the client) against each server serving the same ${SIZE >> 20} MiB raw file (page-cached) over a unix socket; "4k stride" steps 1 MiB + 4 KiB (qemu-img bench has no random mode). ${opts.repeat} passes; in each pass every scenario runs on the three servers back to back, each measured run after an unmeasured warm-up of a quarter of its count. Ops/s are medians over the passes; ratios are the medians of the per-pass ratios (runs seconds apart, same load). Unpinned, 2 cores shared with qemu-img.`,
    '',
    '| scenario | vmlink | nbdkit file | qemu-nbd | vmlink/nbdkit | vmlink/nbdkit per pass | vmlink/qemu-nbd |',
    '| --- | ---: | ---: | ---: | ---: | --- | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.scenario} | ${fmtOps(r.vmlinkOps)} | ${fmtOps(r.nbdkitOps)} | ${fmtOps(r.qemuNbdOps)} | ${ratio(r.vsNbdkit)} | ${r.vsNbdkitPerRun.map((x) => x.toFixed(2)).join(', ')} | ${ratio(r.vsQemuNbd)} |`,
    ),
    '',
    'Target (issue 6): at least 1.0x nbdkit on every row.',
  ].join('\n');
  return { scenario: 'nbd', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md, runs };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const r = await nbdScenario({
      repeat: Number(opt('--repeat', '1')),
      peers: opt('--peers', 'vmlink,nbdkit-file,qemu-nbd').split(','),
      log: true,
    });
    console.log(`\n${r.markdown}`);
    const out = opt('--out', '');
    if (out) await writeFile(out, `${JSON.stringify(r, null, 2)}\n`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
