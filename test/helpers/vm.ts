/**
 * Real VMs for end-to-end tests: QEMU (TCG) booting the Debian cloud kernel
 * with the busybox initramfs of initramfs.ts, driven over the serial console.
 * {@link Vm.run} sends a command and reads its output up to an end marker
 * that the command line itself cannot match.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildInitramfs, type GuestImage, READY_LINE, REPO_ROOT } from './initramfs.js';

export { freeTcpPort, freeUdpPort, waitTcpListening } from './host-net.js';
export { type GuestImage, REPO_ROOT } from './initramfs.js';

export interface BootOptions {
  /** VM name: console log name and guest hostname. */
  name: string;
  /** Extra QEMU arguments: the NIC (e.g. from `vmlink qemu-args PORT --json`), disks, ... */
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
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can time out and panic at boot.
    const append = ['console=ttyS0', 'quiet', 'panic=-1', 'no_timer_check', `vmlink.name=${opts.name}`];
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
    // The INT trap keeps the shell alive through a Ctrl-C after a timeout: the command (a
    // child, with default SIGINT) dies, the shell runs the trap and goes on reading, so the
    // console never depends on init restarting a shell.
    this.#proc.stdin?.write(`trap : INT; { ${cmd}\n} </dev/null 2>&1; echo "__VMLINK_E""ND_${id}:$?__"\n`);
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
      await this.#resync(id);
      throw err;
    }
  }

  /**
   * After Ctrl-C: the shell dies (init starts a new one) and the tty may flush
   * what was typed meanwhile, so ask again every second until a shell answers,
   * then send one last marker and wait for it: the shell reads in order, so
   * every earlier question has been answered (or was lost) before it.
   */
  async #resync(id: string): Promise<void> {
    const at = this.#console.length;
    const answered = new RegExp(`__VMLINK_SYNC_${id}__\\n`);
    for (let i = 0; i < 30; i++) {
      this.#proc.stdin?.write(`echo "__VMLINK_S""YNC_${id}__"\n`);
      const ok = await this.#waitFor(answered, at, 1000, 'the shell after Ctrl-C').then(
        () => true,
        () => false,
      );
      if (ok) break;
    }
    const last = this.#console.length;
    this.#proc.stdin?.write(`echo "__VMLINK_S""YNC_${id}_LAST__"\n`);
    await this.#waitFor(new RegExp(`__VMLINK_SYNC_${id}_LAST__\\n`), last, 10_000, 'the shell after Ctrl-C').catch(
      () => {},
    );
  }

  /** Like {@link run} but rejects (with the output) unless the exit status is 0. */
  async sh(cmd: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(cmd, opts);
    if (r.code !== 0) throw new VmError(this.name, `"${cmd}" exited ${r.code}:\n${r.output}`, this.#tail(10));
    return r.output;
  }

  /** Stops QEMU (SIGTERM, then SIGKILL after 5 s) and waits until it is reaped. Idempotent. */
  /**
   * Freezes the VM's QEMU (SIGSTOP): the guest sends nothing and its sockets stay open, as a live
   * migration's source is stopped for the switch-over. {@link close} ends it either way.
   */
  pause(): void {
    this.#proc.kill('SIGSTOP');
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#exitCode === undefined) {
      this.#proc.kill('SIGTERM');
      this.#proc.kill('SIGCONT'); // a paused VM handles its SIGTERM once it runs again
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
