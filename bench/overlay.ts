/**
 * Scenario "overlay": one bulk TCP flow (iperf3) between two network
 * namespaces, each with a vmlink daemon, through a TAP port on each side and
 * a link between the daemons over a veth pair; versus iperf3 straight over
 * the same veth pair, in the same run. Links: plain TCP and TLS 1.3.
 * The TAPs have vnet_hdr and the namespaces' TAP interfaces offloads (tx
 * checksum, sg, TSO, GSO, GRO) on, as in bench/tap.ts: 64 KB segments cross
 * the switches and TCP/TLS links whole (docs/overlay.md "Wire format").
 *
 *   ns A: tap 10.0.77.1 -> vmlink A -> link over veth 10.97.0.1 <-> 10.97.0.2 -> vmlink B -> tap 10.0.77.2 :ns B
 *
 * Needs root, iproute2, iperf3, openssl, ethtool.
 *
 *   node dist/bench/overlay.js [--seconds S] [--repeat N] [--mtu M] [--links vxlan] [--save]
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { silentLogger } from '../src/log.js';
import { Overlay } from '../src/net/overlay/overlay.js';
import { TcpTransport } from '../src/net/overlay/tcp-transport.js';
import type { FrameSink, Port } from '../src/net/port.js';
import { Switch } from '../src/net/switch/switch.js';
import { caInit, hostCert } from '../src/pki/ca.js';
import type { ScenarioResult } from './types.js';
import { iperfServer, machineInfo, median, waitListening } from './util.js';

const execFileP = promisify(execFile);

interface Opts {
  root: string;
  seconds: number;
  repeat: number;
  /** Network and TAP MTU. */
  mtu: number;
  /** Which link kinds to measure (default all); `vxlan` alone runs only the kernel-vxlan and vmlink-VXLAN rows. */
  links?: readonly Mode[] | undefined;
}

const tag = process.pid.toString(36);
const NS = [`vlo-a-${tag}`, `vlo-b-${tag}`] as const;
const UNDER = ['10.97.0.1', '10.97.0.2'] as const;
const OVER = ['10.0.77.1', '10.0.77.2'] as const;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 << 20 });
  return stdout;
}

async function setup(): Promise<void> {
  await cleanup();
  for (const ns of NS) {
    await sh('ip', 'netns', 'add', ns);
    await sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
  const [a, b] = [`vloa${tag}`, `vlob${tag}`];
  await sh('ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
  for (const [i, dev] of [a, b].entries()) {
    await sh('ip', 'link', 'set', dev, 'netns', NS[i] as string);
    await sh('ip', '-n', NS[i] as string, 'addr', 'add', `${UNDER[i]}/24`, 'dev', dev);
    await sh('ip', '-n', NS[i] as string, 'link', 'set', dev, 'up');
  }
}

async function cleanup(): Promise<void> {
  for (const ns of NS) await sh('ip', 'netns', 'del', ns).catch(() => undefined);
}

/** CPU seconds (user + system) a live process has used so far, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** CPU ms per GB moved by each of the two relays (daemons or C relays) of the last run through them. */
let lastCpuMsPerGb: [number, number] = [Number.NaN, Number.NaN];

function noteCpu(procs: ChildProcess[], gbps: number, seconds: number): void {
  const gb = (gbps * seconds) / 8;
  lastCpuMsPerGb = [0, 1].map((i) => Math.round((cpuSeconds(procs[i]?.pid) * 1000) / gb)) as [number, number];
}

/** iperf3 from namespace A to `to` in namespace B; Gbit/s received. */
async function iperf(o: Opts, to: string): Promise<number> {
  const server = iperfServer(NS[1], ['-B', to]);
  await server.ready;
  try {
    const { stdout } = await execFileP(
      'ip',
      ['netns', 'exec', NS[0], 'iperf3', '-c', to, '-t', String(o.seconds), '-J'],
      { maxBuffer: 16 << 20 },
    );
    const r = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } };
    return r.end.sum_received.bits_per_second / 1e9;
  } finally {
    await server.stop();
  }
}

type Mode = 'tcp' | 'tls' | 'vxlan';

