/**
 * Real VMs for end-to-end tests: QEMU (TCG) booting the Debian cloud kernel
 * with a tiny busybox initramfs, driven over the serial console.
 *
 * The initramfs is built once and cached under `<repo>/.cache/vm/`, keyed by
 * the kernel version and a hash of everything that goes into it. Each VM's
 * `/init` loads the virtio-net modules, configures `eth0` from the kernel
 * command line (`vmlink.ip=10.0.0.1/24 vmlink.mac=...`) and runs a shell on
 * ttyS0; {@link Vm.run} sends a command and reads its output up to an end
 * marker that the command's own echo cannot match.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Repository root (this file runs from `<repo>/dist/test/helpers/`). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Modules loaded with busybox insmod, in dependency order. */
export const VIRTIO_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
] as const;

/** Printed by /init when eth0 is configured and the shell is about to start. */
const READY_LINE = 'vmlink-init: ready';

/** The guest's /init (busybox ash). Part of the cache key: edit freely. */
export const INIT_SCRIPT = `#!/bin/busybox sh
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run /www /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
dmesg -n 1
for m in ${VIRTIO_MODULES.join(' ')}; do
  insmod /lib/modules/$m.ko || echo "vmlink-init: insmod $m failed"
done
IP=
MAC=
INTERACTIVE=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmlink.ip=*) IP="\${arg#vmlink.ip=}" ;;
    vmlink.mac=*) MAC="\${arg#vmlink.mac=}" ;;
    vmlink.name=*) hostname "\${arg#vmlink.name=}" ;;
    vmlink.interactive=1) INTERACTIVE=1 ;;
  esac
done
ip link set lo up
# virtio_net probes asynchronously: wait for eth0 (up to 10 s) when it is to be configured.
i=0
while [ -n "$IP$MAC" ] && [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$MAC" ] && ip link set eth0 address "$MAC"
  [ -n "$IP" ] && ip addr add "$IP" dev eth0
  ip link set eth0 up
elif [ -n "$IP$MAC" ]; then
  echo "vmlink-init: no eth0 (is a virtio-net-pci device attached?)"
fi
export HOME=/root
if [ -n "$INTERACTIVE" ]; then
  echo "${READY_LINE}"
  exec setsid cttyhack sh
fi
# The harness's shell reads the console as a script: no echo, no prompt, no
# line editing, and its reads retry after signals (an interactive busybox ash
# with echo off reads with fgets, which ends the shell on the EINTR of a
# SIGCHLD). PID 1 stays this script: it reaps orphans and restarts the shell
# when Ctrl-C (the console is its controlling tty) or a syntax error ends it.
stty -echo
echo "${READY_LINE}"
while :; do
  setsid cttyhack sh /dev/ttyS0
  echo "vmlink-init: shell exited with status $?; restarting it"
done
`;

export interface GuestImage {
  /** Kernel image path (bzImage). */
  kernel: string;
  /** gzip'd newc cpio initramfs path. */
  initrd: string;
  /** Kernel release, e.g. `6.1.0-56-cloud-amd64`. */
  version: string;
}

/** The newest Debian cloud kernel in /boot (env VMLINK_VM_KERNEL overrides the image path). */
export function findKernel(): { kernel: string; version: string } {
  const override = process.env['VMLINK_VM_KERNEL'];
  if (override) {
    const version = /vmlinuz-(.+)$/.exec(override)?.[1];
    if (!version) throw new Error(`VMLINK_VM_KERNEL="${override}" must be a path ending in vmlinuz-<version>`);
    return { kernel: override, version };
  }
  const versions = readdirSync('/boot')
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined && existsSync(`/lib/modules/${v}`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (!version) {
    throw new Error(
      'no /boot/vmlinuz-*-cloud-amd64 with matching /lib/modules/<version>: run scripts/setup.sh (installs linux-image-cloud-amd64)',
    );
  }
  return { kernel: `/boot/vmlinuz-${version}`, version };
}

/** Finds `name.ko` under /lib/modules/<version>/kernel. */
function findModule(version: string, name: string): string {
  const root = `/lib/modules/${version}/kernel`;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) stack.push(p);
      else if (ent.name === `${name}.ko`) return p;
    }
  }
  throw new Error(`kernel module ${name}.ko not found under ${root} (compressed modules are not supported)`);
}

