/**
 * Scenario "vhost": frames between two vhost-user ports of one vmlink
 * daemon, versus the same between two stream ports of one daemon, in the
 * same run. Peers: vhost-user front-ends playing fast guest drivers
 * (bench/vhost-peers.ts) and the stream generator and sink
 * (bench/stream-peers.ts). 64-byte frames and 64 KiB frames (network MTU
 * 65535).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { run as streamRun } from './stream.js';
import type { Measure, RateOpts, ScenarioResult } from './types.js';
import { fmtM, machineInfo, median, startBenchDaemon } from './util.js';

const GEN_MAC = '02:00:00:00:00:01';
const SINK_MAC = '02:00:00:00:00:02';
/** Halt-polling of the front-ends' second vhost-user run (µs; bench/vhost-peers.ts): KVM's default is 200, adaptive. */
const HALT_POLL_US = Number(process.env['VHOST_BENCH_HALT_POLL'] ?? 20);
/** Frame sizes; VHOST_BENCH_SIZES=64,65536 runs a subset. */
const SIZES = (process.env['VHOST_BENCH_SIZES'] ?? '64,1500,65536').split(',').map(Number);

type Opts = RateOpts;

function peer(root: string, args: string[], haltPollUs: number): ChildProcess {
  return spawn(process.execPath, [join(root, 'dist', 'bench', 'vhost-peers.js'), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, VHOST_BENCH_HALT_POLL_US: String(haltPollUs) },
  });
}

function lines(p: ChildProcess): { first: Promise<string>; last: Promise<Record<string, number>> } {
  const all: string[] = [];
  const rl = createInterface({ input: p.stdout! });
  const first = once(rl, 'line').then(([l]) => l as string);
  rl.on('line', (l) => all.push(l));
  const last = once(p, 'close').then(() => {
    const json = all.reverse().find((l) => l.startsWith('{'));
    if (!json) throw new Error(`no result from ${p.spawnargs.join(' ')}`);
    return JSON.parse(json) as Record<string, number>;
  });
  return { first, last };
}

async function vhostRun(o: Opts, dir: string, size: number, haltPollUs: number): Promise<Measure> {
  const sink = peer(o.root, ['sink', join(dir, 'b.sock'), String(size), String(o.seconds), SINK_MAC], haltPollUs);
  const s = lines(sink);
  await s.first;
  await new Promise((r) => setTimeout(r, 200));
  const gen = peer(
    o.root,
    ['gen', join(dir, 'a.sock'), String(size), String(o.seconds + 2), SINK_MAC, GEN_MAC],
    haltPollUs,
  );
  const r = await s.last;
  gen.kill('SIGTERM');
  await once(gen, 'close').catch(() => {});
  return {
    fps: (r['frames'] as number) / (r['seconds'] as number),
    gbps: ((r['bytes'] as number) * 8) / (r['seconds'] as number) / 1e9,
  };
}

async function withDaemon<T>(o: Opts, dir: string, kind: string, fn: () => Promise<T>): Promise<T> {
  const d = await startBenchDaemon(
    o.root,
    dir,
    ['a', 'b'].map(
      (n) => `{ name: ${n}, network: bench, kind: ${kind}, listen: "unix:${join(dir, `${n}.sock`)}", queue_len: 4096 }`,
    ),
    o.pin ? '0-1' : undefined,
    65535,
  );
  try {
    return await fn();
  } finally {
    d.proc.kill('SIGTERM');
    await once(d.proc, 'close');
  }
}

