/**
 * Scenario "vde": vmlink's vde ports versus vde_switch, driven by the same
 * VDE-protocol generator and sink (this file, run as `vde.js gen|sink ...`):
 * each speaks request_v3 on DIR/ctl like vde_plug, then moves frames as
 * datagrams on its data socket with sendmmsg / recvmmsg through the addon.
 * Also the generator's socket joined straight to the sink's (the ceiling).
 *
 * Pinning (--pin, default on; the same in all three cases): the switch under
 * test (vmlink daemon or vde_switch) alone on cpu 1 (`taskset -c 1`), the
 * generator and the sink share cpu 0 (`taskset -c 0`), so the switches are
 * compared on one dedicated core; the direct case runs on cpu 0 only.
 *
 *   node dist/bench/vde.js [--seconds S] [--repeat N] [--pin]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, endianness, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { native } from '../src/native/index.js';
import type { ScenarioResult } from './types.js';
import { fmtM, machineInfo, median, waitListening } from './util.js';

const GEN_MAC = '020000000001';
const SINK_MAC = '020000000002';
const SUN_LEN = 110;
const BATCH = 64;

interface Opts {
  root: string;
  seconds: number;
  repeat: number;
  pin: boolean;
}

/** The plug side of request_v3: returns the switch's data socket path for our bound socket `own`. */
async function plug(dir: string, own: string): Promise<{ path: string; ctl: import('node:net').Socket }> {
  const le = endianness() === 'LE';
  const req = Buffer.alloc(12 + SUN_LEN + 32);
  const w32 = (v: number, o: number) => (le ? req.writeUInt32LE(v, o) : req.writeUInt32BE(v, o));
  w32(0xfeedface, 0);
  w32(3, 4);
  w32(0, 8);
  if (le) req.writeUInt16LE(1, 12);
  else req.writeUInt16BE(1, 12);
  req.write(own, 14);
  req.write('vmlink bench', 12 + SUN_LEN);
  const ctl = connect(join(dir, 'ctl'));
  await once(ctl, 'connect');
  ctl.write(req);
  let got = Buffer.alloc(0);
  while (got.length < SUN_LEN) got = Buffer.concat([got, (await once(ctl, 'data'))[0] as Buffer]);
  const end = got.indexOf(0, 2);
  return { path: got.toString('utf8', 2, end < 0 ? SUN_LEN : end), ctl };
}

