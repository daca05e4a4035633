/**
 * The `vmlink` command against the real daemon: the daemon is started with
 * `node bin/vmlink.js daemon --config <temp yaml>` and every command is run
 * through `node bin/vmlink.js --control SOCK ...`. Frames come from raw unix
 * sockets speaking QEMU's stream framing (4-byte big-endian length + frame).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync, watch } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'vmlink.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/vmlink.js ARGS`; resolves with the exit status and output (never rejects on status). */
function run(args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, NO_COLOR: '1', ...opts.env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a system tool; resolves with its exit status and output. */
function runTool(cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Resolves when `path` exists (watching its directory, not polling), or rejects when the child exits first. */
async function waitForFile(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const dir = join(path, '..');
  const w = watch(dir);
  try {
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`the daemon exited (${code}) before ${path} appeared:\n${stderr()}`);
    });
    while (!existsSync(path)) await Promise.race([once(w, 'change'), exited]);
  } finally {
    w.close();
  }
}

interface Daemon {
  child: ChildProcess;
  control: string;
  dir: string;
  stderr: () => string;
}

/** Starts `vmlink daemon` on a fresh temp dir with one network `lab` (vni 100) and one config port. */
async function startDaemon(): Promise<Daemon> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-cli-'));
  const control = join(dir, 'ctl.sock');
  const config = join(dir, 'vmlink.yaml');
  await writeFile(
    config,
    [
      `host: { id: clitest, control: ${control}, state_dir: ${join(dir, 'state')} }`,
      'networks:',
      '  - { name: lab, vni: 100, mtu: 1500 }',
      'ports:',
      `  - { name: cfgport, network: lab, kind: stream, listen: "unix:${join(dir, 'cfg.sock')}" }`,
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [BIN, 'daemon', '--config', config, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  await waitForFile(control, child, () => err);
  return { child, control, dir, stderr: () => err };
}

async function stopDaemon(d: Daemon): Promise<number | null> {
  if (d.child.exitCode === null && d.child.signalCode === null) {
    const exited = once(d.child, 'exit');
    d.child.kill('SIGTERM');
    await exited;
  }
  return d.child.exitCode;
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A broadcast IPv4-typed frame (60 bytes) from `src` (12 hex digits). */
function broadcastFrame(src: string): Buffer {
  return Buffer.concat([hex(`ffffffffffff ${src} 0800`), Buffer.alloc(46, 0xab)]);
}

/** A raw stream-port peer: QEMU's `-netdev stream` framing over a unix socket. */
class StreamPeer {
  readonly sock: Socket;
  readonly frames: Buffer[] = [];
  #buf = Buffer.alloc(0);

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('data', (chunk) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 4 && this.#buf.length >= 4 + this.#buf.readUInt32BE(0)) {
        const len = this.#buf.readUInt32BE(0);
        this.frames.push(this.#buf.subarray(4, 4 + len));
        this.#buf = this.#buf.subarray(4 + len);
        sock.emit('frame');
      }
    });
  }

  static async connect(path: string): Promise<StreamPeer> {
    const sock = connect(path);
    await once(sock, 'connect');
    return new StreamPeer(sock);
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    this.sock.write(Buffer.concat([len, frame]));
  }

  /** Sends `frame` every few ms until `to` receives a frame (the ports may still be attaching). */
  async sendUntilReceived(frame: Buffer, to: StreamPeer): Promise<void> {
    const got = once(to.sock, 'frame');
    this.send(frame);
    const timer = setInterval(() => this.send(frame), 20);
    try {
      await got;
    } finally {
      clearInterval(timer);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** `n` distinct UDP port numbers free right now (bound to port 0 together, then released). */
async function freeUdpPorts(n: number): Promise<number[]> {
  const socks = Array.from({ length: n }, () => createSocket('udp4'));
  for (const s of socks) s.bind(0, '127.0.0.1');
  await Promise.all(socks.map((s) => once(s, 'listening')));
  const ports = socks.map((s) => s.address().port);
  for (const s of socks) s.close();
  return ports;
}

/** Runs `tshark -r FILE -T fields -e eth.src`; resolves with the source MACs, one per frame. */
function tsharkSources(file: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.src'], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tshark -r ${file} failed: ${stderr || err.message}`));
      else resolve(stdout.split('\n').filter((l) => l.trim() !== ''));
    });
  });
}

