/**
 * QEMU argument generation: byte-exact argv for every port kind, and the real
 * qemu-system-x86_64 (7.2) accepting them and connecting to vmlink's ports.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { createPort } from '../../src/daemon/port-registry.js';
import { defaultMac, qemuArgs, shellQuote } from '../../src/daemon/qemu-args.js';
import { silentLogger } from '../../src/log.js';
import { MAX_FRAME_LEN, type Port, type PortState } from '../../src/net/port.js';

const MAC = '52:54:00:12:34:56';
const spec = (o: Record<string, unknown>): PortConfig => portSchema.parse({ name: 'vm1', network: 'n', ...o });

describe('qemuArgs', () => {
  test('attaches a listening unix stream port with server=off', () => {
    assert.deepEqual(qemuArgs(spec({ kind: 'stream', listen: 'unix:/run/vmlink/vm1.sock' }), { mac: MAC }), [
      '-netdev',
      'stream,id=vm1,server=off,addr.type=unix,addr.path=/run/vmlink/vm1.sock',
      '-device',
      'virtio-net-pci,netdev=vm1,mac=52:54:00:12:34:56',
    ]);
  });

  test('attaches a dialling tcp stream port with server=on, and a listening one to loopback for 0.0.0.0', () => {
    assert.deepEqual(qemuArgs(spec({ kind: 'stream', connect: 'tcp:127.0.0.1:5555' }), { mac: MAC, id: 'net0' }), [
      '-netdev',
      'stream,id=net0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56',
    ]);
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'tcp:0.0.0.0:5555' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5555',
    );
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'tcp:[::]:5555' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=inet,addr.host=::1,addr.port=5555',
    );
  });

  test('attaches socket ports with connect= and listen=', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'socket', listen: 'tcp:127.0.0.1:6000' }), { mac: MAC })[1],
      'socket,id=vm1,connect=127.0.0.1:6000',
    );
    assert.equal(
      qemuArgs(spec({ kind: 'socket', connect: 'tcp:127.0.0.1:6001' }), { mac: MAC })[1],
      'socket,id=vm1,listen=127.0.0.1:6001',
    );
  });

  test("swaps a dgram port's local and remote for the VM", () => {
    assert.equal(
      qemuArgs(spec({ kind: 'dgram', local: 'udp:0.0.0.0:7001', remote: 'udp:127.0.0.1:7002' }), { mac: MAC })[1],
      'dgram,id=vm1,local.type=inet,local.host=127.0.0.1,local.port=7002,remote.type=inet,remote.host=127.0.0.1,remote.port=7001',
    );
  });

  test("swaps a unix dgram port's socket paths for the VM", () => {
    assert.equal(
      qemuArgs(spec({ kind: 'dgram', local: 'unix:/run/vmlink/a,1.sock', remote: 'unix:/run/vmlink/vm1.qemu' }), {
        mac: MAC,
      })[1],
      'dgram,id=vm1,local.type=unix,local.path=/run/vmlink/vm1.qemu,remote.type=unix,remote.path=/run/vmlink/a,,1.sock',
    );
  });

  test('plugs into a vde port directory, and refuses a tap port', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'vde', dir: '/run/vmlink/vde,1' }), { mac: MAC })[1],
      'vde,id=vm1,sock=/run/vmlink/vde,,1',
    );
    assert.throws(() => qemuArgs(spec({ kind: 'tap', ifname: 'vmtap0' }), { mac: MAC }), { code: 'ERR_QEMU_ARGS' });
  });

  test('doubles commas in a socket path (QEMU option syntax)', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'unix:/tmp/a,b.sock' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=unix,addr.path=/tmp/a,,b.sock',
    );
  });

  test('refuses what QEMU 7.2 cannot do, bad MACs and bad ids, with ERR_QEMU_ARGS', () => {
    const cases: [Record<string, unknown>, { mac: string; id?: string }][] = [
      [{ kind: 'socket', listen: 'tcp:[::1]:6000' }, { mac: MAC }],
      [{ kind: 'dgram', local: 'udp:[::1]:1', remote: 'udp:[::1]:2' }, { mac: MAC }],
      [{ kind: 'stream', listen: 'unix:/x.sock' }, { mac: '53:54:00:00:00:01' }],
      [{ kind: 'stream', listen: 'unix:/x.sock' }, { mac: 'nope' }],
      [
        { kind: 'stream', listen: 'unix:/x.sock' },
        { mac: MAC, id: 'has space' },
      ],
    ];
    for (const [s, o] of cases) assert.throws(() => qemuArgs(spec(s), o), { code: 'ERR_QEMU_ARGS' });
  });

  test('prefixes a port name that does not start with a letter to make a QEMU id', () => {
    const args = qemuArgs(portSchema.parse({ name: '7vm', network: 'n', kind: 'stream', listen: 'unix:/x.sock' }), {
      mac: MAC,
    });
    assert.match(args[1] as string, /^stream,id=net-7vm,/);
  });
});

describe('defaultMac', () => {
  test('is a stable locally administered unicast MAC under 52:54:00', () => {
    const m = defaultMac('vm1');
    assert.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(defaultMac('vm1'), m);
    assert.equal(Number.parseInt(m.slice(0, 2), 16) & 0b11, 0b10);
  });

  test('differs between names', () => {
    const macs = new Set(Array.from({ length: 200 }, (_, i) => defaultMac(`vm${i}`)));
    assert.ok(macs.size >= 199);
  });
});

describe('shellQuote', () => {
  test('leaves plain words and quotes the rest so a POSIX shell reads them back', () => {
    assert.equal(
      shellQuote(['qemu', '-netdev', 'stream,id=a,addr.path=/tmp/x y', "it's", '']),
      "qemu -netdev 'stream,id=a,addr.path=/tmp/x y' 'it'\\''s' ''",
    );
  });

  test('round-trips through sh', async () => {
    const args = ['a b', "c'd", '$HOME', '`x`', 'e"f', 'plain,=:/'];
    const out = await run('sh', ['-c', `printf '%s\\n' ${shellQuote(args)}`]);
    assert.equal(out, `${args.join('\n')}\n`);
  });
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}`))));
  });
}

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