async function daemon(o: Opts, dir: string, i: 0 | 1, mode: Mode, vxlanOffloads = true): Promise<ChildProcess> {
  const id = i === 0 ? 'a' : 'b';
  const control = join(dir, `${id}.sock`);
  const listen = i === 0 ? `listen: "tcp:${UNDER[0]}:7400", ` : '';
  const overlay =
    mode === 'tls'
      ? `overlay: { ${listen}tls: { ca: ${dir}/${id}/ca.pem, cert: ${dir}/${id}/${id}.pem, key: ${dir}/${id}/${id}.key } }`
      : mode === 'vxlan'
        ? `overlay: { plain: true, vxlan: { listen: "udp:${UNDER[i]}:4789", offloads: ${vxlanOffloads} } }`
        : `overlay: { ${listen}plain: true }`;
  const link =
    mode === 'vxlan'
      ? `links:\n  - { name: peer, connect: "udp:${UNDER[1 - i]}:4789" }`
      : i === 1
        ? `links:\n  - { name: a, connect: "tcp:${UNDER[0]}:7400" }`
        : '';
  // Over VXLAN the frames must fit the underlay with 50 bytes of headers.
  const mtu = mode === 'vxlan' ? o.mtu - 50 : o.mtu;
  const cfg = join(dir, `${id}.yaml`);
  mkdirSync(join(dir, `state-${id}`), { recursive: true });
  writeFileSync(
    cfg,
    [
      `host: { id: ${id}, control: ${control}, state_dir: ${join(dir, `state-${id}`)} }`,
      'networks:',
      `  - { name: bench, vni: 1, mtu: ${mtu} }`,
      'ports:',
      `  - { name: t, network: bench, kind: tap, ifname: vlot${tag}, mtu: ${mtu}, queue_len: 4096, vnet_hdr: true }`,
      overlay,
      link,
      '',
    ].join('\n'),
  );
  const proc = spawn(
    'ip',
    [
      'netns',
      'exec',
      NS[i],
      process.execPath,
      join(o.root, 'bin', 'vmlink.js'),
      'daemon',
      '--config',
      cfg,
      '--log-level',
      'warn',
    ],
    { stdio: 'inherit' },
  );
  await waitListening(control);
  return proc;
}

