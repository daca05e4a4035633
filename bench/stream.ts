/**
 * Scenario "stream": frames pushed between two stream ports of one vmlink
 * daemon, versus the same generator and sink joined directly by one unix
 * socket (no switch: the ceiling). 64-byte and 1500-byte frames.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Measure, RateOpts, ScenarioResult } from './types.js';
import { fmtM, machineInfo, median, startBenchDaemon } from './util.js';

const GEN_MAC = '02:00:00:00:00:01';
const SINK_MAC = '02:00:00:00:00:02';

type Opts = RateOpts;

function node(root: string, args: string[], cpu: string | undefined, env?: Record<string, string>): ChildProcess {
  const argv = [join(root, 'dist', ...args[0]!.split('/')), ...args.slice(1)];
  const cmd = cpu === undefined ? process.execPath : 'taskset';
  const full = cpu === undefined ? argv : ['-c', cpu, process.execPath, ...argv];
  return spawn(cmd, full, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
}

async function firstLine(p: ChildProcess): Promise<string> {
  const rl = createInterface({ input: p.stdout! });
  const [line] = (await once(rl, 'line')) as [string];
  return line;
}

async function lastJson(p: ChildProcess): Promise<Record<string, number>> {
  const lines: string[] = [];
  const rl = createInterface({ input: p.stdout! });
  rl.on('line', (l) => lines.push(l));
  await once(p, 'close');
  const json = lines.reverse().find((l) => l.startsWith('{'));
  if (!json) throw new Error(`no result from ${p.spawnargs.join(' ')}`);
  return JSON.parse(json) as Record<string, number>;
}

/** One measured run: a sink at `sinkAddr` (listening or connecting) and a generator into `genAddr`. */
export async function run(
  o: Opts,
  size: number,
  sinkAddr: string,
  sinkMode: string,
  genAddr: string,
  /** The generator writes one frame per writev, as QEMU's -netdev stream does (bench/stream-peers.ts). */
  perFrame = false,
): Promise<Measure> {
  const sink = node(
    o.root,
    ['bench/stream-peers.js', 'sink', sinkAddr, sinkMode, String(o.seconds), SINK_MAC],
    o.pin ? '1' : undefined,
  );
  await firstLine(sink);
  const result = lastJson(sink);
  // Give the switch a moment to learn the sink's MAC from its hello frame.
  await new Promise((r) => setTimeout(r, 200));
  const gen = node(
    o.root,
    ['bench/stream-peers.js', 'gen', genAddr, String(size), String(o.seconds + 2), SINK_MAC, GEN_MAC],
    o.pin ? '0' : undefined,
    perFrame ? { STREAM_BENCH_PER_FRAME: '1' } : undefined,
  );
  const r = await result;
  gen.kill('SIGTERM');
  await once(gen, 'close').catch(() => {});
  return {
    fps: (r['frames'] as number) / (r['seconds'] as number),
    gbps: ((r['bytes'] as number) * 8) / (r['seconds'] as number) / 1e9,
  };
}

async function apiGet(sock: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: sock, path }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    req.end();
  });
}

export async function streamScenario(o: Opts): Promise<ScenarioResult> {
  const rows: Record<string, unknown>[] = [];
  for (const size of [64, 1500]) {
    const direct: Measure[] = [];
    const vm: Measure[] = [];
    let drops: unknown;
    for (let i = 0; i < o.repeat; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-'));
      try {
        direct.push(await run(o, size, join(dir, 'direct.sock'), 'listen', join(dir, 'direct.sock')));
        const d = await startBenchDaemon(
          o.root,
          dir,
          ['a', 'b'].map(
            (n) =>
              `{ name: ${n}, network: bench, kind: stream, listen: "unix:${join(dir, `${n}.sock`)}", queue_len: 4096 }`,
          ),
          o.pin ? '0-1' : undefined,
        );
        try {
          vm.push(await run(o, size, join(dir, 'b.sock'), 'connect', join(dir, 'a.sock')));
          const b = (await apiGet(d.control, '/v1/ports/b')) as { port: { counters: { drops: unknown } } };
          drops = b.port.counters.drops;
        } finally {
          d.proc.kill('SIGTERM');
          await once(d.proc, 'close');
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      console.log(
        `stream ${size} B run ${i + 1}: direct ${fmtM(direct.at(-1)!.fps)} f/s, vmlink ${fmtM(vm.at(-1)!.fps)} f/s`,
      );
    }
    const dFps = median(direct.map((m) => m.fps));
    const vFps = median(vm.map((m) => m.fps));
    rows.push({
      frame_bytes: size,
      direct_fps: Math.round(dFps),
      vmlink_fps: Math.round(vFps),
      direct_gbps: +median(direct.map((m) => m.gbps)).toFixed(3),
      vmlink_gbps: +median(vm.map((m) => m.gbps)).toFixed(3),
      ratio: +(vFps / dFps).toFixed(3),
      runs: o.repeat,
      seconds: o.seconds,
      vmlink_port_b_drops_last_run: drops,
    });
  }
  const md = [
    '## Stream ports: frames between two QEMU stream ports',
    '',
    `Generator -> vmlink port a -> switch -> port b -> sink, versus generator -> sink over one unix socket (the ceiling). Median of ${o.repeat} runs of ${o.seconds} s, ${o.pin ? 'pinned' : 'unpinned'}, ${cpus().length} cores.`,
    '',
    '| frame | direct frames/s | vmlink frames/s | direct Gbit/s | vmlink Gbit/s | vmlink/direct |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r['frame_bytes']} B | ${fmtM(r['direct_fps'] as number)} | ${fmtM(r['vmlink_fps'] as number)} | ${r['direct_gbps']} | ${r['vmlink_gbps']} | ${r['ratio']} |`,
    ),
    '',
    'Targets (issue 2): at least 2 M frames/s at 64 B, and at least 0.5 of the direct Gbit/s at 1500 B.',
  ].join('\n');
  return {
    scenario: 'stream',
    when: new Date().toISOString(),
    machine: machineInfo(),
    rows,
    markdown: md,
  };
}
