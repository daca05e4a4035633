/** Small helpers shared by benchmark scenarios. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseMac } from '../src/util/mac.js';
import type { ScenarioResult } from './types.js';

export function parseMacOrThrow(text: string | undefined): number {
  const mac = parseMac(text ?? '');
  if (mac === undefined) throw new Error(`"${text}" is not a MAC address`);
  return mac;
}

/** The n-th MAC of a benchmark as text: 52:54 followed by the 32 bits of n. */
export function benchMac(n: number): string {
  const b = [0x52, 0x54, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** `1.23 M` for a rate. */
export function fmtM(n: number): string {
  return `${(n / 1e6).toFixed(2)} M`;
}

/** What a result records about the machine it ran on. */
export function machineInfo(): { cpus: number; model: string; node: string } {
  return { cpus: cpus().length, model: cpus()[0]?.model ?? '?', node: process.version };
}

/** Resolves once something accepts a connection on the unix socket `path` (polls every 25 ms, 10 s at most). */
export async function waitListening(path: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(path, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on ${path}`);
}

/**
 * Writes a one-network config with the given `ports:` lines into `dir` and
 * starts `vmlink daemon` on it (under `taskset -c CPUS` when given); resolves
 * once its control socket answers. `extraLines` are appended to the config
 * (other top-level sections, e.g. `http:`).
 */
export async function startBenchDaemon(
  root: string,
  dir: string,
  portLines: string[],
  cpuList?: string,
  mtu = 1500,
  extraLines: string[] = [],
): Promise<{ proc: ChildProcess; control: string }> {
  const control = join(dir, 'control.sock');
  const config = join(dir, 'vmlink.yaml');
  writeFileSync(
    config,
    [
      `host: { id: bench, control: ${control}, state_dir: ${join(dir, 'state')} }`,
      'networks:',
      `  - { name: bench, vni: 1, mtu: ${mtu} }`,
      'ports:',
      ...portLines.map((l) => `  - ${l}`),
      ...extraLines,
      '',
    ].join('\n'),
  );
  const args = [join(root, 'bin', 'vmlink.js'), 'daemon', '--config', config, '--log-level', 'warn'];
  const proc =
    cpuList === undefined
      ? spawn(process.execPath, args, { stdio: 'inherit' })
      : spawn('taskset', ['-c', cpuList, process.execPath, ...args], { stdio: 'inherit' });
  try {
    await waitListening(control);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return { proc, control };
}

/** A one-shot iperf3 server (`iperf3 -s -1`) running in a network namespace. */
export interface IperfServer {
  /** Settles once the server listens; rejects when it exits first. */
  ready: Promise<void>;
  /** Settles when the process has exited. */
  closed: Promise<unknown>;
  /** Kills the server if it still runs, and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts `iperf3 -s -1 --forceflush ARGS` in namespace `ns` (`wrap` may put
 * a prefix such as taskset before iperf3). The server exits by itself after
 * one test: its exit is listened for from the start.
 */
export function iperfServer(ns: string, args: string[], wrap = (cmd: string[]) => cmd): IperfServer {
  const proc = spawn('ip', ['netns', 'exec', ns, ...wrap(['iperf3', '-s', '-1', '--forceflush', ...args])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const closed = once(proc, 'close').catch(() => undefined);
  const ready = new Promise<void>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('listening')) resolve();
    });
    proc.once('close', (code) => reject(new Error(`iperf3 -s exited (${code}): ${out}`)));
  });
  return {
    ready,
    closed,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill();
      await closed;
    },
  };
}

/**
 * The steady receive rate, Mbit/s, of a UDP iperf3 run from its client's
 * `--get-server-output -J` JSON: the server's per-second lines before its
 * summary ("[  5]   1.00-2.00   sec  4.01 MBytes  33.6 Mbits/sec ..."), the
 * first and last left out, `seconds` of them averaged by duration.
 */
export function iperfServerRateMbps(json: string, seconds: number): number {
  const r = JSON.parse(json) as { server_output_text?: string };
  const text = (r.server_output_text ?? '').split('- - -')[0] ?? '';
  const unit: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9 };
  const iv = [...text.matchAll(/\]\s+([\d.]+)-([\d.]+)\s+sec\s+[\d.]+\s+\w?Bytes\s+([\d.]+)\s+([KMG]?)bits\/sec/g)]
    .map((m) => ({ secs: Number(m[2]) - Number(m[1]), bps: Number(m[3]) * (unit[m[4] as string] as number) }))
    .slice(1, -1)
    .slice(0, seconds);
  if (iv.length < seconds) throw new Error(`iperf3 server reported ${iv.length} steady intervals, wanted ${seconds}`);
  return iv.reduce((a, x) => a + x.bps * x.secs, 0) / iv.reduce((a, x) => a + x.secs, 0) / 1e6;
}

/**
 * Writes `r` to bench/results/<scenario>-<stamp>.json and its markdown into
 * BENCHMARKS.md between `<!-- bench:<scenario>:begin/end -->` (appended the
 * first time).
 */
export function writeResult(root: string, r: ScenarioResult, stamp: string): void {
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  const json = join(root, 'bench', 'results', `${r.scenario}-${stamp}.json`);
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  console.log(`wrote ${json}`);
  const file = join(root, 'BENCHMARKS.md');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    text = '# Benchmarks\n\nProduced by `npm run bench`; raw results are in bench/results/.\n';
  }
  const begin = `<!-- bench:${r.scenario}:begin -->`;
  const end = `<!-- bench:${r.scenario}:end -->`;
  const section = `${begin}\n${r.markdown}\n${end}`;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  text =
    i >= 0 && j > i ? text.slice(0, i) + section + text.slice(j + end.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}
