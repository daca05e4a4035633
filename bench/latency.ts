/**
 * Scenario "latency": the latency one vmlink hop adds, against a minimal
 * relay written in C (bench/relay.c: poll, read, write) in the same run.
 *
 * A client and an echo peer (this process) exchange 64-byte frames one at
 * a time, in QEMU's stream framing, over unix sockets:
 *   direct: client <-> echo
 *   C:      client <-> relay <-> relay <-> echo (unix sockets throughout)
 *   C/TCP:  client <-> relay <-> TCP on loopback <-> relay <-> echo (the sockets vmlink uses)
 *   vmlink: client <-> daemon A (stream port) <-> plain TCP link <-> daemon B (stream port) <-> echo
 * Two processes in the path each way in all relayed cases, so the added
 * latency per hop is (RTT - direct RTT) / 4. Pinned: the relays or daemons
 * on cpu 1, this process on cpu 0; unpinned: wherever the kernel puts them.
 * Needs gcc, taskset.
 *
 *   node dist/bench/latency.js [--count N]
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import { Deframer } from '../src/net/ports/deframer.js';
import type { ScenarioResult } from './types.js';
import { machineInfo, waitListening } from './util.js';

const execFileP = promisify(execFile);
const CLIENT_MAC = Buffer.from('525400aa0001', 'hex');
const ECHO_MAC = Buffer.from('525400aa0002', 'hex');

interface Opts {
  root: string;
  count: number;
}

function frame(dst: Buffer, len = 64): Buffer {
  const f = Buffer.alloc(4 + len, 0x5a);
  f.writeUInt32BE(len, 0);
  dst.copy(f, 4);
  CLIENT_MAC.copy(f, 10);
  f.writeUInt16BE(0x88b5, 16);
  return f;
}

/** Echo peer: answers each frame to its sender, from ECHO_MAC. */
function echoServer(path: string): Promise<Server> {
  const server = createServer((s) => {
    const d = new Deframer((buf, off, len) => {
      const out = Buffer.alloc(4 + len);
      out.writeUInt32BE(len, 0);
      buf.copy(out, 4, off, off + len);
      buf.copy(out, 4, off + 6, off + 12); // dst = the sender
      ECHO_MAC.copy(out, 10);
      s.write(out);
    }, 70_000);
    s.on('data', (c: Buffer) => d.push(c));
    s.on('error', () => undefined);
  });
  return new Promise((r) => server.listen(path, () => r(server)));
}

