/**
 * Scenario "qos": real UDP traffic (iperf3) from sender namespaces through
 * vmlink TAP ports into one sink namespace whose TAP port is shaped (a QoS
 * capacity). Measures, from what the iperf3 servers received:
 *
 * - Jain's fairness index of four equal-weight senders (target >= 0.99);
 * - shares of senders weighted 1:2:3:4 against their ratio (within 5%);
 * - rate-limit accuracy over 5 s: one sender policed (`max`) and the shaped
 *   port alone (within 3%);
 * - a reserved sender's rate under saturation against its minimum;
 * - p99 round-trip time of an EF-marked ping from a latency-class port under
 *   bulk load: without QoS, shaped with the ping in best effort, shaped with
 *   the ping in the latency class.
 *
 * Needs root, iproute2, iperf3, iputils ping.
 *
 *   node dist/bench/qos.js [--seconds S]
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import type { ScenarioResult } from './types.js';
import { iperfServer, iperfServerRateMbps, machineInfo, median, startBenchDaemon } from './util.js';

const execFileP = promisify(execFile);
const tag = process.pid.toString(36);
const SENDERS = 4;
/** Namespaces: 0 is the sink, 1..SENDERS the senders, SENDERS+1 the pinger. */
const ns = (i: number) => `vlq${i}-${tag}`;
const tap = (i: number) => `vlqt${i}${tag}`;
const addr = (i: number) => `10.98.0.${i + 1}`;
const NS_COUNT = SENDERS + 2;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 << 20 });
  return stdout;
}

async function cleanup(): Promise<void> {
  for (let i = 0; i < NS_COUNT; i++) await sh('ip', 'netns', 'del', ns(i)).catch(() => undefined);
}

interface PortQos {
  [k: string]: string | number | boolean;
}

/** Starts a daemon with one TAP port per namespace (sink first, with `sinkQos`), moves each TAP into its namespace. */
async function rig(root: string, sinkQos: PortQos | undefined, senderQos: (i: number) => PortQos | undefined) {
  await cleanup();
  for (let i = 0; i < NS_COUNT; i++) {
    await sh('ip', 'netns', 'add', ns(i));
    await sh('ip', '-n', ns(i), 'link', 'set', 'lo', 'up');
  }
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-qos-'));
  const flow = (q: PortQos | undefined) =>
    q
      ? `, qos: { ${Object.entries(q)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')} }`
      : '';
  const lines = Array.from(
    { length: NS_COUNT },
    (_, i) =>
      `{ name: p${i}, network: bench, kind: tap, ifname: ${tap(i)}, queue_len: 4096${flow(i === 0 ? sinkQos : senderQos(i))} }`,
  );
  const d = await startBenchDaemon(root, dir, lines);
  for (let i = 0; i < NS_COUNT; i++) {
    await sh('ip', 'link', 'set', tap(i), 'netns', ns(i));
    await sh('ip', '-n', ns(i), 'addr', 'add', `${addr(i)}/24`, 'dev', tap(i));
    await sh('ip', '-n', ns(i), 'link', 'set', tap(i), 'up');
  }
  // Resolve ARP both ways before measuring.
  for (let i = 1; i < NS_COUNT; i++) await sh('ip', 'netns', 'exec', ns(i), 'ping', '-c', '1', '-W', '2', addr(0));
  return {
    control: d.control,
    async stop() {
      d.proc.kill('SIGTERM');
      await once(d.proc, 'close');
      await cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * iperf3 UDP from each sender in `senders` at `offered` Mbit/s; Mbit/s each
 * server received over `seconds` of steady state: the run lasts two seconds
 * more, and the server's first and last one-second intervals are left out
 * (the start fills the queues; at the end every flow drains the same number
 * of queued frames, which would favour the lighter flows).
 */
async function blast(senders: number[], offered: number, seconds: number): Promise<number[]> {
  const servers = senders.map((i) => iperfServer(ns(0), ['-p', String(5200 + i), '-B', addr(0)]));
  await Promise.all(servers.map((x) => x.ready));
  try {
    const outs = await Promise.all(
      senders.map((i) =>
        sh(
          'ip',
          ...['netns', 'exec', ns(i), 'iperf3', '-c', addr(0), '-p', String(5200 + i), '-u', '-b', `${offered}M`],
          ...['-l', '1400', '-t', String(seconds + 2), '--get-server-output', '-J'],
        ),
      ),
    );
    return outs.map((j) => iperfServerRateMbps(j, seconds));
  } finally {
    await Promise.all(servers.map((x) => x.stop()));
  }
}

/**
 * vmlink's own view: the sink port's send rate (Mbit/s) from `GET /v1/qos`
 * once a second; `stop()` returns the mean of the samples of the steady
 * seconds (the same window the iperf3 rows use: skip the first two samples).
 */
function sampleSinkTx(control: string, seconds: number): { stop(): Promise<number> } {
  const client = new ControlClient({ socketPath: control });
  const samples: number[] = [];
  const timer = setInterval(() => {
    client
      .qos()
      .then((v) => samples.push((v.ports.find((p) => p.name === 'p0')?.tx_rate ?? 0) / 1e6))
      .catch(() => undefined);
  }, 1000);
  return {
    async stop() {
      clearInterval(timer);
      await client.close();
      const steady = samples.slice(2, 2 + seconds);
      return steady.reduce((a, b) => a + b, 0) / Math.max(1, steady.length);
    },
  };
}

/** p50/p99 of `count` EF-marked pings (10 ms apart) from the pinger to the sink, ms. */
async function pingRtt(count: number): Promise<{ p50: number; p99: number; lost: number }> {
  const out = await sh(
    'ip',
    ...['netns', 'exec', ns(SENDERS + 1), 'ping', '-n', '-Q', '0xb8', '-i', '0.01', '-c', String(count), '-W', '1'],
    addr(0),
  ).catch((e: { stdout?: string }) => e.stdout ?? '');
  const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  const q = (p: number) => rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))] ?? Number.NaN;
  return { p50: q(0.5), p99: q(0.99), lost: count - rtts.length };
}

