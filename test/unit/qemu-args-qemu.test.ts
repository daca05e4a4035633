/**
 * The real qemu-system-x86_64 (7.2) accepting the arguments vmlink generates
 * for every port kind and connecting to vmlink's ports.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { createPort } from '../../src/daemon/port-registry.js';
import { defaultMac, qemuArgs } from '../../src/daemon/qemu-args.js';
import { silentLogger } from '../../src/log.js';
import { MAX_FRAME_LEN, type Port, type PortState } from '../../src/net/port.js';

const MAC = '52:54:00:12:34:56';
const spec = (o: Record<string, unknown>): PortConfig => portSchema.parse({ name: 'vm1', network: 'n', ...o });

/** A paused QEMU (no guest code runs) with its HMP monitor on stdio. */
class Qemu {
  readonly p: ChildProcessWithoutNullStreams;
  #out = '';
  #wake: (() => void) | undefined;
  readonly exited: Promise<number | null>;
  /** `running`: start the (diskless) machine instead of holding it paused, so its network layer moves frames. */
  constructor(args: string[], running = false) {
    this.p = spawn('qemu-system-x86_64', [
      '-accel',
      'tcg',
      '-machine',
      'q35',
      '-nodefaults',
      '-display',
      'none',
      ...(running ? [] : ['-S']),
      '-monitor',
      'stdio',
      ...args,
    ]);
    const take = (d: Buffer) => {
      this.#out += d.toString('latin1');
      this.#wake?.();
    };
    this.p.stdout.on('data', take);
    this.p.stderr.on('data', take);
    this.exited = new Promise((resolve) => this.p.on('close', (code) => resolve(code)));
    this.p.on('close', () => this.#wake?.());
  }
  /** Waits for output matching `re` (or QEMU exiting); returns all output so far. */
  async waitFor(re: RegExp): Promise<string> {
    while (!re.test(this.#out) && this.p.exitCode === null) await new Promise<void>((r) => (this.#wake = r));
    return this.#out;
  }
  /** Runs an HMP command; returns its output. */
  async hmp(cmd: string): Promise<string> {
    await this.waitFor(/\(qemu\) $/);
    const start = this.#out.length;
    this.p.stdin.write(`${cmd}\n`);
    // The monitor echoes the command with terminal escapes, then prints and prompts again.
    while (this.p.exitCode === null && !/\(qemu\) $/.test(this.#out.slice(start + cmd.length))) {
      await new Promise<void>((r) => (this.#wake = r));
    }
    return this.#out.slice(start);
  }
  /** Asks `info network` (a bounded number of times) until the netdev shows a connection to `path` (or none, for want=false). */
  async connected(path: string, want = true): Promise<boolean> {
    for (let i = 0; i < 200; i++) {
      if ((await this.hmp('info network')).includes(`type=stream,unix:${path}`) === want) return true;
    }
    return false;
  }
  async quit(): Promise<number | null> {
    if (this.p.exitCode === null) this.p.stdin.write('quit\n');
    return this.exited;
  }
  kill(): void {
    if (this.p.exitCode === null) this.p.kill('SIGKILL');
  }
}

describe('real QEMU 7.2 accepts the generated arguments', () => {
  let dir = '';
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  let nextPort = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-qemu-args-'));
    // A free-ish TCP/UDP port range per run, derived from the pid (ports are probed by bind below).
    nextPort = 20000 + (process.pid % 20000);
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await rm(dir, { recursive: true, force: true });
  });

  /** Opens a vmlink port for `s`; resolves a promise at every 'up'. */
  async function openPort(s: PortConfig): Promise<{ port: Port; up: () => Promise<void>; states: PortState[] }> {
    const states: PortState[] = [];
    let ups = 0;
    let taken = 0;
    let wake: (() => void) | undefined;
    const port = createPort(s, {
      sink: () => {},
      logger: silentLogger(),
      maxFrameLen: MAX_FRAME_LEN,
      queueLen: 64,
      onMalformed: () => {},
      onState: (st) => {
        states.push(st);
        if (st === 'up') ups++;
        wake?.();
      },
    });
    cleanups.push(() => port.destroy());
    await port.open();
    const up = async () => {
      taken++;
      while (ups < taken) await new Promise<void>((r) => (wake = r));
    };
    return { port, up, states };
  }

  function startQemu(args: string[], running = false): Qemu {
    const q = new Qemu(args, running);
    cleanups.push(() => q.kill());
    return q;
  }

  /** A TCP/UDP port number nobody on loopback uses right now. */
  async function freePort(): Promise<number> {
    const { createServer } = await import('node:net');
    for (;;) {
      const p = nextPort++;
      const ok = await new Promise<boolean>((resolve) => {
        const s = createServer();
        s.once('error', () => resolve(false));
        s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
      });
      if (ok) return p;
    }
  }

  const T = { timeout: 60_000 };

  test('a listening unix stream port sees QEMU connect', T, async () => {
    const s = spec({ kind: 'stream', listen: `unix:${join(dir, 'listen.sock')}` });
    const { up } = await openPort(s);
    const q = startQemu(qemuArgs(s, { mac: defaultMac(s.name) }));
    await up();
    assert.match(await q.hmp('info network'), /type=stream/);
    assert.equal(await q.quit(), 0);
  });

  test('a listening tcp stream port and a listening socket port see QEMU connect', T, async () => {
    for (const kind of ['stream', 'socket']) {
      const s = spec({ kind, listen: `tcp:127.0.0.1:${await freePort()}` });
      const { up } = await openPort(s);
      const q = startQemu(qemuArgs(s, { mac: MAC }));
      await up();
      assert.equal(await q.quit(), 0, kind);
    }
  });

  test(
    "a connect-mode stream port dials QEMU's server=on socket, and again after the port is re-created",
    T,
    async () => {
      const path = join(dir, 'server.sock');
      const s = spec({ kind: 'stream', connect: `unix:${path}`, reconnect: { min_ms: 10, max_ms: 100 } });
      // The port first, QEMU second: the port keeps dialling until QEMU listens.
      const first = await openPort(s);
      const q = startQemu(qemuArgs(s, { mac: MAC }));
      await first.up();
      assert.ok(await q.connected(path), 'QEMU did not accept the first connection');
      // A daemon restart: QEMU 7.2 listens again once its client went away.
      await first.port.close();
      assert.ok(await q.connected(path, false), 'QEMU did not see the first connection go away');
      const second = await openPort(s);
      await second.up();
      assert.ok(await q.connected(path), 'QEMU did not accept the connection after the first one went away');
      assert.equal(await q.quit(), 0);
    },
  );

  test("a connect-mode tcp stream port and socket port dial QEMU's listening socket", T, async () => {
    for (const kind of ['stream', 'socket']) {
      const s = spec({ kind, connect: `tcp:127.0.0.1:${await freePort()}`, reconnect: { min_ms: 10, max_ms: 100 } });
      const q = startQemu(qemuArgs(s, { mac: MAC }));
      const { up } = await openPort(s);
      await up();
      assert.equal(await q.quit(), 0, kind);
    }
  });

  test('QEMU plugs into a vde port', T, async () => {
    const s = spec({ kind: 'vde', dir: join(dir, 'vde') });
    const { port } = await openPort(s);
    const q = startQemu(qemuArgs(s, { mac: MAC }));
    assert.match(await q.hmp('info network'), /type=vde/);
    assert.equal(await q.quit(), 0);
    await port.close();
  });

  test('QEMU starts with the arguments of a dgram port', T, async () => {
    const s = spec({
      kind: 'dgram',
      local: `udp:127.0.0.1:${await freePort()}`,
      remote: `udp:127.0.0.1:${await freePort()}`,
    });
    await openPort(s);
    const q = startQemu(qemuArgs(s, { mac: MAC }));
    assert.match(await q.hmp('info network'), /type=dgram/);
    assert.equal(await q.quit(), 0);
  });

  test('QEMU starts with the arguments of a unix dgram port', T, async () => {
    const s = spec({
      kind: 'dgram',
      local: `unix:${join(dir, 'udg', 'vm.sock')}`,
      remote: `unix:${join(dir, 'vm.qemu')}`,
    });
    await openPort(s);
    const q = startQemu(qemuArgs(s, { mac: MAC }));
    assert.match(await q.hmp('info network'), /type=dgram/);
    assert.equal(await q.quit(), 0);
  });

  test(
    "frames flow both ways between two unix dgram ports through QEMU's netdevs (joined by a QEMU hub)",
    T,
    async () => {
      // No guest drives a NIC here: each port's generated -netdev is joined to a hub, so QEMU's own
      // dgram code receives what one vmlink port sends and sends it on to the other port.
      const got: Buffer[][] = [[], []];
      let wake: (() => void) | undefined;
      const ports: Port[] = [];
      const netdevs: string[] = [];
      for (const i of [0, 1]) {
        const s = spec({
          name: `hub${i}`,
          kind: 'dgram',
          local: `unix:${join(dir, `hub${i}.sock`)}`,
          remote: `unix:${join(dir, `hub${i}.qemu`)}`,
        });
        const port = createPort(s, {
          sink: (b, off, len) => {
            got[i]?.push(Buffer.from(b.subarray(off, off + len)));
            wake?.();
          },
          logger: silentLogger(),
          maxFrameLen: MAX_FRAME_LEN,
          queueLen: 64,
          onMalformed: () => {},
          onState: () => {},
        });
        cleanups.push(() => port.destroy());
        await port.open();
        ports.push(port);
        const args = qemuArgs(s, { mac: MAC });
        netdevs.push('-netdev', args[1] as string, '-netdev', `hubport,id=hp${i},hubid=0,netdev=hub${i}`);
      }
      const q = startQemu(netdevs, true);
      // QEMU's net layer holds frames while the machine is not running: wait for it to run (bounded).
      for (let k = 0; k < 200 && !/running/.test(await q.hmp('info status')); k++);
      const frame = (tag: string) =>
        Buffer.concat([Buffer.from('ffffffffffff5254001234560800', 'hex'), Buffer.from(tag.padEnd(50, '.'))]);
      const [p0, p1] = ports as [Port, Port];
      p0.write(frame('probe'), 0, 64);
      while (got[1]?.length === 0) await new Promise<void>((r) => (wake = r));
      assert.deepEqual(got[1]?.[0], frame('probe'));
      p1.write(frame('back'), 0, 64);
      while (got[0]?.length === 0) await new Promise<void>((r) => (wake = r));
      assert.deepEqual(got[0]?.[0], frame('back'));
      assert.equal(await q.quit(), 0);
    },
  );
});