describe('vmlink command line against a running daemon', { timeout: 300_000 }, () => {
  let d: Daemon;
  const cli = (...args: string[]) => run(['--control', d.control, ...args]);

  before(async () => {
    d = await startDaemon();
  });

  after(async () => {
    if (d) {
      await stopDaemon(d);
      await rm(d.dir, { recursive: true, force: true });
    }
  });

  test('status prints the host id as a table and as JSON', async () => {
    const text = await cli('status');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^host\s+clitest$/m);
    const json = await cli('status', '--json');
    assert.equal(json.code, 0, json.stderr);
    const s = JSON.parse(json.stdout);
    assert.equal(s.host.id, 'clitest');
    assert.equal(s.host.control, d.control);
    assert.equal(typeof s.ports.total, 'number');
  });

  test('finds the daemon through VMLINK_CONTROL when --control is not given', async () => {
    const r = await run(['status', '--json'], { env: { VMLINK_CONTROL: d.control } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).host.id, 'clitest');
  });

  test('creates, lists (table and JSON) and deletes a network', async () => {
    const created = await cli('network', 'create', 'blue', '--vni', '201', '--mtu', '9000');
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /blue/);

    const json = await cli('network', 'list', '--json');
    assert.equal(json.code, 0, json.stderr);
    const blue = JSON.parse(json.stdout).networks.find((n: { name: string }) => n.name === 'blue');
    assert.deepEqual(
      { vni: blue.vni, mtu: blue.mtu, source: blue.source, ports: blue.ports },
      { vni: 201, mtu: 9000, source: 'api', ports: [] },
    );

    const table = await cli('network', 'list');
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^NAME\s+VNI\s+MTU\s+PORTS\s+MACS\s+SOURCE$/);
    assert.ok(!table.stdout.includes('\x1b['), 'no colour when stdout is not a TTY');
    const row = lines.find((l) => l.startsWith('blue '));
    assert.ok(row, table.stdout);
    assert.match(row, /^blue\s+201\s+9000\s+-\s+0\s+api$/);
    assert.equal(row.indexOf(' 201 ') + 4, (lines[0] ?? '').indexOf('VNI') + 3, 'numbers right-aligned under VNI');

    const del = await cli('network', 'delete', 'blue');
    assert.equal(del.code, 0, del.stderr);
    const again = JSON.parse((await cli('network', 'list', '--json')).stdout);
    assert.ok(!again.networks.some((n: { name: string }) => n.name === 'blue'));
  });

  test('refuses a duplicate network name or VNI with exit 1 and names the value', async () => {
    const dupName = await cli('network', 'create', 'lab', '--vni', '4242');
    assert.equal(dupName.code, 1);
    assert.match(dupName.stderr, /"lab"/);
    const dupVni = await cli('network', 'create', 'other', '--vni', '100');
    assert.equal(dupVni.code, 1);
    assert.match(dupVni.stderr, /100/);
  });

  test('rejects bad numbers and missing options locally with exit 2 and a hint', async () => {
    const vni = await cli('network', 'create', 'x', '--vni', 'abc');
    assert.equal(vni.code, 2);
    assert.match(vni.stderr, /^error: --vni "abc" is not an integer 1-16777215$/m);
    assert.match(vni.stderr, /vmlink network create --help/);

    const dgram = ['--kind', 'dgram', '--network', 'lab', '--local', 'udp:127.0.0.1:1', '--remote', 'udp:127.0.0.1:2'];
    const cases: [string[], RegExp][] = [
      [['network', 'create', 'x', '--vni', '16777216'], /--vni "16777216" is not an integer 1-16777215/],
      [['network', 'create', 'x', '--vni', '5', '--mtu', '12'], /--mtu "12" is not an integer 68-65535/],
      [['network', 'create', 'x'], /required option '--vni/],
      [['port', 'add', 'p', '--network', 'lab', '--listen', 'unix:/tmp/x.sock'], /required option '--kind/],
      [['port', 'add', 'p', ...dgram, '--queue-len', '0'], /--queue-len "0" is not an integer 1-1048576/],
      [['port', 'add', 'p', ...dgram, '--max-macs', 'many'], /--max-macs "many"/],
      [['capture', 'p', '-w', '/tmp/x.pcap', '-c', 'ten'], /-c "ten"/],
      [['capture', 'p'], /required option '-w/],
      [['netwrk', 'list'], /unknown command 'netwrk'/],
      [['network', 'list', 'extra'], /too many arguments|unknown/],
    ];
    // Independent invocations: run them side by side.
    const results = await Promise.all(cases.map(([args]) => cli(...args)));
    results.forEach((r, i) => {
      const [args, re] = cases[i] as [string[], RegExp];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.match(r.stderr, /--help\)/, `${args.join(' ')}: a hint follows the error`);
    });
  });

  test('rejects bad addresses, MACs, kinds and option mixes with exit 2 naming the value', async () => {
    const cases: [string[], RegExp][] = [
      [['--kind', 'stream', '--network', 'lab', '--listen', 'tcp:nohost'], /--listen "tcp:nohost"/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:relative.sock'], /"unix:relative.sock"/],
      [['--kind', 'socket', '--network', 'lab', '--listen', 'unix:/tmp/a.sock'], /--listen "unix:\/tmp\/a.sock"/],
      [['--kind', 'dgram', '--network', 'lab', '--local', 'udp:127.0.0.1:1'], /--remote/],
      [['--kind', 'dgram', '--network', 'lab', '--local', 'tcp:1.2.3.4:5', '--remote', 'udp:1.2.3.4:5'], /tcp:1/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/tmp/a.sock', '--mac', 'zz'], /--mac "zz"/],
      [['--kind', 'stream', '--network', 'lab', '--connect', 'unix:/a', '--allowed-mac', '01:00:5e:00:00:01'], /01:00/],
      [['--kind', 'vhost', '--network', 'lab'], /--kind "vhost"/],
      [
        ['--kind', 'vde', '--network', 'lab', '--dir', '/tmp/v', '--listen', 'unix:/a'],
        /--listen is not for --kind vde/,
      ],
      [['--kind', 'stream', '--listen', 'unix:/tmp/a.sock'], /--network/],
      [['--kind', 'stream', '--trunk', '5000=lab', '--listen', 'unix:/tmp/a.sock'], /"5000"/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/a', '--connect', 'unix:/b'], /--listen/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/a', '--storm', 'fast'], /--storm "fast"/],
    ];
    const results = await Promise.all(cases.map(([opts]) => cli('port', 'add', 'bad', ...opts)));
    results.forEach((r, i) => {
      const [opts, re] = cases[i] as [string[], RegExp];
      assert.equal(r.code, 2, `${opts.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, opts.join(' '));
      assert.match(r.stderr, /vmlink port add --help/);
    });
  });

  test("prints the daemon's refusals with exit 1: unknown network, unknown port, config items, invalid names", async () => {
    const dir = d.dir;
    const unknownNet = await cli(
      'port',
      'add',
      'p1',
      '--kind',
      'stream',
      '--network',
      'nosuch',
      '--listen',
      `unix:${join(dir, 'p1.sock')}`,
    );
    assert.equal(unknownNet.code, 1);
    assert.match(unknownNet.stderr, /nosuch/);

    const unknownPort = await cli('port', 'show', 'ghost');
    assert.equal(unknownPort.code, 1);
    assert.match(unknownPort.stderr, /"ghost"/);

    const delGhost = await cli('port', 'delete', 'ghost');
    assert.equal(delGhost.code, 1);
    assert.match(delGhost.stderr, /ghost/);

    const cfg = await cli('port', 'delete', 'cfgport');
    assert.equal(cfg.code, 1);
    assert.match(cfg.stderr, /cfgport/);

    const inUse = await cli('network', 'delete', 'lab');
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /lab/);

    const badName = await cli('network', 'create', 'bad name!', '--vni', '777');
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /^ {2}\S*name: .+$/m, 'the problem is printed with its field path');
  });

  test('refuses a second port on an address already in use, and a duplicate port name', async () => {
    const sock = `unix:${join(d.dir, 'dup.sock')}`;
    const first = await cli('port', 'add', 'dup1', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(first.code, 0, first.stderr);
    const sameName = await cli('port', 'add', 'dup1', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(sameName.code, 1);
    assert.match(sameName.stderr, /"dup1"/);
    const sameAddr = await cli('port', 'add', 'dup2', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(sameAddr.code, 1);
    assert.match(sameAddr.stderr, /dup\.sock/);
    assert.equal((await cli('port', 'delete', 'dup1')).code, 0);
  });

  test('adds a port of each kind, lists and shows them, prints their QEMU arguments, and deletes them', async () => {
    const vmSock = join(d.dir, 'vm-s.sock');
    const [udpLocal, udpRemote] = await freeUdpPorts(2);
    const adds: string[][] = [
      ['ks', '--kind', 'stream', '--network', 'lab', '--listen', `unix:${vmSock}`, '--mac', '52:54:00:aa:00:01'],
      ['kt', '--kind', 'socket', '--network', 'lab', '--connect', 'tcp:127.0.0.1:9', '--max-macs', '4'],
      [
        'kd',
        '--kind',
        'dgram',
        '--network',
        'lab',
        '--local',
        `udp:127.0.0.1:${udpLocal}`,
        '--remote',
        `udp:127.0.0.1:${udpRemote}`,
        '--allowed-mac',
        '52:54:00:aa:00:03',
        '--storm',
        '100/10',
        '--queue-len',
        '64',
      ],
    ];
    for (const a of adds) {
      const r = await cli('port', 'add', ...a);
      assert.equal(r.code, 0, `${a.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`"${a[0]}"`));
    }

    // Read-only commands are independent: run them side by side.
    const [listJson, table, show, showJsonRun, qs, qsJsonRun, qt, qd, qGhost] = await Promise.all([
      cli('port', 'list', '--json'),
      cli('port', 'list'),
      cli('port', 'show', 'kd'),
      cli('port', 'show', 'kd', '--json'),
      cli('qemu-args', 'ks'),
      cli('qemu-args', 'ks', '--json', '--id', 'net0'),
      cli('qemu-args', 'kt'),
      cli('qemu-args', 'kd'),
      cli('qemu-args', 'ghost'),
    ]);
    const list = JSON.parse(listJson.stdout);
    const byName = new Map(list.ports.map((p: { name: string }) => [p.name, p]));
    assert.equal((byName.get('ks') as { kind: string }).kind, 'stream');
    assert.equal((byName.get('kt') as { kind: string }).kind, 'socket');
    const kd = byName.get('kd') as { kind: string; spec: Record<string, unknown>; network: string };
    assert.equal(kd.kind, 'dgram');
    assert.equal(kd.network, 'lab');
    assert.deepEqual(kd.spec['allowed_macs'], ['52:54:00:aa:00:03']);
    assert.deepEqual(kd.spec['storm'], { pps: 100, burst: 10 });

    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^NAME\s+KIND\s+NETWORK\s+STATE\s+RX\s+TX\s+DROPS\s+MACS$/);
    assert.match(lines.find((l) => l.startsWith('ks ')) ?? '', /^ks\s+stream\s+lab\s+listening\s+0\s+0\s+0\s+0$/);

    assert.equal(show.code, 0, show.stderr);
    for (const reason of ['runt', 'mtu', 'mac_locked', 'mac_limit', 'storm', 'queue_full', 'down', 'malformed']) {
      assert.match(show.stdout, new RegExp(`^ {2}${reason}\\s+0$`, 'm'), reason);
    }
    assert.match(show.stdout, new RegExp(`${udpLocal}`), 'transport details name the local address');
    const showJson = JSON.parse(showJsonRun.stdout);
    assert.equal(showJson.port.name, 'kd');
    assert.equal(showJson.port.counters.drops.mac_locked, 0);

    assert.equal(qs.code, 0, qs.stderr);
    assert.match(qs.stdout, /-netdev\s+'?stream,/);
    assert.ok(qs.stdout.includes(vmSock), qs.stdout);
    assert.ok(qs.stdout.includes('52:54:00:aa:00:01'), qs.stdout);
    assert.equal(qs.stdout.trimEnd().split('\n').length, 1, 'one line');
    const qsJson = JSON.parse(qsJsonRun.stdout);
    assert.equal(qsJson.mac, '52:54:00:aa:00:01');
    assert.ok(Array.isArray(qsJson.args));
    assert.ok(
      qsJson.args.some((a: string) => a.includes('id=net0')),
      JSON.stringify(qsJson.args),
    );
    assert.equal(typeof qsJson.command, 'string');

    assert.equal(qt.code, 0, qt.stderr);
    assert.match(qt.stdout, /socket,/);
    assert.match(qt.stdout, /listen=127\.0\.0\.1:9/);

    assert.equal(qd.code, 0, qd.stderr);
    assert.match(qd.stdout, /dgram|socket,udp=/);
    assert.ok(qd.stdout.includes(String(udpLocal)) && qd.stdout.includes(String(udpRemote)), qd.stdout);
    assert.ok(qd.stdout.includes('52:54:00:aa:00:03'), 'the MAC defaults to the first allowed MAC');

    assert.equal(qGhost.code, 1);

    for (const r of await Promise.all(['ks', 'kt', 'kd'].map((n) => cli('port', 'delete', n)))) {
      assert.equal(r.code, 0, r.stderr);
    }
    const after = JSON.parse((await cli('port', 'list', '--json')).stdout);
    assert.deepEqual(
      after.ports.map((p: { name: string }) => p.name).filter((n: string) => ['ks', 'kt', 'kd'].includes(n)),
      [],
    );
  });

  test('adds tap and vde ports, shows their transport, and deletes them (the TAP interface goes away)', async () => {
    const ifname = `vlcli${process.pid % 100000}`;
    const vdeDir = join(d.dir, 'vde1');
    const [tap, vde] = await Promise.all([
      cli('port', 'add', 'kt1', '--kind', 'tap', '--network', 'lab', '--ifname', ifname),
      cli('port', 'add', 'kv1', '--kind', 'vde', '--network', 'lab', '--dir', vdeDir),
    ]);
    assert.equal(tap.code, 0, tap.stderr);
    assert.match(tap.stdout, new RegExp(`port "kt1" added \\(tap, .*ifname ${ifname}\\)`));
    assert.equal(vde.code, 0, vde.stderr);
    assert.ok(vde.stdout.includes(`dir ${vdeDir}`), vde.stdout);
    const [link, show, list] = await Promise.all([
      runTool('ip', ['-o', 'link', 'show', 'dev', ifname]),
      cli('port', 'show', 'kt1'),
      cli('port', 'list'),
    ]);
    assert.equal(link.code, 0, `the TAP ${ifname} exists: ${link.stderr}`);
    assert.match(show.stdout, new RegExp(`^ {2}ifname\\s+${ifname}$`, 'm'));
    assert.match(list.stdout, /^kt1\s+tap\s+lab\s+/m);
    assert.match(list.stdout, /^kv1\s+vde\s+lab\s+/m);
    for (const r of await Promise.all(['kt1', 'kv1'].map((n) => cli('port', 'delete', n)))) {
      assert.equal(r.code, 0, r.stderr);
    }
    assert.notEqual((await runTool('ip', ['-o', 'link', 'show', 'dev', ifname])).code, 0, 'the TAP is gone');
  });

  test('lists a trunk port with its VLAN map and native network', async () => {
    assert.equal((await cli('network', 'create', 'dmz', '--vni', '300')).code, 0);
    const r = await cli(
      'port',
      'add',
      'tr1',
      '--kind',
      'stream',
      '--trunk',
      '10=lab,20=dmz',
      '--native',
      'lab',
      '--connect',
      `unix:${join(d.dir, 'nobody.sock')}`,
    );
    assert.equal(r.code, 0, r.stderr);
    const table = await cli('port', 'list');
    assert.match(table.stdout, /^tr1\s+stream\s+10=lab,20=dmz native=lab\s+/m);
    const p = JSON.parse((await cli('port', 'show', 'tr1', '--json')).stdout).port;
    assert.deepEqual(p.trunk, { vlans: { '10': 'lab', '20': 'dmz' }, native: 'lab' });
    assert.equal((await cli('port', 'delete', 'tr1')).code, 0);
    assert.equal((await cli('network', 'delete', 'dmz')).code, 0);
  });

  test('shows MACs learned from frames sent through stream ports in fdb show', async () => {
    const [pa, pb] = [join(d.dir, 'fa.sock'), join(d.dir, 'fb.sock')];
    assert.equal((await cli('network', 'create', 'fdbnet', '--vni', '400')).code, 0);
    for (const [n, p] of [
      ['fa', pa],
      ['fb', pb],
    ] as const) {
      const r = await cli('port', 'add', n, '--kind', 'stream', '--network', 'fdbnet', '--listen', `unix:${p}`);
      assert.equal(r.code, 0, r.stderr);
    }
    const a = await StreamPeer.connect(pa);
    const b = await StreamPeer.connect(pb);
    try {
      await a.sendUntilReceived(broadcastFrame('525400bb0001'), b);
      assert.deepEqual(b.frames[0], broadcastFrame('525400bb0001'), 'b receives the broadcast unchanged');

      const json = await cli('fdb', 'show', '--network', 'fdbnet', '--json');
      assert.equal(json.code, 0, json.stderr);
      const entries = JSON.parse(json.stdout).entries;
      assert.deepEqual(
        entries.map((e: { network: string; mac: string; port: string }) => [e.network, e.mac, e.port]),
        [['fdbnet', '52:54:00:bb:00:01', 'fa']],
      );

      const table = await cli('fdb', 'show');
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^NETWORK\s+MAC\s+PORT\s+AGE$/m);
      assert.match(table.stdout, /^fdbnet\s+52:54:00:bb:00:01\s+fa\s+\d+s$/m);

      const other = JSON.parse((await cli('fdb', 'show', '--network', 'lab', '--json')).stdout);
      assert.ok(!other.entries.some((e: { mac: string }) => e.mac === '52:54:00:bb:00:01'), 'networks are isolated');

      const list = JSON.parse((await cli('port', 'show', 'fa', '--json')).stdout).port;
      assert.equal(list.state, 'up');
      assert.ok(list.counters.rx_frames >= 1);
      assert.equal(list.macs, 1);
    } finally {
      a.close();
      b.close();
      await cli('port', 'delete', 'fa');
      await cli('port', 'delete', 'fb');
      await cli('network', 'delete', 'fdbnet');
    }
  });

  describe('capture', () => {
    const [pa, pb] = [() => join(d.dir, 'ca.sock'), () => join(d.dir, 'cb.sock')];
    let a: StreamPeer;
    let b: StreamPeer;
    let timer: NodeJS.Timeout | undefined;

    before(async () => {
      assert.equal((await cli('network', 'create', 'capnet', '--vni', '500')).code, 0);
      for (const [n, p] of [
        ['ca', pa()],
        ['cb', pb()],
      ] as const) {
        const r = await cli('port', 'add', n, '--kind', 'stream', '--network', 'capnet', '--listen', `unix:${p}`);
        assert.equal(r.code, 0, r.stderr);
      }
      a = await StreamPeer.connect(pa());
      b = await StreamPeer.connect(pb());
      await a.sendUntilReceived(broadcastFrame('525400cc0001'), b);
      await b.sendUntilReceived(broadcastFrame('525400cc0002'), a);
      // Traffic in both directions of port cb for as long as the captures run.
      let n = 0;
      timer = setInterval(() => {
        if (n++ % 2) a.send(broadcastFrame('525400cc0001'));
        else b.send(broadcastFrame('525400cc0002'));
      }, 10);
    });

    after(async () => {
      clearInterval(timer);
      a?.close();
      b?.close();
      await cli('port', 'delete', 'ca');
      await cli('port', 'delete', 'cb');
      await cli('network', 'delete', 'capnet');
    });

    test('capture -c N writes a pcap of N frames of both directions that tshark reads', async () => {
      const file = join(d.dir, 'six.pcap');
      const r = await cli('capture', 'cb', '-w', file, '-c', '6');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /6 frames/);
      const macs = await tsharkSources(file);
      assert.equal(macs.length, 6);
      assert.ok(macs.includes('52:54:00:cc:00:01'), `rx side missing: ${macs}`);
      assert.ok(macs.includes('52:54:00:cc:00:02'), `tx side missing: ${macs}`);
    });

    test('capture -w - streams the pcap to stdout', async () => {
      const r = await new Promise<Buffer>((resolve, reject) => {
        execFile(
          process.execPath,
          [BIN, '--control', d.control, 'capture', 'ca', '-w', '-', '-c', '3'],
          { encoding: 'buffer', timeout: 30_000 },
          (err, stdout) => (err ? reject(err) : resolve(stdout)),
        );
      });
      assert.equal(r.readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
      const file = join(d.dir, 'stdout.pcap');
      await writeFile(file, r);
      assert.equal((await tsharkSources(file)).length, 3);
    });

    test('capture stops on SIGINT and SIGTERM and leaves a valid pcap', async () => {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) {
        const file = join(d.dir, `${sig}.pcap`);
        const child = spawn(process.execPath, [BIN, '--control', d.control, 'capture', 'cb', '-w', file], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr?.setEncoding('utf8').on('data', (s: string) => {
          stderr += s;
        });
        const exited = once(child, 'exit');
        // Wait (by watching the directory) until some records were written.
        const w = watch(d.dir);
        try {
          for (;;) {
            const size = await stat(file).then(
              (s) => s.size,
              () => 0,
            );
            if (size > 24 + 16 * 3) break;
            await Promise.race([once(w, 'change'), exited]);
            assert.equal(child.exitCode, null, `capture exited early: ${stderr}`);
          }
        } finally {
          w.close();
        }
        child.kill(sig);
        const [code] = await exited;
        assert.equal(code, 0, stderr);
        const macs = await tsharkSources(file);
        assert.ok(macs.length >= 1, 'the pcap has whole records');
        assert.match(stderr, new RegExp(`${macs.length} frames`));
      }
    });

    test('capture of an unknown port fails with exit 1 and leaves no file', async () => {
      const file = join(d.dir, 'none.pcap');
      const r = await cli('capture', 'ghost', '-w', file);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /ghost/);
      assert.equal(existsSync(file), false);
    });
  });
});