/** CPU time of a process's main thread, ns (/proc/PID/schedstat); 0 when unknown. */
function cpuNs(p: ChildProcess): number {
  try {
    return Number(readFileSync(`/proc/${p.pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return 0;
  }
}

/** CPU µs the relaying processes spent per frame per hop in the measured round trips (each crosses every process twice). */
let lastCpuPerHop = 0;
/** Frames of the last measurement that got no reply within 1 s. */
let lastLost = 0;

/**
 * Dials a stream-framed echo (repeating), then runs `count` round trips; RTTs
 * in microseconds. The CPU time of `procs` over the measured round trips goes
 * to lastCpuPerHop.
 */
async function pingPong(path: string, count: number, procs: ChildProcess[] = []): Promise<number[]> {
  let sock: Socket | undefined;
  for (let i = 0; i < 200 && !sock; i++) {
    sock = await new Promise<Socket | undefined>((resolve) => {
      const s = connect(path, () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (!sock) await new Promise((r) => setTimeout(r, 25));
  }
  if (!sock) throw new Error(`cannot connect to ${path}`);
  const s = sock;
  // Each frame carries a sequence number after its EtherType; only the reply to the frame in flight
  // ends a round trip, so a reply that comes after its timeout cannot end the next one early.
  let seq = 0;
  let wake: (() => void) | undefined;
  const d = new Deframer((buf, off, len) => {
    if (len >= 18 && buf.readUInt32BE(off + 14) === seq) wake?.();
  }, 70_000);
  s.on('data', (c: Buffer) => d.push(c));
  const once1 = (f: Buffer, ms: number) =>
    new Promise<boolean>((resolve) => {
      seq = (seq + 1) >>> 0;
      f.writeUInt32BE(seq, 18);
      const t = setTimeout(() => {
        wake = undefined;
        resolve(false);
      }, ms);
      wake = () => {
        wake = undefined;
        clearTimeout(t);
        resolve(true);
      };
      s.write(f);
    });
  // Warm up: a broadcast teaches the switches where both ends are.
  for (let i = 0; i < 100 && !(await once1(frame(Buffer.from('ffffffffffff', 'hex')), 200)); i++);
  const uni = frame(ECHO_MAC);
  // Steady state: enough round trips for the JIT to have compiled the daemons' frame path (the C relays need none).
  for (let i = 0; i < 3000; i++) await once1(uni, 1000);
  const rtts: number[] = [];
  lastLost = 0;
  const cpu0 = procs.reduce((t, p) => t + cpuNs(p), 0);
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    // A frame lost on the way (or answered after 1 s) is counted and left out of the percentiles.
    if (!(await once1(uni, 1000))) {
      lastLost++;
      continue;
    }
    rtts.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  if (rtts.length === 0) throw new Error(`all ${count} frames were lost`);
  const cpu = procs.reduce((t, p) => t + cpuNs(p), 0) - cpu0;
  lastCpuPerHop = procs.length ? cpu / 1000 / (count * 2 * procs.length) : 0;
  s.destroy();
  return rtts;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};

function spawnPinned(pin: boolean, cmd: string, args: string[]): ChildProcess {
  return pin
    ? spawn('taskset', ['-c', '1', cmd, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await once(p, 'close');
    }
  }
}

/** Two C relays; with `tcp`, joined by TCP on loopback (as the two daemons are) instead of a unix socket. */
async function viaC(dir: string, relay: string, pin: boolean, count: number, tcp: boolean): Promise<number[]> {
  const echo = await echoServer(join(dir, 'echo-c.sock'));
  const middle = tcp ? `tcp:${20000 + Math.floor(Math.random() * 20000)}` : join(dir, 'r2.sock');
  const procs: ChildProcess[] = [];
  try {
    // Each relay serves one connection: wait for its "ready" line (a probe connection would use it up).
    for (const [l, c] of [
      [middle, join(dir, 'echo-c.sock')],
      [join(dir, 'r1.sock'), middle],
    ] as const) {
      const p = spawnPinned(pin, relay, [l, c]);
      procs.push(p);
      await new Promise<void>((resolve, reject) => {
        p.stdout?.once('data', () => resolve());
        p.once('close', (code) => reject(new Error(`relay exited (${code})`)));
      });
    }
    return await pingPong(join(dir, 'r1.sock'), count, procs);
  } finally {
    await stopAll(procs);
    echo.close();
  }
}

async function viaVmlink(o: Opts, dir: string, pin: boolean, count: number): Promise<number[]> {
  const echo = await echoServer(join(dir, 'echo-v.sock'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const procs: ChildProcess[] = [];
  const cfg = (id: string, extra: string[]) => {
    const file = join(dir, `${id}.yaml`);
    writeFileSync(
      file,
      [
        `host: { id: ${id}, control: ${join(dir, `${id}.ctl`)}, state_dir: ${join(dir, `state-${id}`)} }`,
        'networks: [{ name: lat, vni: 7 }]',
        ...extra,
        '',
      ].join('\n'),
    );
    return file;
  };
  const a = cfg('a', [
    `ports: [{ name: c, network: lat, kind: stream, listen: "unix:${join(dir, 'a-port.sock')}" }]`,
    `overlay: { listen: "tcp:127.0.0.1:${port}", plain: true }`,
  ]);
  const b = cfg('b', [
    `ports: [{ name: e, network: lat, kind: stream, connect: "unix:${join(dir, 'echo-v.sock')}" }]`,
    'overlay: { plain: true }',
    `links: [{ name: a, connect: "tcp:127.0.0.1:${port}" }]`,
  ]);
  const bin = join(o.root, 'bin', 'vmlink.js');
  try {
    for (const f of [a, b])
      procs.push(spawnPinned(pin, process.execPath, [bin, 'daemon', '--config', f, '--log-level', 'error']));
    await waitListening(join(dir, 'b.ctl'));
    const c = new ControlClient({ socketPath: join(dir, 'b.ctl') });
    try {
      for (let i = 0; i < 200 && (await c.listLinks())[0]?.state !== 'up'; i++)
        await new Promise((r) => setTimeout(r, 25));
    } finally {
      await c.close();
    }
    return await pingPong(join(dir, 'a-port.sock'), count, procs);
  } finally {
    await stopAll(procs);
    echo.close();
  }
}

async function direct(dir: string, count: number): Promise<number[]> {
  const echo = await echoServer(join(dir, 'echo-d.sock'));
  try {
    return await pingPong(join(dir, 'echo-d.sock'), count);
  } finally {
    echo.close();
  }
}

export async function latencyScenario(o: Opts): Promise<ScenarioResult> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-lat-'));
  const relay = join(dir, 'relay');
  await execFileP('gcc', ['-O2', '-o', relay, join(o.root, 'bench', 'relay.c')]);
  const rows: Record<string, unknown>[] = [];
  try {
    for (const pin of [true, false]) {
      if (pin) await execFileP('taskset', ['-cp', '0', String(process.pid)]);
      else await execFileP('taskset', ['-cp', `0-${cpus().length - 1}`, String(process.pid)]);
      const d = await direct(dir, o.count);
      const lost = { direct: lastLost, c: 0, c_tcp: 0, vmlink: 0 };
      const c = await viaC(dir, relay, pin, o.count, false);
      lost.c = lastLost;
      const ct = await viaC(dir, relay, pin, o.count, true);
      lost.c_tcp = lastLost;
      const ctCpu = lastCpuPerHop;
      const v = await viaVmlink(o, dir, pin, o.count);
      lost.vmlink = lastLost;
      const vCpu = lastCpuPerHop;
      const hop = (xs: number[], p: number): number => Math.max(0, (pct(xs, p) - pct(d, p)) / 4);
      const row = {
        pinned: pin,
        direct_rtt_p50_us: +pct(d, 50).toFixed(1),
        direct_rtt_p99_us: +pct(d, 99).toFixed(1),
        c_rtt_p50_us: +pct(c, 50).toFixed(1),
        c_rtt_p99_us: +pct(c, 99).toFixed(1),
        c_tcp_rtt_p50_us: +pct(ct, 50).toFixed(1),
        c_tcp_rtt_p99_us: +pct(ct, 99).toFixed(1),
        vmlink_rtt_p50_us: +pct(v, 50).toFixed(1),
        vmlink_rtt_p99_us: +pct(v, 99).toFixed(1),
        c_hop_p50_us: +hop(c, 50).toFixed(1),
        c_tcp_hop_p50_us: +hop(ct, 50).toFixed(1),
        vmlink_hop_p50_us: +hop(v, 50).toFixed(1),
        ratio_p50: +(hop(v, 50) / Math.max(0.1, hop(c, 50))).toFixed(2),
        ratio_p50_tcp: +(hop(v, 50) / Math.max(0.1, hop(ct, 50))).toFixed(2),
        c_tcp_cpu_us_per_hop: +ctCpu.toFixed(2),
        vmlink_cpu_us_per_hop: +vCpu.toFixed(2),
        count: o.count,
        lost,
      };
      rows.push(row);
      console.log(`latency ${pin ? 'pinned' : 'unpinned'}: ${JSON.stringify(row)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const md = [
    '## Latency added per hop: vmlink versus a minimal C relay',
    '',
    `64-byte frames one at a time (${o.count} round trips after 3000 of warm-up, so the daemons run JIT-compiled code) from a client to an echo peer, over unix sockets in QEMU's stream framing: directly, through two C relays (bench/relay.c: poll, read, write) joined by a unix socket, through the same two C relays joined by TCP on loopback (the sockets the daemons use between them), and through two vmlink daemons joined by a plain TCP link (client and echo on stream ports). Per hop = (RTT - direct RTT) / 4. Pinned: relays or daemons on cpu 1, client and echo on cpu 0. Target: vmlink's hop within 1.5x the C relay's (VNET 2004: 0.66 ms). Load average at the end: ${loadavg()[0]?.toFixed(1)}.`,
    '',
    '| pinned | RTT p50 / p99 µs: direct | two C relays (unix) | two C relays (TCP between) | two vmlink daemons + link | hop p50 µs: C (unix) | C (TCP) | vmlink | vmlink / C (unix) | vmlink / C (TCP) | CPU µs per frame per hop: C (TCP) | vmlink |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r['pinned'] ? 'yes' : 'no'} | ${r['direct_rtt_p50_us']} / ${r['direct_rtt_p99_us']} | ${r['c_rtt_p50_us']} / ${r['c_rtt_p99_us']} | ${r['c_tcp_rtt_p50_us']} / ${r['c_tcp_rtt_p99_us']} | ${r['vmlink_rtt_p50_us']} / ${r['vmlink_rtt_p99_us']} | ${r['c_hop_p50_us']} | ${r['c_tcp_hop_p50_us']} | ${r['vmlink_hop_p50_us']} | ${r['ratio_p50']} | ${r['ratio_p50_tcp']} | ${r['c_tcp_cpu_us_per_hop']} | ${r['vmlink_cpu_us_per_hop']} |`,
    ),
    '',
    `p99 is dominated by scheduling on a 2-core machine shared with other work; compare p50s. Frames with no reply within 1 s are counted and left out of the percentiles: ${rows.map((r) => `${r['pinned'] ? 'pinned' : 'unpinned'} ${JSON.stringify(r['lost'])}`).join(', ')}. The CPU columns (main-thread time from /proc/PID/schedstat over the measured round trips, per frame per process crossed) do not depend on how long a process waits for a core.`,
  ].join('\n');
  return { scenario: 'latency', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { count: { type: 'string', default: '2000' } } });
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const r = await latencyScenario({ root, count: Number(values.count) });
  console.log(r.markdown);
}
