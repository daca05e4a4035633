/**
 * Scenario "linkqos": real UDP traffic (iperf3) through a shaped overlay
 * link. Sender namespaces on daemon A (TAP ports on two networks, `lab` and
 * `dmz`) send through one plain TCP link on loopback to daemon B, whose TAP
 * ports lead to one sink namespace per network. Measures, from what the
 * iperf3 servers behind B received:
 *
 * - rate accuracy of the link's capacity over 5 s, beside the same capacity
 *   on B's sink port instead (the shaped port of issue 7: the peer, same run);
 * - shares of two senders on different networks weighted 1:3 through the link;
 * - a reserved sender's rate under saturation against its minimum.
 *
 * Needs root, iproute2, iperf3.
 *
 *   node dist/bench/link-qos.js [--seconds S]
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { ControlClient } from '../src/api/client.js';
import type { ScenarioResult } from './types.js';
import { iperfServer, iperfServerRateMbps, machineInfo, waitListening } from './util.js';

const execFileP = promisify(execFile);
const tag = process.pid.toString(36);
/** Namespaces: sinks 0 (lab) and 1 (dmz) behind B; senders 2, 3 (lab) and 4 (dmz) on A. */
const NET = ['lab', 'dmz', 'lab', 'lab', 'dmz'] as const;
const SINK = { lab: 0, dmz: 1 } as const;
const ns = (i: number) => `vlk${i}-${tag}`;
const tap = (i: number) => `vlkt${i}${tag}`;
const addr = (i: number) => `10.97.${NET[i] === 'lab' ? 1 : 2}.${i + 1}`;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 << 20 });
  return stdout;
}

async function cleanup(): Promise<void> {
  for (let i = 0; i < NET.length; i++) await sh('ip', 'netns', 'del', ns(i)).catch(() => undefined);
}

type Qos = Record<string, string | number>;
const yamlQos = (q: Qos | undefined) =>
  q
    ? `, qos: { ${Object.entries(q)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ')} }`
    : '';

async function daemon(root: string, dir: string, id: string, lines: string[]): Promise<ChildProcess> {
  const control = join(dir, `${id}.sock`);
  const config = join(dir, `${id}.yaml`);
  writeFileSync(
    config,
    [
      `host: { id: ${id}, control: ${control}, state_dir: ${join(dir, `${id}-state`)} }`,
      'networks:',
      '  - { name: lab, vni: 100, mtu: 1500 }',
      '  - { name: dmz, vni: 200, mtu: 1500 }',
      ...lines,
      '',
    ].join('\n'),
  );
  const proc = spawn(process.execPath, [join(root, 'bin', 'vmlink.js'), 'daemon', '--config', config], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, VMLINK_LOG_LEVEL: 'error' },
  });
  await waitListening(control);
  return proc;
}

/**
 * Daemons A and B joined by one plain TCP link (with `linkQos`), TAP ports
 * moved into their namespaces; `portQos(i)` is the QoS of namespace i's port.
 */