export async function vhostScenario(o: Opts): Promise<ScenarioResult> {
  const rows: Record<string, unknown>[] = [];
  // The machine is shared: the 1-minute load average before and after each size goes with its row.
  for (const size of SIZES) {
    const loadBefore = loadavg()[0] as number;
    const st: Measure[] = [];
    const sq: Measure[] = [];
    const vh: Measure[] = [];
    const hp: Measure[] = [];
    for (let i = 0; i < o.repeat; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-'));
      try {
        st.push(
          await withDaemon(o, dir, 'stream', () =>
            streamRun(o, size, join(dir, 'b.sock'), 'connect', join(dir, 'a.sock')),
          ),
        );
        sq.push(
          await withDaemon(o, dir, 'stream', () =>
            streamRun(o, size, join(dir, 'b.sock'), 'connect', join(dir, 'a.sock'), true),
          ),
        );
        vh.push(await withDaemon(o, dir, 'vhost-user', () => vhostRun(o, dir, size, 0)));
        hp.push(await withDaemon(o, dir, 'vhost-user', () => vhostRun(o, dir, size, HALT_POLL_US)));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      console.log(
        `vhost ${size} B run ${i + 1}: stream ${fmtM(st.at(-1)!.fps)} f/s, frame per writev ${fmtM(sq.at(-1)!.fps)} f/s, vhost-user ${fmtM(vh.at(-1)!.fps)} f/s, halt-polled ${fmtM(hp.at(-1)!.fps)} f/s`,
      );
    }
    const sFps = median(st.map((m) => m.fps));
    const qFps = median(sq.map((m) => m.fps));
    const vFps = median(vh.map((m) => m.fps));
    const hFps = median(hp.map((m) => m.fps));
    rows.push({
      frame_bytes: size,
      stream_fps: Math.round(sFps),
      vhost_fps: Math.round(vFps),
      stream_gbps: +median(st.map((m) => m.gbps)).toFixed(3),
      vhost_gbps: +median(vh.map((m) => m.gbps)).toFixed(3),
      ratio: +(vFps / sFps).toFixed(3),
      halt_poll_us: HALT_POLL_US,
      vhost_halt_polled_fps: Math.round(hFps),
      vhost_halt_polled_gbps: +median(hp.map((m) => m.gbps)).toFixed(3),
      halt_polled_ratio: +(hFps / sFps).toFixed(3),
      stream_per_frame_fps: Math.round(qFps),
      stream_per_frame_gbps: +median(sq.map((m) => m.gbps)).toFixed(3),
      ratio_per_frame: +(vFps / qFps).toFixed(3),
      halt_polled_ratio_per_frame: +(hFps / qFps).toFixed(3),
      runs: o.repeat,
      seconds: o.seconds,
      load: [+loadBefore.toFixed(2), +(loadavg()[0] as number).toFixed(2)],
    });
  }
  const md = [
    '## vhost-user ports versus stream ports',
    '',
    `Front-end A -> vhost-user port a -> switch -> vhost-user port b -> front-end B (guest memory to guest memory), versus generator -> stream port a -> switch -> stream port b -> sink, on one daemon each, same run. Front-ends: bench/vhost-peers.ts (memfd memory, EVENT_IDX, queue size ${process.env['VHOST_BENCH_QUEUE'] ?? 1024} as vmlink qemu-args gives QEMU, receive buffers of a Linux guest with MRG_RXBUF: 1536 bytes, 4 KiB for 64 KiB frames). Network MTU 65535. Median of ${o.repeat} runs of ${o.seconds} s, ${o.pin ? 'pinned' : 'unpinned'}, ${cpus().length} cores.`,
    '',
    `Each vhost-user size runs twice: front-ends that wait for a call as soon as their ring runs dry, and front-ends halt-polled for ${HALT_POLL_US} µs first (VHOST_BENCH_HALT_POLL_US, a model of KVM's halt_poll_ns, whose default is 200 µs). The stream path runs twice too: a generator writing 1 MiB batches of frames (many frames per syscall), and one writing each frame with its own writev as QEMU's -netdev stream does for a guest (STREAM_BENCH_PER_FRAME).`,
    '',
    `| frame | stream f/s (batches) | stream f/s (frame per writev, as QEMU) | vhost-user f/s | halt-polled ${HALT_POLL_US} µs | vhost-user / stream (batches) | vhost-user / stream (as QEMU) | halt-polled / stream (batches) | halt-polled / stream (as QEMU) | Gbit/s: stream (batches) / (as QEMU) / vhost-user / halt-polled | load (1 min, before/after) |`,
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r['frame_bytes']} B | ${fmtM(r['stream_fps'] as number)} | ${fmtM(r['stream_per_frame_fps'] as number)} | ${fmtM(r['vhost_fps'] as number)} | ${fmtM(r['vhost_halt_polled_fps'] as number)} | ${r['ratio']} | ${r['ratio_per_frame']} | ${r['halt_polled_ratio']} | ${r['halt_polled_ratio_per_frame']} | ${r['stream_gbps']} / ${r['stream_per_frame_gbps']} / ${r['vhost_gbps']} / ${r['vhost_halt_polled_gbps']} | ${(r['load'] as number[]).join(' / ')} |`,
    ),
    '',
    'Targets (issue 5): vhost-user at least 6x the stream frame rate; 5 M 64-byte frames/s; 40 Gbit/s with 64 KB frames.',
  ].join('\n');
  return { scenario: 'vhost', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md };
}