const jain = (xs: number[]) => xs.reduce((a, b) => a + b, 0) ** 2 / (xs.length * xs.reduce((a, b) => a + b * b, 0));
const senders = Array.from({ length: SENDERS }, (_, k) => k + 1);
const r3 = (x: number) => +x.toFixed(3);

/** On the wire vmlink counts Ethernet frames: 1400 bytes of UDP payload are a 1442-byte frame. */
const WIRE = 1442 / 1400;

export async function qosScenario(o: { root: string; seconds: number; only?: Set<string> }): Promise<ScenarioResult> {
  const rows: Record<string, unknown>[] = [];
  const CAP = 80; // Mbit/s on the shaped sink port
  const run = async (
    name: string,
    sinkQos: PortQos | undefined,
    sq: (i: number) => PortQos | undefined,
    fn: (control: string) => Promise<void>,
  ) => {
    if (o.only && !o.only.has(name.split(' ')[0] as string)) return;
    const r = await rig(o.root, sinkQos, sq);
    try {
      await fn(r.control);
    } finally {
      await r.stop();
    }
    console.log(`qos: ${name} done`);
  };

  await run(
    'fairness',
    { capacity: `${CAP}mbit` },
    () => undefined,
    async () => {
      const got = await blast(senders, 60, o.seconds);
      rows.push({
        test: 'equal weights',
        capacity_mbit: CAP,
        offered_mbit: 60,
        got_mbit: got.map(r3),
        jain: +jain(got).toFixed(4),
        target: '>= 0.99',
      });
    },
  );

  await run(
    'weights',
    { capacity: `${CAP}mbit` },
    (i) => (i <= SENDERS ? { weight: i } : undefined),
    async () => {
      const got = await blast(senders, 60, o.seconds);
      const total = got.reduce((a, b) => a + b, 0);
      const err = got.map((g, k) => (g / total / ((k + 1) / 10) - 1) * 100);
      rows.push({
        test: 'weights 1:2:3:4',
        capacity_mbit: CAP,
        offered_mbit: 60,
        got_mbit: got.map(r3),
        ratio_error_pct: err.map((e) => +e.toFixed(2)),
        target: 'within 5%',
      });
    },
  );

  /** One 80 Mbit/s sender against a 50 Mbit/s limit for 5 s: what the sink got on the wire and what vmlink sent. */
  const rateRow = (test: string) => async (control: string) => {
    const sampler = sampleSinkTx(control, 5);
    const [got] = await blast([1], 80, 5);
    const own = await sampler.stop();
    const wire = (got as number) * WIRE;
    rows.push({
      test,
      offered_mbit: 80,
      got_mbit: r3(got as number),
      wire_mbit: r3(wire),
      error_pct: +((wire / 50 - 1) * 100).toFixed(2),
      vmlink_tx_mbit: r3(own),
      vmlink_error_pct: +((own / 50 - 1) * 100).toFixed(2),
      target: 'within 3%',
    });
  };
  await run(
    'policing',
    undefined,
    (i) => (i === 1 ? { max: '50mbit' } : undefined),
    rateRow('policing max 50mbit, 5 s'),
  );
  await run('shaping', { capacity: '50mbit' }, () => undefined, rateRow('shaped port capacity 50mbit, 5 s'));

  await run(
    'reservation',
    { capacity: `${CAP}mbit` },
    (i) => (i === 1 ? { min: '40mbit' } : undefined),
    async () => {
      const got = await blast(senders, 60, o.seconds);
      rows.push({
        test: 'reservation min 40mbit on sender 1',
        capacity_mbit: CAP,
        offered_mbit: 60,
        got_mbit: got.map(r3),
        reserved_got_mbit: r3(got[0] as number),
        reserved_wire_mbit: r3((got[0] as number) * WIRE),
        target: '>= 40 on the wire',
      });
    },
  );

  // Latency is noisy on a shared machine: three rounds, the three set-ups interleaved, medians reported.
  const LAT: [string, PortQos | undefined, string | undefined][] = [
    ['no QoS (unshaped)', undefined, undefined],
    [`shaped ${CAP}mbit, ping in best-effort`, { capacity: `${CAP}mbit` }, undefined],
    [`shaped ${CAP}mbit, ping in the latency class (EF)`, { capacity: `${CAP}mbit` }, 'latency'],
  ];
  const lat = LAT.map(() => ({ p50: [] as number[], p99: [] as number[], lost: 0 }));
  for (let round = 0; round < 3; round++) {
    for (const [k, [label, sinkQos, pingerClass]] of LAT.entries()) {
      const sq = (i: number) => (i === SENDERS + 1 && pingerClass ? { class: pingerClass } : undefined);
      await run(`latency ${label}`, sinkQos, sq, async () => {
        const load = blast(senders, 60, o.seconds);
        await new Promise((r) => setTimeout(r, 500));
        const p = await pingRtt(Math.floor(o.seconds * 80));
        await load;
        const l = lat[k] as (typeof lat)[number];
        l.p50.push(p.p50);
        l.p99.push(p.p99);
        l.lost += p.lost;
      });
    }
  }
  for (const [k, [label]] of LAT.entries()) {
    const l = lat[k] as (typeof lat)[number];
    if (!l.p99.length) continue;
    rows.push({
      test: `ping under bulk load: ${label}`,
      p50_ms: median(l.p50),
      p99_ms: median(l.p99),
      p99_runs_ms: l.p99,
      lost: l.lost,
    });
  }

  const cell = (v: unknown) => (Array.isArray(v) ? v.join(' / ') : String(v ?? ''));
  const md = [
    '## QoS: shares, rates and latency through a shaped port (iperf3 UDP between namespaces)',
    '',
    `${SENDERS} sender namespaces (iperf3 -u, 1400-byte datagrams) -> vmlink TAP ports -> one shaped TAP port -> sink namespace; rates are what the iperf3 servers received in steady state (their per-second reports, the first and last left out; UDP payload; vmlink shapes and polices Ethernet frames, 1442 bytes per 1400-byte datagram, so the rate rows convert to the wire). ${o.seconds} s per run (5 s for the rate-limit rows); latency: 10 ms pings marked EF (-Q 0xb8) from a fifth namespace while the senders saturate the port, three runs of each set-up. One run of each other row, unpinned, on a shared 2-core machine (load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')} at the end: other jobs ran too).`,
    '',
    '| test | offered Mbit/s each | received Mbit/s | result | target |',
    '| --- | ---: | --- | --- | --- |',
    ...rows.map((r) => {
      const res =
        r['jain'] !== undefined
          ? `Jain ${r['jain']}`
          : r['ratio_error_pct'] !== undefined
            ? `share error % ${cell(r['ratio_error_pct'])}`
            : r['error_pct'] !== undefined
              ? `${r['wire_mbit']} on the wire: error ${r['error_pct']} % (vmlink's own count: ${r['vmlink_tx_mbit']}, ${r['vmlink_error_pct']} %)`
              : r['reserved_got_mbit'] !== undefined
                ? `reserved sender ${r['reserved_wire_mbit']} on the wire`
                : `median p50 ${r['p50_ms']} ms, p99 ${r['p99_ms']} ms (runs ${cell(r['p99_runs_ms'])}), lost ${r['lost']}`;
      return `| ${r['test']} | ${cell(r['offered_mbit'] ?? '')} | ${cell(r['got_mbit'] ?? '')} | ${res} | ${cell(r['target'] ?? '')} |`;
    }),
    '',
    'Reading: the rate rows are limited by CPU as much as by vmlink when the machine is loaded (a starved daemon reads and drains late; buckets hold 50 ms to ride that out). A reservation is a floor: the reserved sender gets max(its minimum, its DWRR share), not the sum. The latency rows differ mostly in p50 (a latency-class frame leaves at once, a best-effort one waits for the shaper timer, about 1 ms); their p99 is dominated by scheduling noise of the shared machine. Without QoS there is no queue in vmlink at all (the port is not shaped), so that row is the floor, not a comparison at equal load.',
  ].join('\n');
  return { scenario: 'qos', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '5' }, only: { type: 'string' } },
  });
  const root = fileURLToPath(new URL('../..', import.meta.url));
  try {
    const only = values.only === undefined ? undefined : new Set(values.only.split(','));
    const r = await qosScenario({ root, seconds: Number(values.seconds), ...(only ? { only } : {}) });
    console.log(JSON.stringify(r.rows, null, 2));
    console.log(r.markdown);
  } finally {
    await cleanup();
  }
}
