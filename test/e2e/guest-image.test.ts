/**
 * `vmlink guest-image` as a newcomer uses it: the command writes a kernel and
 * an initramfs into a fresh directory and prints a QEMU command line; that
 * line, run verbatim by `sh` (with `vmlink` on PATH and VMLINK_CONTROL set, as
 * a user has them), boots a guest on a vmlink port. The guest must reach its
 * interactive shell, get an address from a DHCP server (busybox udhcpd in a
 * namespace behind a TAP port on the same network) and ping that server.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startDaemon, type TestDaemon, VMLINK_BIN } from '../helpers/daemon.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';

/** Console output of a child process, with a way to wait for a pattern in it. */
class Console {
  text = '';
  readonly #waiters = new Set<() => void>();
  #exited: number | null | undefined;

  constructor(proc: ChildProcess) {
    proc.stdout?.setEncoding('latin1');
    proc.stdout?.on('data', (s: string) => this.#add(s));
    proc.stderr?.setEncoding('latin1');
    proc.stderr?.on('data', (s: string) => this.#add(s));
    proc.once('exit', (code) => {
      this.#exited = code;
      this.#wake();
    });
  }

  #add(s: string): void {
    this.text += s.replaceAll('\r', '');
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  /** Resolves with the match of `re` in the output, or rejects (with the output) if the process exits first or `ms` pass. */
  waitFor(re: RegExp, what: string, ms = 180_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}:\n${this.text}`)), ms);
      const check = () => {
        const m = re.exec(this.text);
        if (m) finish(undefined, m);
        else if (this.#exited !== undefined)
          finish(new Error(`QEMU exited (${this.#exited}) before ${what}:\n${this.text}`));
      };
      const finish = (err: Error | undefined, m?: RegExpExecArray) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        if (err) reject(err);
        else resolve(m as RegExpExecArray);
      };
      this.#waiters.add(check);
      check();
    });
  }
}

describe('vmlink guest-image: a guest in one command, booted with the printed command line', {
  timeout: 400_000,
}, () => {
  let work: string;
  let daemon: TestDaemon;
  let ns: Netns | undefined;
  let udhcpd: ChildProcess | undefined;
  let qemu: ChildProcess | undefined;
  let console: Console | undefined;
  const ifname = uniqueIfname('vlg');

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'vmlink-guest-image-'));
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'vm', network: 'lab', kind: 'stream', listen: `unix:${dir}/vm.sock` },
        { name: 'dhcp', network: 'lab', kind: 'tap', ifname },
      ],
    });
    ns = await Netns.create('guest');
    await ns.adopt(ifname, '192.0.2.1/24');
    const conf = join(work, 'udhcpd.conf');
    await writeFile(
      conf,
      [
        'start 192.0.2.100',
        'end 192.0.2.110',
        `interface ${ifname}`,
        `lease_file ${join(work, 'udhcpd.leases')}`,
        `pidfile ${join(work, 'udhcpd.pid')}`,
        'option subnet 255.255.255.0',
        'option router 192.0.2.1',
        '',
      ].join('\n'),
    );
    await writeFile(join(work, 'udhcpd.leases'), '');
    udhcpd = ns.spawn('busybox', 'udhcpd', '-f', conf);
  });

  after(async () => {
    if (qemu?.pid !== undefined && qemu.exitCode === null) {
      const gone = new Promise((r) => qemu?.once('exit', r));
      process.kill(-qemu.pid, 'SIGKILL');
      await gone;
    }
    udhcpd?.kill();
    await ns?.delete();
    await daemon?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  test('the printed command boots the guest to its shell, it gets a DHCP lease over vmlink and pings the server', async () => {
    const out = join(work, 'guest');
    const built = await runCli(['guest-image', '--out', out, '--port', 'vm']);
    assert.equal(built.code, 0, built.stderr);
    assert.match(built.stdout, new RegExp(`^kernel  ${join(out, 'vmlinuz')} `, 'm'));
    assert.match(built.stdout, new RegExp(`^initrd  ${join(out, 'initrd.img')}$`, 'm'));
    const command = built.stdout.split('\n').find((l) => l.startsWith('qemu-system-x86_64 '));
    assert.ok(command, `no QEMU command line in:\n${built.stdout}`);
    assert.match(command, /-serial mon:stdio/);
    assert.match(command, /console=ttyS0/);
    assert.match(command, /-accel tcg/);
    assert.match(command, /\$\(vmlink qemu-args vm\)$/);

    // `vmlink` on PATH and VMLINK_CONTROL in the environment, as after `npm link` and the README's export.
    await writeFile(join(work, 'vmlink'), `#!/bin/sh\nexec "${process.execPath}" "${VMLINK_BIN}" "$@"\n`);
    await chmod(join(work, 'vmlink'), 0o755);
    const env = { ...process.env, PATH: `${work}:${process.env['PATH'] ?? ''}`, VMLINK_CONTROL: daemon.control };
    qemu = spawn('sh', ['-c', command], { env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    console = new Console(qemu);

    const lease = await console.waitFor(/vmlink-init: eth0 (192\.0\.2\.1\d\d)\/24 from DHCP/, 'a DHCP lease');
    await console.waitFor(/vmlink-init: ready/, 'the shell');
    // The marker is split by "" in what is typed, so the terminal's echo of the line cannot match it.
    qemu.stdin?.write('ip -4 addr show eth0; ping -c 1 -W 5 192.0.2.1 && echo "PI""NG-OK"\n');
    await console.waitFor(/PING-OK/, 'a ping reply from the DHCP server');
    assert.match(console.text, new RegExp(`inet ${lease[1]?.replaceAll('.', '\\.')}/24`));
    const port = await daemon.json<{ port: { state: string; counters: { rx_frames: number } } }>([
      'port',
      'show',
      'vm',
    ]);
    assert.equal(port.port.state, 'up');
    assert.ok(port.port.counters.rx_frames > 0);
  });
});