describe('vmlink without a daemon', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-cli-nod-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('prints help with exit 0, and exits 2 when no command is given', async () => {
    const [help, sub, none] = await Promise.all([run(['--help']), run(['help', 'port']), run([])]);
    assert.equal(help.code, 0);
    for (const c of ['daemon', 'status', 'network', 'port', 'fdb', 'qemu-args', 'capture', 'export', 'disk-args']) {
      assert.match(help.stdout, new RegExp(`^ {2}${c}\\b`, 'm'), c);
    }
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /add \[options\] <name>/);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage: vmlink/);
  });

  test('reports an unreachable daemon (no socket file) with exit 1 and how to start it', async () => {
    const sock = join(dir, 'missing.sock');
    const r = await run(['--control', sock, 'network', 'list']);
    assert.equal(r.code, 1);
    assert.ok(
      r.stderr.includes(
        `cannot reach the vmlink daemon at ${sock} (ENOENT): is it running? start it with: vmlink daemon --config FILE`,
      ),
      r.stderr,
    );
  });

  test('reports a socket path nobody listens on as ECONNREFUSED with exit 1', async () => {
    const sock = join(dir, 'stale.sock');
    await writeFile(sock, '');
    const r = await run(['--control', sock, 'status']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the vmlink daemon at .*stale\.sock \(ECONNREFUSED\)/);
  });

  test('daemon --config with an invalid file exits 2 and names each bad field', async () => {
    const config = join(dir, 'bad.yaml');
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad.sock')}, state_dir: ${join(dir, 'state')} }`,
        'networks:',
        '  - { name: lab, vni: 0 }',
        'ports:',
        '  - { name: p1, network: lab, kind: stream, listen: "tcp:nohost" }',
        '',
      ].join('\n'),
    );
    const r = await run(['daemon', '--config', config]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /networks\[0\]\.vni/);
    assert.match(r.stderr, /ports\[0\]\.listen/);
    assert.equal(existsSync(join(dir, 'bad.sock')), false);
  });

  test('daemon --config with bad storage and exports sections exits 2 and names each bad field', async () => {
    const config = join(dir, 'bad-storage.yaml');
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad2.sock')}, state_dir: ${join(dir, 'state2')} }`,
        'storage: { listen: ["udp:127.0.0.1:1"], max_in_flight_per_client: 0 }',
        'exports:',
        '  - { name: d1, backend: { type: file, path: rel.img, size: 1X } }',
        '  - { name: d1, backend: { type: memory, size: 1M }, read_only: yes, allowed_clients: [nowhere] }',
        '  - { name: c, backend: { type: cow, base: { type: remote }, overlay: { type: memory, size: 1M } } }',
        '',
      ].join('\n'),
    );
    const r = await run(['daemon', '--config', config]);
    assert.equal(r.code, 2, r.stderr);
    for (const field of [
      'storage.listen[0]',
      'storage.max_in_flight_per_client',
      'exports[0].backend.path',
      'exports[0].backend.size',
      'exports[1].read_only',
      'exports[1].allowed_clients[0]',
      'exports[2].backend.base.address',
    ]) {
      assert.ok(r.stderr.includes(`  ${field}: `), `${field} in:\n${r.stderr}`);
    }
    assert.match(r.stderr, /"1X" is not a size/);
    assert.match(r.stderr, /max_in_flight_per_client must be a whole number 1-4096/);
    assert.equal(existsSync(join(dir, 'bad2.sock')), false);
    // Cross-entry checks run once every entry is valid on its own.
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad2.sock')}, state_dir: ${join(dir, 'state2')} }`,
        'exports:',
        '  - { name: d1, backend: { type: memory, size: 1M } }',
        '  - { name: d1, backend: { type: memory, size: 2M } }',
        '',
      ].join('\n'),
    );
    const dup = await run(['daemon', '--config', config]);
    assert.equal(dup.code, 2, dup.stderr);
    assert.match(dup.stderr, /exports\[1\]\.name: duplicate export name "d1"/);
  });

  test('daemon with a config file that does not exist exits 2 and names the file', async () => {
    const r = await run(['daemon', '--config', join(dir, 'nope.yaml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /nope\.yaml/);
  });

  test('daemon --log-level with an unknown level exits 2', async () => {
    const r = await run(['daemon', '--config', join(dir, 'x.yaml'), '--log-level', 'loud']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--log-level "loud"/);
  });

  test('a SIGTERM stops the daemon with exit 0 and removes its control socket', async () => {
    const d = await startDaemon();
    try {
      const ok = await run(['--control', d.control, 'status']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(await stopDaemon(d), 0, d.stderr());
      assert.equal(existsSync(d.control), false);
    } finally {
      await stopDaemon(d);
      await rm(d.dir, { recursive: true, force: true });
    }
  });
});
