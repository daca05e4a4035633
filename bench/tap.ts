/**
 * Scenario "tap": iperf3 TCP between two network namespaces, once through
 * vmlink (a daemon with two TAP ports on one network, each TAP moved into a
 * namespace) and once through a Linux bridge (two veth pairs), with
 * offloads (tx checksum, sg, TSO, GSO, GRO on the namespaces' interfaces)
 * on and off. Needs root, iproute2, ethtool, iperf3.
 *
 * Pinning (--pin, the same for both): iperf3 client `taskset -c 0`, server
 * `taskset -c 1`, the vmlink daemon `taskset -c 0-1` (the bridge runs in
 * the senders' softirq context).
 *
 *   node dist/bench/tap.js [--seconds S] [--repeat N] [--pin]
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import type { ScenarioResult } from './types.js';
import { iperfServer, machineInfo, median, startBenchDaemon } from './util.js';

const execFileP = promisify(execFile);

interface Opts {
  root: string;
  seconds: number;
  repeat: number;
  pin: boolean;
}

const tag = `${process.pid.toString(36)}`;
const NS = [`vlb-a-${tag}`, `vlb-b-${tag}`] as const;
const ADDR = ['10.99.0.1', '10.99.0.2'] as const;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 << 20 });
  return stdout;
}

async function nsExec(ns: string, ...args: string[]): Promise<string> {
  return sh('ip', 'netns', 'exec', ns, ...args);
}

async function offloads(ns: string, dev: string, on: boolean): Promise<void> {
  for (const f of ['tx', 'sg', 'tso', 'gso', 'gro']) {
    await nsExec(ns, 'ethtool', '-K', dev, f, on ? 'on' : 'off').catch(() => undefined);
  }
}

/** Fresh namespaces with loopback up. */
async function namespaces(): Promise<void> {
  for (const ns of NS) {
    await sh('ip', 'netns', 'del', ns).catch(() => undefined);
    await sh('ip', 'netns', 'add', ns);
    await sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
}

async function cleanup(): Promise<void> {
  for (const ns of NS) await sh('ip', 'netns', 'del', ns).catch(() => undefined);
  await sh('ip', 'link', 'del', `vlbbr${tag}`).catch(() => undefined);
}

/** Moves `dev` into namespace i with its address, up. */
async function adopt(i: 0 | 1, dev: string, on: boolean): Promise<void> {
  await sh('ip', 'link', 'set', dev, 'netns', NS[i]);
  await sh('ip', '-n', NS[i], 'addr', 'add', `${ADDR[i]}/24`, 'dev', dev);
  await sh('ip', '-n', NS[i], 'link', 'set', dev, 'up');
  await offloads(NS[i], dev, on);
}

/** iperf3 from namespace 0 to namespace 1; Gbit/s received. */
async function iperf(o: Opts): Promise<number> {
  const pin = (cpu: string, args: string[]) => (o.pin ? ['taskset', '-c', cpu, ...args] : args);
  const server = iperfServer(NS[1], ['-B', ADDR[1]], (cmd) => pin('1', cmd));
  await server.ready;
  try {
    const json = await nsExec(NS[0], ...pin('0', ['iperf3', '-c', ADDR[1], '-t', String(o.seconds), '-J']));
    const r = JSON.parse(json) as { end: { sum_received: { bits_per_second: number } } };
    return r.end.sum_received.bits_per_second / 1e9;
  } finally {
    await server.stop();
  }
}

async function viaBridge(o: Opts, on: boolean): Promise<number> {
  await namespaces();
  const br = `vlbbr${tag}`;
  await sh('ip', 'link', 'add', br, 'type', 'bridge');
  await sh('ip', 'link', 'set', br, 'up');
  for (const i of [0, 1] as const) {
    const [h, n] = [`vlbh${i}${tag}`, `vlbn${i}${tag}`];
    await sh('ip', 'link', 'add', h, 'type', 'veth', 'peer', 'name', n);
    await sh('ip', 'link', 'set', h, 'master', br);
    await sh('ip', 'link', 'set', h, 'up');
    await adopt(i, n, on);
  }
  try {
    return await iperf(o);
  } finally {
    await cleanup();
  }
}

async function viaVmlink(o: Opts, on: boolean): Promise<number> {
  await namespaces();
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-tap-'));
  const taps = [`vlbt0${tag}`, `vlbt1${tag}`];
  const d = await startBenchDaemon(
    o.root,
    dir,
    // Offloads on: vnet_hdr TAPs, which ask the kernel for checksum/TSO offloads and carry large segments whole.
    taps.map((t, i) => `{ name: t${i}, network: bench, kind: tap, ifname: ${t}, queue_len: 4096, vnet_hdr: ${on} }`),
    o.pin ? '0-1' : undefined,
  );
  try {
    await adopt(0, taps[0] as string, on);
    await adopt(1, taps[1] as string, on);
    return await iperf(o);
  } finally {
    d.proc.kill('SIGTERM');
    await once(d.proc, 'close');
    await cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function tapScenario(o: Opts): Promise<ScenarioResult> {
  const rows: Record<string, unknown>[] = [];
  for (const on of [true, false]) {
    const br: number[] = [];
    const vm: number[] = [];
    for (let i = 0; i < o.repeat; i++) {
      br.push(await viaBridge(o, on));
      vm.push(await viaVmlink(o, on));
      console.log(
        `tap offloads ${on ? 'on' : 'off'} run ${i + 1}: bridge ${(br.at(-1) as number).toFixed(2)}, vmlink ${(vm.at(-1) as number).toFixed(2)} Gbit/s`,
      );
    }
    const [b, v] = [median(br), median(vm)];
    rows.push({
      offloads: on ? 'on' : 'off',
      bridge_gbps: +b.toFixed(3),
      vmlink_gbps: +v.toFixed(3),
      ratio: +(v / b).toFixed(3),
      target: on ? 0.7 : 0.5,
      runs: o.repeat,
      seconds: o.seconds,
    });
  }
  const md = [
    '## TAP: vmlink versus the Linux bridge (iperf3 TCP between two namespaces)',
    '',
    `Namespace A -> vmlink TAP port -> switch -> TAP port -> namespace B, versus A -> veth -> Linux bridge -> veth -> B. Offloads (tx checksum, sg, TSO, GSO, GRO) set on the namespaces' interfaces; with offloads on, vmlink's TAPs have vnet_hdr and ask the kernel for checksum/TSO offloads, so 64 KB segments cross the switch whole (docs/ports.md); with offloads off, plain TAPs. Median of ${o.repeat} runs of ${o.seconds} s, ${o.pin ? 'pinned (iperf3 client cpu 0, server cpu 1, vmlink daemon cpus 0-1, by taskset)' : 'unpinned'}, ${cpus().length} cores.`,
    '',
    '| offloads | bridge Gbit/s | vmlink Gbit/s | vmlink/bridge | target |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) => `| ${r['offloads']} | ${r['bridge_gbps']} | ${r['vmlink_gbps']} | ${r['ratio']} | ${r['target']} |`,
    ),
  ].join('\n');
  return {
    scenario: 'tap',
    when: new Date().toISOString(),
    machine: machineInfo(),
    rows,
    markdown: md,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '5' },
      repeat: { type: 'string', default: '1' },
      pin: { type: 'boolean', default: true },
    },
  });
  const root = fileURLToPath(new URL('../..', import.meta.url));
  try {
    const r = await tapScenario({
      root,
      seconds: Number(values.seconds),
      repeat: Number(values.repeat),
      pin: values.pin === true,
    });
    console.log(r.markdown);
  } finally {
    await cleanup();
  }
}