async function rig(root: string, linkQos: Qos | undefined, portQos: (i: number) => Qos | undefined) {
  await cleanup();
  for (let i = 0; i < NET.length; i++) {
    await sh('ip', 'netns', 'add', ns(i));
    await sh('ip', '-n', ns(i), 'link', 'set', 'lo', 'up');
  }
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-linkqos-'));
  const port = (i: number) =>
    `  - { name: p${i}, network: ${NET[i]}, kind: tap, ifname: ${tap(i)}, queue_len: 4096${yamlQos(portQos(i))} }`;
  const linkPort = 17400 + (process.pid % 1000);
  const b = await daemon(root, dir, 'b', [
    'ports:',
    port(0),
    port(1),
    `overlay: { listen: "tcp:127.0.0.1:${linkPort}", plain: true }`,
  ]);
  const a = await daemon(root, dir, 'a', [
    'ports:',
    port(2),
    port(3),
    port(4),
    'overlay: { plain: true }',
    `links:\n  - { name: b, connect: "tcp:127.0.0.1:${linkPort}"${yamlQos(linkQos)} }`,
  ]);
  const control = join(dir, 'a.sock');
  const client = new ControlClient({ socketPath: control });
  for (let k = 0; k < 200 && (await client.listLinks())[0]?.state !== 'up'; k++)
    await new Promise((r) => setTimeout(r, 50));
  await client.close();
  for (let i = 0; i < NET.length; i++) {
    await sh('ip', 'link', 'set', tap(i), 'netns', ns(i));
    await sh('ip', '-n', ns(i), 'addr', 'add', `${addr(i)}/24`, 'dev', tap(i));
    await sh('ip', '-n', ns(i), 'link', 'set', tap(i), 'up');
  }
  for (let i = 2; i < NET.length; i++)
    await sh('ip', 'netns', 'exec', ns(i), 'ping', '-c', '1', '-W', '2', addr(SINK[NET[i] as 'lab' | 'dmz']));
  return {
    control,
    async stop() {
      for (const p of [a, b]) p.kill('SIGTERM');
      await Promise.all([once(a, 'close'), once(b, 'close')]);
      await cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * iperf3 UDP from each sender at `offered` Mbit/s to the sink of its network;
 * Mbit/s each server received over `seconds` of steady state (the first and
 * last one-second intervals left out, as in the qos scenario).
 */
async function blast(senders: number[], offered: number, seconds: number): Promise<number[]> {
  const servers = senders.map((i) => {
    const sink = SINK[NET[i] as 'lab' | 'dmz'];
    return iperfServer(ns(sink), ['-p', String(5300 + i), '-B', addr(sink)]);
  });
  await Promise.all(servers.map((x) => x.ready));
  try {
    const outs = await Promise.all(
      senders.map((i) =>
        sh(
          'ip',
          ...['netns', 'exec', ns(i), 'iperf3', '-c', addr(SINK[NET[i] as 'lab' | 'dmz']), '-p', String(5300 + i)],
          ...['-u', '-b', `${offered}M`, '-l', '1400', '-t', String(seconds + 2), '--get-server-output', '-J'],
        ),
      ),
    );
    return outs.map((j) => iperfServerRateMbps(j, seconds));
  } finally {
    await Promise.all(servers.map((x) => x.stop()));
  }
}

const r3 = (x: number) => +x.toFixed(3);
/** vmlink shapes Ethernet frames: 1400 bytes of UDP payload are a 1442-byte frame (a port's unit). */
const WIRE = 1442 / 1400;
/** A TCP link's shaper charges each frame with its 8-byte record header too. */
const LINK_WIRE = (1442 + 8) / 1400;

export async function linkQosScenario(o: { root: string; seconds: number }): Promise<ScenarioResult> {
  const rows: Record<string, unknown>[] = [];
  const CAP = 40;
  const run = async (linkQos: Qos | undefined, portQos: (i: number) => Qos | undefined, fn: () => Promise<void>) => {
    const r = await rig(o.root, linkQos, portQos);
    try {
      await fn();
    } finally {
      await r.stop();
    }
  };
  const rate = (test: string, peer: number | undefined) => async () => {
    const [got] = await blast([2], 80, 5);
    const wire = (got as number) * (peer === undefined ? WIRE : LINK_WIRE);
    rows.push({
      test,
      offered_mbit: 80,
      got_mbit: r3(got as number),
      wire_mbit: r3(wire),
      error_pct: +((wire / 50 - 1) * 100).toFixed(2),
      ...(peer === undefined ? {} : { vs_shaped_port: +(wire / peer).toFixed(4) }),
      target: 'within 3%',
    });
  };
  // The peer first: the same 50 Mbit/s on B's sink port (an unshaped link), then on the link.
  await run(
    undefined,
    (i) => (i === 0 ? { capacity: '50mbit' } : undefined),
    rate('shaped sink port 50mbit (peer), 5 s', undefined),
  );
  const peer = rows[0]?.['wire_mbit'] as number;
  await run({ capacity: '50mbit' }, () => undefined, rate('shaped link 50mbit, 5 s', peer));

  await run(
    { capacity: `${CAP}mbit` },
    (i) => (i === 2 ? { weight: 1 } : i === 4 ? { weight: 3 } : undefined),
    async () => {
      const got = await blast([2, 4], 60, o.seconds);
      const total = got.reduce((a, b) => a + b, 0);
      rows.push({
        test: `weights 1:3, lab vs dmz, link ${CAP}mbit`,
        offered_mbit: 60,
        got_mbit: got.map(r3),
        ratio_error_pct: got.map((g, k) => +((g / total / (k === 0 ? 0.25 : 0.75) - 1) * 100).toFixed(2)),
        target: 'within 5%',
      });
    },
  );
  await run(
    { capacity: `${CAP}mbit` },
    (i) => (i === 2 ? { min: '20mbit' } : undefined),
    async () => {
      const got = await blast([2, 3, 4], 60, o.seconds);
      rows.push({
        test: `reservation min 20mbit (lab) among 3 senders on 2 networks, link ${CAP}mbit`,
        offered_mbit: 60,
        got_mbit: got.map(r3),
        reserved_wire_mbit: r3((got[0] as number) * LINK_WIRE),
        target: '>= 20 as shaped',
      });
    },
  );

  const cell = (v: unknown) => (Array.isArray(v) ? v.join(' / ') : String(v ?? ''));
  const md = [
    '## Link QoS: a shaped overlay link (iperf3 UDP through two daemons)',
    '',
    `Sender namespaces on daemon A (TAP ports on networks lab and dmz) -> one plain TCP link on loopback with a capacity -> daemon B -> TAP ports -> one sink namespace per network; rates are what the iperf3 servers received in steady state (per-second reports, first and last left out; UDP payload, converted to what the shaper counts: a 1442-byte frame per 1400-byte datagram on the port, plus the 8-byte link record on the link). The peer row shapes B's sink port to the same rate instead of the link, in the same run. ${o.seconds} s per shares row, 5 s per rate row, one run each, unpinned, on a shared 2-core machine (load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')} at the end).`,
    '',
    '| test | offered Mbit/s each | received Mbit/s | result | target |',
    '| --- | ---: | --- | --- | --- |',
    ...rows.map((r) => {
      const res =
        r['error_pct'] !== undefined
          ? `${r['wire_mbit']} as shaped: error ${r['error_pct']} %${r['vs_shaped_port'] === undefined ? '' : `; ${r['vs_shaped_port']}x the shaped port's`}`
          : r['ratio_error_pct'] !== undefined
            ? `share error % ${cell(r['ratio_error_pct'])}`
            : `reserved sender ${r['reserved_wire_mbit']} as shaped`;
      return `| ${r['test']} | ${cell(r['offered_mbit'])} | ${cell(r['got_mbit'])} | ${res} | ${cell(r['target'])} |`;
    }),
  ].join('\n');
  return { scenario: 'linkqos', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } });
  const root = fileURLToPath(new URL('../..', import.meta.url));
  try {
    const r = await linkQosScenario({ root, seconds: Number(values.seconds) });
    console.log(JSON.stringify(r.rows, null, 2));
    console.log(r.markdown);
  } finally {
    await cleanup();
  }
}