function busyboxPath(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (existsSync(p)) return p;
  throw new Error('busybox not found: run scripts/setup.sh (installs busybox-static)');
}

let building: Promise<GuestImage> | undefined;

/**
 * Builds (or reuses from the cache) the initramfs for the current kernel.
 * Safe to call concurrently: one build per process, and the cache file is
 * written under a temporary name and renamed into place.
 */
export function buildInitramfs(cacheDir = join(REPO_ROOT, '.cache', 'vm')): Promise<GuestImage> {
  building ??= build(cacheDir).catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}

async function build(cacheDir: string): Promise<GuestImage> {
  const { kernel, version } = findKernel();
  const bb = busyboxPath();
  const modules = VIRTIO_MODULES.map((m) => findModule(version, m));
  const hash = createHash('sha256').update(INIT_SCRIPT);
  for (const f of [bb, ...modules]) {
    const st = statSync(f);
    hash.update(`${f}:${st.size}:${st.mtimeMs}\n`);
  }
  const key = hash.digest('hex').slice(0, 16);
  const initrd = join(cacheDir, `initramfs-${version}-${key}.cpio.gz`);
  if (existsSync(initrd)) return { kernel, initrd, version };

  await mkdir(cacheDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'vmlink-initramfs-'));
  try {
    const root = join(work, 'root');
    for (const d of ['bin', 'sbin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'run', 'www', 'root', 'etc']) {
      await mkdir(join(root, d), { recursive: true });
    }
    await copyFile(bb, join(root, 'bin/busybox'));
    await chmod(join(root, 'bin/busybox'), 0o755);
    const { stdout } = await execFileP(bb, ['--list']);
    for (const applet of stdout.split('\n')) {
      if (applet && applet !== 'busybox') await symlink('busybox', join(root, 'bin', applet));
    }
    for (const [i, m] of VIRTIO_MODULES.entries()) {
      await copyFile(modules[i] as string, join(root, 'lib/modules', `${m}.ko`));
    }
    await writeFile(join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    const tmpOut = `${initrd}.${process.pid}.tmp`;
    // newc is the only cpio format the kernel unpacks (Documentation/driver-api/early-userspace).
    await execFileP('sh', [
      '-c',
      `cd "$1" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 > "$2"`,
      'sh',
      root,
      tmpOut,
    ]);
    await rename(tmpOut, initrd);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { kernel, initrd, version };
}

export interface BootOptions {
  /** VM name: console log name and guest hostname. */
  name: string;
  /** QEMU network arguments, e.g. from `vmlink qemu-args PORT --json` (`-netdev ... -device ...`). */
  netArgs: string[];
  /** Guest address with prefix, e.g. `10.0.0.1/24`; omitted: eth0 stays unaddressed. */
  ip?: string;
  /** Guest MAC (set on eth0 by /init); default: whatever the -device line gives. */
  mac?: string;
  /** Guest memory in MiB; default 192. */
  memMb?: number;
  /** Echo console output live to stderr, prefixed with the name; default env VMLINK_VM_CONSOLE=1. */
  echoConsole?: boolean;
}

export interface RunResult {
  /** Everything the command printed (stdout and stderr), `\r` removed. */
  output: string;
  /** The command's exit status. */
  code: number;
}

/** Error from the harness (boot failure, timeout); carries the console tail. */
export class VmError extends Error {
  constructor(vm: string, message: string, consoleTail: string) {
    super(`VM ${vm}: ${message}\n--- console (last lines) ---\n${consoleTail}\n--- end console ---`);
    this.name = 'VmError';
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** A running QEMU guest with a shell on its serial console. */
export class Vm {
  readonly name: string;
  readonly ip: string | undefined;
  readonly #proc: ChildProcess;
  #console = '';
  #stderr = '';
  #exited: Promise<number | null>;
  #exitCode: number | null | undefined;
  #waiters = new Set<() => void>();
  #queue: Promise<unknown> = Promise.resolve();
  #ready: Promise<void> | undefined;
  #seq = 0;
  #closed = false;

  constructor(opts: BootOptions, image: GuestImage) {
    this.name = opts.name;
    this.ip = opts.ip;
    const append = ['console=ttyS0', 'quiet', 'panic=-1', `vmlink.name=${opts.name}`];
    if (opts.ip) append.push(`vmlink.ip=${opts.ip}`);
    if (opts.mac) append.push(`vmlink.mac=${opts.mac}`);
    const args = [
      ...['-accel', 'tcg', '-machine', 'q35', '-cpu', 'max', '-m', String(opts.memMb ?? 192)],
      ...['-nodefaults', '-display', 'none', '-no-user-config', '-no-reboot'],
      ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', append.join(' ')],
      ...['-serial', 'stdio'],
      ...opts.netArgs,
    ];
    const echo = opts.echoConsole ?? process.env['VMLINK_VM_CONSOLE'] === '1';
    this.#proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this.#proc);
    this.#proc.stdout?.setEncoding('latin1');
    this.#proc.stdout?.on('data', (s: string) => {
      const text = s.replaceAll('\r', '');
      if (echo) {
        // Whole lines only, so the consoles of parallel VMs do not interleave mid-line.
        const start = this.#console.lastIndexOf('\n') + 1;
        const lines = (this.#console.slice(start) + text).split('\n');
        lines.pop();
        for (const line of lines) process.stderr.write(`[${this.name}] ${line}\n`);
      }
      this.#console += text;
      this.#wake();
    });
    this.#proc.stderr?.setEncoding('utf8');
    this.#proc.stderr?.on('data', (s: string) => {
      this.#stderr += s;
    });
    this.#proc.stdin?.on('error', () => {}); // EPIPE after QEMU exits: reported through #exited
    this.#exited = new Promise((resolve) => {
      this.#proc.once('error', (err) => {
        this.#stderr += `spawn failed: ${err.message}\n`;
        this.#exitCode = null;
        live.delete(this.#proc);
        this.#wake();
        resolve(null);
      });
      this.#proc.once('exit', (code) => {
        this.#exitCode = code;
        live.delete(this.#proc);
        this.#wake();
        resolve(code);
      });
    });
  }

  /** QEMU's process id. */
  get pid(): number | undefined {
    return this.#proc.pid;
  }

  /** True until QEMU has exited. */
  get running(): boolean {
    return this.#exitCode === undefined;
  }

  /** Everything the guest printed on its console so far. */
  get consoleLog(): string {
    return this.#console;
  }

  /** What QEMU itself printed on stderr. */
  get qemuStderr(): string {
    return this.#stderr;
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  #tail(lines = 40): string {
    const all = `${this.#console}${this.#stderr ? `\n[qemu stderr]\n${this.#stderr}` : ''}`;
    return all.split('\n').slice(-lines).join('\n');
  }

  /** Resolves with the match once `re` matches console text from `from` on. */
  #waitFor(re: RegExp, from: number, timeoutMs: number, what: string): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(this.#console.slice(from));
        if (m) {
          done();
          resolve(m);
        } else if (this.#exitCode !== undefined) {
          done();
          reject(
            new VmError(this.name, `QEMU exited (code ${this.#exitCode}) while waiting for ${what}`, this.#tail()),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new VmError(this.name, `timed out after ${timeoutMs} ms waiting for ${what}`, this.#tail()));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Resolves with the match once `re` matches console output printed after the call. */
  waitForConsole(re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    return this.#waitFor(re, this.#console.length, timeoutMs, `console output ${re}`);
  }

  /** Waits until the guest's shell is up (eth0 configured, echo off). Idempotent. */
  waitReady(timeoutMs = 120_000): Promise<void> {
    this.#ready ??= (async () => {
      await this.#waitFor(new RegExp(`${READY_LINE}\\n`), 0, timeoutMs, 'the guest to boot');
      // The first command proves the shell reads the console (echo is already off: /init did it).
      await this.sh('true', { timeoutMs });
    })();
    return this.#ready;
  }

  /**
   * Runs a shell command in the guest (stdin from /dev/null, stderr merged).
   * Commands run one at a time, in call order. On timeout the command is
   * interrupted (Ctrl-C) and the promise rejects with the console tail.
   */
  run(cmd: string, opts: { timeoutMs?: number } = {}): Promise<RunResult> {
    const next = this.#queue.then(() => this.#runNow(cmd, opts.timeoutMs ?? 60_000));
    this.#queue = next.catch(() => {});
    return next;
  }

  async #runNow(cmd: string, timeoutMs: number): Promise<RunResult> {
    if (this.#closed) throw new VmError(this.name, `run("${cmd}") after close()`, '');
    const id = `${process.pid}_${++this.#seq}`;
    const from = this.#console.length;
    // The marker is split by "" in what we send, so an echo of the line cannot match it.
    this.#proc.stdin?.write(`{ ${cmd}\n} </dev/null 2>&1; echo "__VMLINK_E""ND_${id}:$?__"\n`);
    try {
      const m = await this.#waitFor(
        new RegExp(`__VMLINK_END_${id}:(\\d+)__\\n`),
        from,
        timeoutMs,
        `command "${cmd}" to finish`,
      );
      return { output: this.#console.slice(from, from + m.index), code: Number(m[1]) };
    } catch (err) {
      // Interrupt the command (the shell owns ttyS0 as its controlling tty), then wait
      // until the shell answers again so the next command's output starts clean.
      this.#proc.stdin?.write('\x03');
      const at = this.#console.length;
      this.#proc.stdin?.write(`echo "__VMLINK_S""YNC_${id}__"\n`);
      await this.#waitFor(new RegExp(`__VMLINK_SYNC_${id}__\\n`), at, 10_000, 'the shell after Ctrl-C').catch(() => {});
      throw err;
    }
  }

  /** Like {@link run} but rejects (with the output) unless the exit status is 0. */
  async sh(cmd: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(cmd, opts);
    if (r.code !== 0) throw new VmError(this.name, `"${cmd}" exited ${r.code}:\n${r.output}`, this.#tail(10));
    return r.output;
  }

  /** Stops QEMU (SIGTERM, then SIGKILL after 5 s) and waits until it is reaped. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#exitCode === undefined) {
      this.#proc.kill('SIGTERM');
      const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 5000);
      await this.#exited;
      clearTimeout(timer);
    }
  }

  /** Waits for QEMU to exit on its own; resolves with its exit code. */
  exited(): Promise<number | null> {
    return this.#exited;
  }
}

/** Builds the image if needed and starts QEMU; call {@link Vm.waitReady} before {@link Vm.run}. */
export async function bootVm(opts: BootOptions): Promise<Vm> {
  const image = await buildInitramfs();
  return new Vm(opts, image);
}

/** Boots several VMs at once and waits until all are ready; on failure closes them all. */
export async function bootVms(list: BootOptions[]): Promise<Vm[]> {
  const vms = await Promise.all(list.map((o) => bootVm(o)));
  try {
    await Promise.all(vms.map((v) => v.waitReady()));
  } catch (err) {
    await Promise.all(vms.map((v) => v.close()));
    throw err;
  }
  return vms;
}

/**
 * Runs `fn`; if it throws, writes each VM's console log to stderr and to
 * `<repo>/.cache/vm/logs/<name>.log`, then rethrows.
 */
export async function withConsoleOnFailure<T>(vms: () => Iterable<Vm | undefined>, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    await dumpConsoles([...vms()].filter((v): v is Vm => v !== undefined));
    throw err;
  }
}

/** Writes each VM's console (and QEMU stderr) to stderr and to `.cache/vm/logs/`. */
export async function dumpConsoles(vms: Vm[]): Promise<void> {
  const dir = join(REPO_ROOT, '.cache', 'vm', 'logs');
  await mkdir(dir, { recursive: true });
  for (const vm of vms) {
    const text = `${vm.consoleLog}\n[qemu stderr]\n${vm.qemuStderr}`;
    const file = join(dir, `${vm.name}.log`);
    await writeFile(file, text);
    process.stderr.write(
      `\n===== console of VM ${vm.name} (saved to ${file}) =====\n${text}\n===== end ${vm.name} =====\n`,
    );
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for QEMU, which cannot report a port 0 bind). */
export async function freeTcpPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A UDP port that was free a moment ago on 127.0.0.1. */
export async function freeUdpPort(): Promise<number> {
  const dgram = await import('node:dgram');
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Resolves once something listens on 127.0.0.1:`port` (read from
 * /proc/net/tcp, so no connection is made: QEMU's socket netdev accepts only one).
 */
export async function waitTcpListening(port: number, timeoutMs = 30_000): Promise<void> {
  const needle = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 0A`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const table = await readFile('/proc/net/tcp', 'utf8');
    if (table.includes(needle)) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** sha256 of a host file, hex. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