/** A bound datagram socket connected to the switch (vde: DIR/ctl) or straight to `direct`. */
async function dataSocket(own: string, target: { dir?: string; direct?: string }): Promise<number> {
  const n = native();
  const fd = n.socket(n.SOCK_DGRAM);
  try {
    unlinkSync(own);
  } catch {
    // not there
  }
  n.bind(fd, own);
  // A direct sink only receives: it needs no peer.
  if (target.dir === undefined && target.direct === undefined) return fd;
  const to = target.dir !== undefined ? (await plug(target.dir, own)).path : (target.direct as string);
  for (let i = 0; ; i++) {
    try {
      n.connect(fd, to);
      return fd;
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** `gen SIZE SECONDS OWN (vde DIR | direct PATH)`: sends frames to SINK_MAC as fast as the socket takes them. */
async function gen(args: string[]): Promise<void> {
  const [size, secs, own, how, where] = args as [string, string, string, string, string];
  const n = native();
  const fd = await dataSocket(own, how === 'vde' ? { dir: where } : { direct: where });
  const len = Number(size);
  const buf = Buffer.alloc(len * BATCH);
  const offs = new Uint32Array(BATCH);
  const lens = new Uint32Array(BATCH).fill(len);
  for (let i = 0; i < BATCH; i++) {
    offs[i] = i * len;
    buf.write(SINK_MAC, i * len, 'hex');
    buf.write(GEN_MAC, i * len + 6, 'hex');
    buf.writeUInt16BE(0x88b5, i * len + 12);
  }
  const until = performance.now() + Number(secs) * 1000;
  const poller = new n.Poller(fd, () => pump());
  function pump(): void {
    // Send until the socket is full, then wait for POLLOUT (the switch read some).
    try {
      for (let k = 0; k < 64; k++) {
        if (n.sendBatch(fd, buf, offs, lens, 0, BATCH, null) < BATCH) break;
      }
    } catch (err) {
      // The switch or sink went away first (the run is over): stop quietly.
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err;
      poller.close();
      process.exit(0);
    }
    if (performance.now() > until) {
      poller.close();
      process.exit(0);
    }
  }
  poller.start(n.WRITABLE);
}

/** `sink SECONDS OWN (vde DIR | direct PATH)`: says hello (so a switch learns SINK_MAC), counts frames for SECONDS from the first. */
async function sink(args: string[]): Promise<void> {
  const [secs, own, how, where] = args as [string, string, string, string];
  const n = native();
  const fd = await dataSocket(own, how === 'vde' ? { dir: where } : {});
  const hello = Buffer.alloc(64);
  hello.write('ffffffffffff', 0, 'hex');
  hello.write(SINK_MAC, 6, 'hex');
  hello.writeUInt16BE(0x88b5, 12);
  if (how === 'vde') n.sendBatch(fd, hello, new Uint32Array([0]), new Uint32Array([64]), 0, 1, null);
  console.log('ready');
  // Direct: connect back to the generator once it is bound. Two unix datagram sockets connected to each
  // other skip the receive-queue limit (net.unix.max_dgram_qlen), as a vde plug and its switch port do.
  for (let i = 0; how === 'direct' && i < 1000; i++) {
    try {
      n.connect(fd, where);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  const rx = Buffer.alloc(BATCH * 2048);
  const lens = new Uint32Array(BATCH);
  let frames = 0;
  let bytes = 0;
  let start = 0;
  const poller = new n.Poller(fd, () => {
    const got = n.recvBatch(fd, rx, 2048, lens, null);
    if (start === 0 && got > 0) start = performance.now();
    frames += got;
    for (let i = 0; i < got; i++) bytes += lens[i] as number;
    const t = (performance.now() - start) / 1000;
    if (start > 0 && t >= Number(secs)) {
      console.log(JSON.stringify({ frames, bytes, seconds: t }));
      poller.close();
      process.exit(0);
    }
  });
  poller.start(n.READABLE);
}

function pinned(cpu: string | undefined, cmd: string, args: string[], stdin: 'ignore' | 'pipe'): ChildProcess {
  const [c, a] = cpu === undefined ? [cmd, args] : ['taskset', ['-c', cpu, cmd, ...args]];
  return spawn(c, a, { stdio: [stdin, 'pipe', 'inherit'] });
}

/** One run: sink and generator around `how`/`where`; frames/s at the sink. */
async function measure(o: Opts, self: string, size: number, dir: string, target: string[][]): Promise<number> {
  const [sinkTarget, genTarget] = target as [string[], string[]];
  const s = pinned(
    o.pin ? '0' : undefined,
    process.execPath,
    [self, 'sink', String(o.seconds), join(dir, 'sink.d'), ...sinkTarget],
    'ignore',
  );
  const sinkClosed = once(s, 'close');
  const rl = createInterface({ input: s.stdout as NodeJS.ReadableStream });
  const lines: string[] = [];
  rl.on('line', (l) => lines.push(l));
  while (!lines.includes('ready')) await once(rl, 'line');
  const g = pinned(
    o.pin ? '0' : undefined,
    process.execPath,
    [self, 'gen', String(size), String(o.seconds + 3), join(dir, 'gen.d'), ...genTarget],
    'ignore',
  );
  const genClosed = once(g, 'close').catch(() => undefined);
  await sinkClosed;
  if (g.exitCode === null && g.signalCode === null) g.kill('SIGTERM');
  await genClosed;
  const r = JSON.parse(lines.find((l) => l.startsWith('{')) ?? '{}') as { frames?: number; seconds?: number };
  if (!r.frames || !r.seconds) throw new Error(`vde bench: the sink reported nothing (${lines.join(' | ')})`);
  return r.frames / r.seconds;
}

export async function vdeScenario(o: Opts): Promise<ScenarioResult> {
  const self = fileURLToPath(import.meta.url);
  const rows: Record<string, unknown>[] = [];
  for (const size of [64, 1500]) {
    const direct: number[] = [];
    const vde: number[] = [];
    const vm: number[] = [];
    for (let i = 0; i < o.repeat; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-vde-'));
      try {
        direct.push(
          await measure(o, self, size, dir, [
            ['direct', join(dir, 'gen.d')],
            ['direct', join(dir, 'sink.d')],
          ]),
        );
        // vde_switch, one switch with both plugs.
        const sw = pinned(o.pin ? '1' : undefined, 'vde_switch', ['-s', join(dir, 'vs')], 'pipe');
        await waitListening(join(dir, 'vs', 'ctl'));
        try {
          vde.push(
            await measure(o, self, size, dir, [
              ['vde', join(dir, 'vs')],
              ['vde', join(dir, 'vs')],
            ]),
          );
        } finally {
          sw.kill('SIGTERM');
          await once(sw, 'close');
        }
        // vmlink: two vde ports on one network.
        const control = join(dir, 'control.sock');
        writeFileSync(
          join(dir, 'vmlink.yaml'),
          [
            `host: { id: bench, control: ${control}, state_dir: ${join(dir, 'state')} }`,
            'networks:',
            '  - { name: bench, vni: 1 }',
            'ports:',
            `  - { name: a, network: bench, kind: vde, dir: "${join(dir, 'va')}", queue_len: 4096 }`,
            `  - { name: b, network: bench, kind: vde, dir: "${join(dir, 'vb')}", queue_len: 4096 }`,
            '',
          ].join('\n'),
        );
        const d = pinned(
          o.pin ? '1' : undefined,
          process.execPath,
          [join(o.root, 'bin', 'vmlink.js'), 'daemon', '--config', join(dir, 'vmlink.yaml'), '--log-level', 'warn'],
          'ignore',
        );
        try {
          await waitListening(join(dir, 'vb', 'ctl'));
          vm.push(
            await measure(o, self, size, dir, [
              ['vde', join(dir, 'vb')],
              ['vde', join(dir, 'va')],
            ]),
          );
        } finally {
          d.kill('SIGTERM');
          await once(d, 'close');
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      console.log(
        `vde ${size} B run ${i + 1}: direct ${fmtM(direct.at(-1) as number)}, vde_switch ${fmtM(vde.at(-1) as number)}, vmlink ${fmtM(vm.at(-1) as number)} frames/s`,
      );
    }
    const [d, v, m] = [median(direct), median(vde), median(vm)];
    rows.push({
      frame_bytes: size,
      direct_fps: Math.round(d),
      vde_switch_fps: Math.round(v),
      vmlink_fps: Math.round(m),
      vmlink_vs_vde_switch: +(m / v).toFixed(3),
      vmlink_vs_direct: +(m / d).toFixed(3),
      runs: o.repeat,
      seconds: o.seconds,
    });
  }
  const md = [
    '## VDE: vmlink vde ports versus vde_switch',
    '',
    `One VDE-protocol generator and sink (request_v3 on DIR/ctl like vde_plug, then sendmmsg/recvmmsg datagrams): through vde_switch (one switch, two plugs), through vmlink (two vde ports of one network), and joined directly (the ceiling). Median of ${o.repeat} runs of ${o.seconds} s, ${o.pin ? 'pinned by taskset the same way for both switches (switch alone on cpu 1; generator and sink on cpu 0)' : 'unpinned'}, ${cpus().length} cores.`,
    '',
    '| frame | direct frames/s | vde_switch frames/s | vmlink frames/s | vmlink/vde_switch | vmlink/direct |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r['frame_bytes']} B | ${fmtM(r['direct_fps'] as number)} | ${fmtM(r['vde_switch_fps'] as number)} | ${fmtM(r['vmlink_fps'] as number)} | ${r['vmlink_vs_vde_switch']} | ${r['vmlink_vs_direct']} |`,
    ),
    '',
    'Target: vmlink at least 1.5x vde_switch.',
  ].join('\n');
  return {
    scenario: 'vde',
    when: new Date().toISOString(),
    machine: machineInfo(),
    rows,
    markdown: md,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'gen') await gen(rest);
  else if (mode === 'sink') await sink(rest);
  else {
    const { values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        seconds: { type: 'string', default: '3' },
        repeat: { type: 'string', default: '1' },
        pin: { type: 'boolean', default: true },
      },
    });
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const r = await vdeScenario({
      root,
      seconds: Number(values.seconds),
      repeat: Number(values.repeat),
      pin: values.pin === true,
    });
    console.log(r.markdown);
  }
}
