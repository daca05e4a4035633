/**
 * NBD server benchmark: `qemu-img bench` against vmlink's NBD server (file
 * backend), nbdkit's file plugin and qemu-nbd, all serving the same raw file
 * over unix sockets on this machine, one after the other.
 *
 *   node dist/bench/nbd.js [--size-mib 256] [--out results.json]
 *
 *   [--peers vmlink,nbdkit-file,qemu-nbd] [--uv-threads 16]
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
const OUT = opt('--out', '');
/** Comma-separated peers to run; default all. */
const ONLY = opt('--peers', 'vmlink,nbdkit-file,qemu-nbd').split(',');
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

const MAIN = new URL('../src/storage/nbd/main.js', import.meta.url).pathname;
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

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-bench-nbd-'));
  const image = join(dir, 'disk.img');
  const fh = await open(image, 'w');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  for (let off = 0; off < SIZE; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
  await fh.close();
  const results: Record<string, Record<string, { seconds: number; opsPerSec: number; mibPerSec: number }>> = {};
  try {
    for (const peer of peers.filter((p) => ONLY.includes(p.name))) {
      const sock = join(dir, `${peer.name}.sock`);
      const proc = await peer.start(image, sock);
      const uri = `nbd+unix:///${peer.name === 'vmlink' ? 'disk' : ''}?socket=${sock}`;
      results[peer.name] = {};
      for (const s of scenarios) {
        const out = await sh('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', String(s.count), ...s.args, uri]);
        const m = /Run completed in ([\d.]+) seconds/.exec(out);
        if (!m) throw new Error(`cannot parse qemu-img bench output: ${out}`);
        const seconds = Number(m[1]);
        const r = { seconds, opsPerSec: s.count / seconds, mibPerSec: (s.count * s.bytes) / seconds / (1 << 20) };
        (results[peer.name] as Record<string, typeof r>)[s.name] = r;
        console.log(
          `${peer.name.padEnd(12)} ${s.name.padEnd(30)} ${r.opsPerSec.toFixed(0).padStart(8)} ops/s ${r.mibPerSec.toFixed(1).padStart(8)} MiB/s`,
        );
      }
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log('\nratio vmlink / peer (ops/s; >1 means vmlink is faster)');
  for (const s of scenarios) {
    const v = results['vmlink']?.[s.name]?.opsPerSec ?? 0;
    const k = results['nbdkit-file']?.[s.name]?.opsPerSec ?? 1;
    const q = results['qemu-nbd']?.[s.name]?.opsPerSec ?? 1;
    console.log(`${s.name.padEnd(30)} vs nbdkit ${(v / k).toFixed(2)}  vs qemu-nbd ${(v / q).toFixed(2)}`);
  }
  if (OUT) await writeFile(OUT, `${JSON.stringify({ sizeBytes: SIZE, results }, null, 2)}\n`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