async function viaVmlink(o: Opts, mode: Mode, vxlanOffloads = true): Promise<number> {
  const tls = mode === 'tls';
  await setup();
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-overlay-'));
  const procs: ChildProcess[] = [];
  try {
    if (tls) {
      await caInit(join(dir, 'ca'));
      for (const id of ['a', 'b']) await hostCert(join(dir, 'ca'), id, join(dir, id));
    }
    procs.push(await daemon(o, dir, 0, mode, vxlanOffloads));
    procs.push(await daemon(o, dir, 1, mode, vxlanOffloads));
    return await throughRelays(o, procs);
  } finally {
    await stopAll(procs);
    await cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Brings the relayed path up (overTaps), runs iperf3 through it, and notes the two relays' CPU. */
async function throughRelays(o: Opts, procs: ChildProcess[]): Promise<number> {
  await overTaps();
  const gbps = await iperf(o, OVER[1]);
  noteCpu(procs, gbps, o.seconds);
  return gbps;
}

async function stopAll(procs: ChildProcess[]): Promise<void> {
  for (const p of procs) {
    p.kill('SIGTERM');
    if (p.exitCode === null && p.signalCode === null) await once(p, 'close');
  }
}

/** The TAP and interface setup both relayed paths share: addresses, offloads on, one ping through. */
async function overTaps(): Promise<void> {
  for (const i of [0, 1] as const) {
    await sh('ip', '-n', NS[i], 'addr', 'add', `${OVER[i]}/24`, 'dev', `vlot${tag}`);
    await sh('ip', '-n', NS[i], 'link', 'set', `vlot${tag}`, 'up');
    for (const f of ['tx', 'sg', 'tso', 'gso', 'gro'])
      await sh('ip', 'netns', 'exec', NS[i], 'ethtool', '-K', `vlot${tag}`, f, 'on').catch(() => undefined);
  }
  for (let i = 0; ; i++) {
    const ok = await sh('ip', 'netns', 'exec', NS[0], 'ping', '-c', '1', '-W', '1', OVER[1]).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (i > 30) throw new Error('the relayed path did not come up');
  }
}

/**
 * The same path through two C relays (bench/tap-relay.c: TAP with vnet
 * headers <-> TCP, nothing else) instead of two daemons: the floor of any
 * userspace relay here.
 */
async function viaCRelay(o: Opts, relay: string): Promise<number> {
  await setup();
  const procs: ChildProcess[] = [];
  try {
    for (const i of [0, 1] as const) {
      const p = spawn(
        'ip',
        ['netns', 'exec', NS[i], relay, `vlot${tag}`, i === 0 ? 'listen' : 'connect', UNDER[0], '7401'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      procs.push(p);
      await new Promise<void>((resolve, reject) => {
        p.stdout?.once('data', () => resolve());
        p.once('exit', (code) => reject(new Error(`tap-relay exited with ${code}`)));
      });
    }
    return await throughRelays(o, procs);
  } finally {
    await stopAll(procs);
    await cleanup();
  }
}

/** iperf3 through a pair of Linux kernel vxlan devices over the same veth. */
async function kernelVxlan(o: Opts): Promise<number> {
  await setup();
  try {
    for (const i of [0, 1] as const) {
      const ns = NS[i];
      const dev = i === 0 ? `vloa${tag}` : `vlob${tag}`;
      await sh(
        'ip',
        '-n',
        ns,
        'link',
        'add',
        'vxk',
        'type',
        'vxlan',
        'id',
        '42',
        'remote',
        UNDER[1 - i] as string,
        'dstport',
        '4789',
        'dev',
        dev,
      );
      await sh('ip', '-n', ns, 'addr', 'add', `10.0.78.${i + 1}/24`, 'dev', 'vxk');
      await sh('ip', '-n', ns, 'link', 'set', 'vxk', 'up');
    }
    return await iperf(o, '10.0.78.2');
  } finally {
    await cleanup();
  }
}

async function direct(o: Opts): Promise<number> {
  await setup();
  try {
    return await iperf(o, UNDER[1]);
  } finally {
    await cleanup();
  }
}

/** A switch with one counting port and an overlay on loopback, in this process. */
async function memHost(id: string, listen: boolean) {
  const logger = silentLogger();
  const sw = new Switch({ logger });
  sw.addNetwork({ name: 'bench', vni: 1, mtu: 1500 });
  const port = { got: 0, sink: undefined as FrameSink | undefined };
  sw.addPort('p', { network: 'bench' }, (sink): Port => {
    port.sink = sink;
    return {
      name: 'p',
      kind: 'mem',
      state: 'up',
      queued: 0,
      open: async () => undefined,
      write: () => {
        port.got++;
        return 0;
      },
      describe: () => ({}),
      close: async () => undefined,
      destroy: async () => undefined,
    };
  });
  let ov: Overlay | undefined;
  const transport = new TcpTransport({ logger, hello: () => (ov as Overlay).hello(), keepaliveMs: 1000 });
  ov = new Overlay({ logger, switch: sw, hostId: id, relay: false, transport });
  await ov.start(listen ? { host: '127.0.0.1', port: 0 } : undefined);
  return { sw, ov, port };
}

/** Frames per second one plain TCP link moves between two overlays in this process (both ends on one core). */
async function linkOnly(frames: number): Promise<number> {
  const a = await memHost('a', false);
  const b = await memHost('b', true);
  try {
    a.ov.add({ name: 'b', connect: { host: '127.0.0.1', port: b.ov.listening?.port ?? 0 } }, 'config');
    while (a.ov.view('b').state !== 'up') await new Promise((r) => setTimeout(r, 10));
    const f = Buffer.alloc(1500, 0xab);
    Buffer.from('525400000b01525400000a01', 'hex').copy(f, 0);
    f.writeUInt16BE(0x88b5, 12);
    const t0 = performance.now();
    for (let sent = 0; sent < frames; ) {
      for (let i = 0; i < 64 && sent < frames; i++, sent++) a.port.sink?.(f, 0, f.length);
      await new Promise((r) => setImmediate(r));
    }
    const lost = () => a.ov.view('b').drops.queue_full;
    while (b.port.got < frames - lost()) await new Promise((r) => setTimeout(r, 1));
    return (b.port.got / (performance.now() - t0)) * 1000;
  } finally {
    await a.ov.stop();
    await b.ov.stop();
  }
}

export async function overlayScenario(o: Opts): Promise<ScenarioResult> {
  const raw: number[] = [];
  const plain: number[] = [];
  const tls: number[] = [];
  const kvx: number[] = [];
  const vvx: number[] = [];
  const want = new Set<Mode>(o.links ?? ['tcp', 'tls', 'vxlan']);
  if (!want.has('tcp') && !want.has('tls')) return vxlanOnly(o, kvx, vvx);
  const withVxlan = want.has('vxlan');
  const relayDir = mkdtempSync(join(tmpdir(), 'vmlink-tap-relay-'));
  const relay = join(relayDir, 'tap-relay');
  await sh('gcc', '-O2', '-o', relay, join(o.root, 'bench', 'tap-relay.c'));
  const crelay: number[] = [];
  const cpu: Record<string, [number, number][]> = { crelay: [], tcp: [], tls: [] };
  for (let i = 0; i < o.repeat; i++) {
    raw.push(await direct(o));
    crelay.push(await viaCRelay(o, relay));
    cpu['crelay']?.push(lastCpuMsPerGb);
    if (want.has('tcp')) plain.push(await viaVmlink(o, 'tcp'));
    cpu['tcp']?.push(lastCpuMsPerGb);
    if (want.has('tls')) tls.push(await viaVmlink(o, 'tls'));
    cpu['tls']?.push(lastCpuMsPerGb);
    if (withVxlan) kvx.push(await kernelVxlan(o));
    if (withVxlan) vvx.push(await viaVmlink(o, 'vxlan'));
    const f = (xs: number[]) => (xs.length > 0 ? (xs.at(-1) as number).toFixed(2) : '-');
    console.log(
      `overlay run ${i + 1}: veth ${f(raw)}, C relays ${f(crelay)}, vmlink tcp ${f(plain)}, vmlink tls ${f(tls)}, kernel vxlan ${f(kvx)}, vmlink vxlan ${f(vvx)} Gbit/s`,
    );
  }
  rmSync(relayDir, { recursive: true, force: true });
  const fps = await linkOnly(300_000);
  console.log(`overlay link only: ${(fps / 1e3).toFixed(0)} kframes/s of 1500 bytes`);
  const r = median(raw);
  const c = median(crelay);
  const cpuOf = (k: string) =>
    [0, 1].map((side) => Math.round(median((cpu[k] ?? []).map((x) => x[side] as number)))).join(' / ');
  const rows = [
    {
      link: 'C relays over TCP (bench/tap-relay.c)',
      raw_gbps: +r.toFixed(3),
      vmlink_gbps: +c.toFixed(3),
      ratio: +(c / r).toFixed(3),
      target: 0,
    },
    {
      link: 'tcp',
      raw_gbps: +r.toFixed(3),
      vmlink_gbps: +median(plain).toFixed(3),
      ratio: +(median(plain) / r).toFixed(3),
      target: 0.8,
    },
    {
      link: 'tls',
      raw_gbps: +r.toFixed(3),
      vmlink_gbps: +median(tls).toFixed(3),
      ratio: +(median(tls) / r).toFixed(3),
      target: 0.6,
    },
    {
      link: 'vxlan (vs kernel vxlan)',
      raw_gbps: +median(kvx).toFixed(3),
      vmlink_gbps: +median(vvx).toFixed(3),
      ratio: +(median(vvx) / median(kvx)).toFixed(3),
      target: 0,
    },
  ]
    .filter(
      (x) => (x.link === 'tcp' ? plain : x.link === 'tls' ? tls : x.link.startsWith('vxlan') ? vvx : crelay).length > 0,
    )
    .map((x) => ({
      ...x,
      vs_c_relay: x.link === 'tcp' || x.link === 'tls' ? +(x.vmlink_gbps / c).toFixed(3) : undefined,
      cpu_ms_per_gb:
        x.link === 'tcp' || x.link === 'tls' ? cpuOf(x.link) : x.link.startsWith('C') ? cpuOf('crelay') : undefined,
      mtu: o.mtu,
      runs: o.repeat,
      seconds: o.seconds,
    }));
  const md = [
    '## Overlay: a bulk TCP flow through two daemons and a link, versus the same veth directly',
    '',
    `iperf3 (one flow) from namespace A to namespace B: once straight over the veth pair between them, once from a TAP on vmlink A through a link over that veth to vmlink B and its TAP (MTU ${o.mtu}; vnet_hdr TAPs with offloads on, so 64 KB TCP segments cross the switches and TCP/TLS links whole and are never cut; VXLAN links take no offloads, so segments are cut into MTU frames before a VXLAN link); for VXLAN, kernel vxlan devices in both namespaces versus vmlink VXLAN links (inner MTU ${o.mtu - 50} in both cases). Median of ${o.repeat} runs of ${o.seconds} s, unpinned, ${cpus().length} cores (load average ${loadavg()[0]?.toFixed(1)} at the end).`,
    '',
    "The C relays (bench/tap-relay.c) take the daemons' place on the same path with nothing but the relay: TAP with vnet headers, a 4-byte length per segment, batched writes to TCP, records written to the TAP where they lie. They are the floor of any userspace relay here.",
    '',
    '| path | peer Gbit/s (veth; kernel vxlan for vxlan) | Gbit/s | /peer | /C relays | target (/peer) | CPU ms per GB, relay A / B |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (x) =>
        `| ${x.link} | ${x.raw_gbps} | ${x.vmlink_gbps} | ${x.ratio} | ${x.vs_c_relay ?? '-'} | ${x.target || '-'} | ${x.cpu_ms_per_gb ?? '-'} |`,
    ),
    '',
    `The link alone (two overlays in one process on loopback, 1500-byte frames, switch ingress on both ends, one core for both): ${(fps / 1e3).toFixed(0)} kframes/s = ${((fps * 1500 * 8) / 1e9).toFixed(2)} Gbit/s. The end-to-end flow shares ${cpus().length} cores among four busy processes (two daemons, iperf3 client and server).`,
    '',
    'VXLAN: the transport sends with sendmmsg and UDP GSO from per-flow source ports, receives with recvmmsg and UDP GRO, and merges received TCP frames into large segments (docs/overlay.md "The VXLAN transport"); `--links vxlan` also measures it with offloads off.',
  ].join('\n');
  rows.push({
    link: 'link-only',
    frames_per_s: Math.round(fps),
    gbps_1500: +((fps * 1500 * 8) / 1e9).toFixed(3),
  } as never);
  return { scenario: 'overlay', when: new Date().toISOString(), machine: machineInfo(), rows, markdown: md };
}

/** Only the VXLAN rows (kernel vxlan versus vmlink VXLAN links), alternating in one run. */
async function vxlanOnly(o: Opts, kvx: number[], vvx: number[]): Promise<ScenarioResult> {
  const off: number[] = [];
  for (let i = 0; i < o.repeat; i++) {
    kvx.push(await kernelVxlan(o));
    vvx.push(await viaVmlink(o, 'vxlan'));
    off.push(await viaVmlink(o, 'vxlan', false));
    console.log(
      `overlay run ${i + 1}: kernel vxlan ${(kvx.at(-1) as number).toFixed(2)}, vmlink vxlan ${(vvx.at(-1) as number).toFixed(2)}, vmlink vxlan with offloads off ${(off.at(-1) as number).toFixed(2)} Gbit/s`,
    );
  }
  const row = {
    link: 'vxlan (vs kernel vxlan)',
    raw_gbps: +median(kvx).toFixed(3),
    vmlink_gbps: +median(vvx).toFixed(3),
    ratio: +(median(vvx) / median(kvx)).toFixed(3),
    target: 0,
    mtu: o.mtu,
    runs: o.repeat,
    seconds: o.seconds,
  };
  const offRow = {
    ...row,
    link: 'vxlan, offloads off (vs kernel vxlan)',
    vmlink_gbps: +median(off).toFixed(3),
    ratio: +(median(off) / median(kvx)).toFixed(3),
  };
  const md = [
    '## Overlay: VXLAN links only',
    '',
    `iperf3 (one flow) from a TAP on vmlink A through a VXLAN link over a veth to vmlink B and its TAP, versus kernel vxlan devices in the same two namespaces (inner MTU ${o.mtu - 50}). Median of ${o.repeat} runs of ${o.seconds} s, unpinned, ${cpus().length} cores.`,
    '',
    '| link | kernel vxlan Gbit/s | vmlink Gbit/s | vmlink/peer |',
    '| --- | ---: | ---: | ---: |',
    ...[row, offRow].map((x) => `| ${x.link} | ${x.raw_gbps} | ${x.vmlink_gbps} | ${x.ratio} |`),
  ].join('\n');
  return {
    scenario: 'overlay',
    when: new Date().toISOString(),
    machine: machineInfo(),
    rows: [row, offRow],
    markdown: md,
  };
}

/** `--links tcp,tls,vxlan` (any of them); anything else stops with a usage line. */
function parseLinks(text: string): Mode[] {
  const modes = text.split(',');
  const bad = modes.filter((m) => m !== 'tcp' && m !== 'tls' && m !== 'vxlan');
  if (bad.length > 0 || modes.length === 0) {
    console.error(`--links: unknown link kind ${bad.map((b) => `"${b}"`).join(', ')}; use any of tcp,tls,vxlan`);
    process.exit(2);
  }
  return modes as Mode[];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '5' },
      repeat: { type: 'string', default: '1' },
      mtu: { type: 'string', default: '1500' },
      links: { type: 'string', default: 'tcp,tls,vxlan' },
      save: { type: 'boolean', default: false },
    },
  });
  const root = fileURLToPath(new URL('../..', import.meta.url));
  try {
    const r = await overlayScenario({
      root,
      seconds: Number(values.seconds),
      repeat: Number(values.repeat),
      mtu: Number(values.mtu),
      links: parseLinks(values.links),
    });
    console.log(r.markdown);
    console.log(JSON.stringify(r.rows));
    if (values.save) {
      const file = join(root, 'bench', 'results', `${r.scenario}-${r.when.replace(/[:.]/g, '-')}.json`);
      writeFileSync(file, `${JSON.stringify(r, null, 2)}\n`);
      console.log(`wrote ${file}`);
    }
  } finally {
    await cleanup();
  }
}
