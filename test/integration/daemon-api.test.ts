/**
 * The daemon and its control API over a real unix socket, with real stream
 * ports driven by raw `net` sockets (QEMU's framing: 4-byte big-endian length,
 * then the frame), the real client, and tshark reading a capture.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { ApiError, ControlClient } from '../../src/api/client.js';
import { validateConfig } from '../../src/config/load.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { hasCode } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';

const root = await mkdtemp(join(tmpdir(), 'vmlink-api-'));
after(() => rm(root, { recursive: true, force: true }));
const runModule = new URL('../../src/daemon/run.js', import.meta.url).pathname;

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';
/** Broadcast from A (ARP EtherType, 28 bytes of payload). */
const BCAST_FROM_A = hex(`ffffffffffff 02000000000a 0806 ${'00'.repeat(28)}`);
/** Unicast from B to A. */
const B_TO_A = hex(`02000000000a 02000000000b 0800 4500001c00000000401100000a0000020a000001 ${'ab'.repeat(8)}`);
/** Unicast from A to B. */
const A_TO_B = hex(`02000000000b 02000000000a 0800 4500001c00000000401100000a0000010a000002 ${'cd'.repeat(8)}`);

/** A logger whose lines the test can wait for (instead of sleeping). */
function recordingLogger(): {
  logger: Logger;
  lines: Record<string, unknown>[];
  waitFor: (p: (l: Record<string, unknown>) => boolean, since?: number) => Promise<Record<string, unknown>>;
} {
  const lines: Record<string, unknown>[] = [];
  const ev = new EventEmitter();
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const text of chunk.toString().split('\n')) {
        if (!text) continue;
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        ev.emit('line', line);
      }
      cb();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  /** Resolves with the first line matching `p` from index `since` on (default: every line so far). */
  const waitFor = (p: (l: Record<string, unknown>) => boolean, since = 0): Promise<Record<string, unknown>> => {
    const seen = lines.slice(since).find(p);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const on = (l: Record<string, unknown>): void => {
        if (!p(l)) return;
        ev.off('line', on);
        resolve(l);
      };
      ev.on('line', on);
    });
  };
  return { logger, lines, waitFor };
}

/** Reads length-prefixed frames from a socket. */
class FrameReader {
  #buf = Buffer.alloc(0);
  #waiters: ((f: Buffer) => void)[] = [];
  #frames: Buffer[] = [];
  constructor(sock: Socket) {
    sock.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 4 && this.#buf.length >= 4 + this.#buf.readUInt32BE(0)) {
        const len = this.#buf.readUInt32BE(0);
        const f = this.#buf.subarray(4, 4 + len);
        this.#buf = this.#buf.subarray(4 + len);
        const w = this.#waiters.shift();
        if (w) w(f);
        else this.#frames.push(f);
      }
    });
  }
  next(): Promise<Buffer> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

const framed = (f: Buffer): Buffer => {
  const b = Buffer.alloc(4 + f.length);
  b.writeUInt32BE(f.length, 0);
  f.copy(b, 4);
  return b;
};

interface Running {
  daemon: Daemon;
  client: ControlClient;
  log: ReturnType<typeof recordingLogger>;
  dir: string;
  control: string;
}

let seq = 0;
function hostConfig(dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { host: { id: 'h1', control: join(dir, 'run', 'vmlink.sock'), state_dir: join(dir, 'state') }, ...extra };
}

async function startDaemon(doc: Record<string, unknown>, dir: string): Promise<Running> {
  const config = validateConfig(doc);
  const log = recordingLogger();
  const daemon = new Daemon({ config, configPath: join(dir, 'vmlink.yaml'), logger: log.logger });
  await daemon.start();
  const control = config.host.control;
  return { daemon, client: new ControlClient({ socketPath: control }), log, dir, control };
}

async function stopDaemon(r: Running): Promise<void> {
  await r.client.close();
  await r.daemon.stop();
}

/** Expects `p` to fail with an ApiError of this status and code. */
async function refused(p: Promise<unknown>, status: number, code: string): Promise<ApiError> {
  let got: unknown;
  await assert.rejects(p, (err) => {
    got = err;
    return err instanceof ApiError && err.status === status && err.code === code;
  });
  return got as ApiError;
}

/** A raw HTTP request on the control socket: status and body text. */
function raw(
  control: string,
  method: string,
  path: string,
  body?: string,
  type = 'application/json',
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: control, method, path, headers: body === undefined ? {} : { 'content-type': type } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function dirFor(): string {
  return join(root, `d${seq++}`);
}

/** Two listening stream ports, a and b, on network lan. */
function twoPortConfig(dir: string): Record<string, unknown> {
  return hostConfig(dir, {
    networks: [{ name: 'lan', vni: 10 }],
    ports: [
      { name: 'a', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'a.sock')}` },
      { name: 'b', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'b.sock')}` },
    ],
  });
}

/** Connects a raw peer to a listening stream port and waits until the daemon reports it up. */
async function attach(r: Running, port: string): Promise<{ sock: Socket; reader: FrameReader }> {
  const mark = r.log.lines.length;
  const sock = connect(join(r.dir, `${port}.sock`));
  const reader = new FrameReader(sock);
  await once(sock, 'connect');
  await r.log.waitFor((l) => l['port'] === port && l['state'] === 'up', mark);
  return { sock, reader };
}

describe('daemon control API', () => {
  let r: Running;
  let busy: Server;
  let busyPort: number;
  /** performance.now() just before the daemon was started and just after it was ready (it runs in this process). */
  let startWindow: [number, number];

  before(async () => {
    const dir = dirFor();
    const beforeStart = performance.now();
    r = await startDaemon(
      hostConfig(dir, {
        networks: [{ name: 'lan', vni: 10 }],
        ports: [{ name: 'cfg', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'cfg.sock')}` }],
      }),
      dir,
    );
    startWindow = [beforeStart, performance.now()];
    busy = createServer();
    busy.listen(0, '127.0.0.1');
    await once(busy, 'listening');
    busyPort = (busy.address() as { port: number }).port;
  });
  after(async () => {
    await stopDaemon(r);
    busy.close();
  });

  test('serves the control socket with mode 0600', async () => {
    const st = await stat(r.control);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('reports host id, version, pid, control path, state dir and counts in the status', async () => {
    const asked = performance.now();
    const s = await r.client.status();
    const answered = performance.now();
    assert.equal(s.host.id, 'h1');
    assert.match(s.host.version, /^\d+\.\d+\.\d+/);
    assert.equal(s.host.pid, process.pid);
    assert.equal(s.host.control, r.control);
    assert.equal(s.host.state_dir, join(r.dir, 'state'));
    // Whole seconds since the daemon started: bounded by the start window and the request window.
    const [beforeStart, ready] = startWindow;
    assert.ok(Number.isInteger(s.host.uptime_s), `uptime_s ${s.host.uptime_s}`);
    assert.ok(s.host.uptime_s >= Math.floor((asked - ready) / 1000), `uptime_s ${s.host.uptime_s}`);
    assert.ok(s.host.uptime_s <= Math.floor((answered - beforeStart) / 1000), `uptime_s ${s.host.uptime_s}`);
    assert.equal(s.networks, 1);
    assert.deepEqual(s.ports, { total: 1, up: 0 });
  });

  test('creates, lists and deletes a network through the API, and refuses the documented conflicts', async () => {
    const created = await r.client.createNetwork({ name: 'dmz', vni: 20 });
    assert.deepEqual(created, { name: 'dmz', vni: 20, mtu: 1500, ports: [], macs: 0, source: 'api' });
    const list = await r.client.listNetworks();
    assert.deepEqual(
      list.map((n) => [n.name, n.source]),
      [
        ['lan', 'config'],
        ['dmz', 'api'],
      ],
    );
    await refused(r.client.createNetwork({ name: 'dmz', vni: 21 }), 409, 'ERR_NETWORK_EXISTS');
    await refused(r.client.createNetwork({ name: 'other', vni: 20 }), 409, 'ERR_VNI_IN_USE');
    const declared = await refused(r.client.createNetwork({ name: 'lan', vni: 30 }), 409, 'ERR_DECLARED_IN_CONFIG');
    assert.match(declared.message, /edit the config file/);
    await refused(r.client.deleteNetwork('lan'), 409, 'ERR_DECLARED_IN_CONFIG');
    await refused(r.client.deleteNetwork('nope'), 404, 'ERR_NETWORK_NOT_FOUND');
    await r.client.deleteNetwork('dmz');
    assert.deepEqual(
      (await r.client.listNetworks()).map((n) => n.name),
      ['lan'],
    );
  });

  test('answers an invalid network body with 400 ERR_CONFIG_INVALID listing each bad field', async () => {
    const err = await refused(
      r.client.createNetwork({ name: '-bad', vni: 0, colour: 'red' } as never),
      400,
      'ERR_CONFIG_INVALID',
    );
    const paths = err.problems.map((p) => p.path).sort();
    assert.deepEqual(paths, ['', 'name', 'vni']);
    assert.match(err.problems.find((p) => p.path === '')?.message ?? '', /"colour"/);
  });

  test('creates a stream port that listens, shows it, and deletes it', async () => {
    const path = join(r.dir, 'api1.sock');
    const p = await r.client.addPort({ name: 'api1', kind: 'stream', network: 'lan', listen: `unix:${path}` });
    assert.equal(p.source, 'api');
    assert.equal(p.state, 'listening');
    assert.equal(p.network, 'lan');
    assert.deepEqual(p.spec, { name: 'api1', kind: 'stream', network: 'lan', listen: `unix:${path}` });
    assert.equal(p.counters.rx_frames, 0);
    assert.equal(p.counters.drops.malformed, 0);
    assert.ok((await stat(path)).isSocket());
    assert.equal((await r.client.getPort('api1')).name, 'api1');
    assert.deepEqual(
      (await r.client.listPorts()).map((x) => [x.name, x.source]),
      [
        ['cfg', 'config'],
        ['api1', 'api'],
      ],
    );
    await refused(r.client.deleteNetwork('lan'), 409, 'ERR_DECLARED_IN_CONFIG');
    await refused(
      r.client.addPort({ name: 'api1', kind: 'stream', network: 'lan', listen: `unix:${path}x` }),
      409,
      'ERR_PORT_EXISTS',
    );
    await r.client.deletePort('api1');
    await refused(r.client.getPort('api1'), 404, 'ERR_PORT_NOT_FOUND');
    await assert.rejects(stat(path), { code: 'ENOENT' });
  });

  test('refuses a port whose network is missing, whose body is invalid, or that replaces a config port', async () => {
    const listen = `unix:${join(r.dir, 'x.sock')}`;
    await refused(
      r.client.addPort({ name: 'x', kind: 'stream', network: 'nope', listen }),
      404,
      'ERR_NETWORK_NOT_FOUND',
    );
    const bad = await refused(
      r.client.addPort({ name: 'x', kind: 'stream', network: 'lan' }),
      400,
      'ERR_CONFIG_INVALID',
    );
    assert.deepEqual(
      bad.problems.map((p) => p.path),
      ['listen'],
    );
    await refused(r.client.addPort({ name: 'x', kind: 'carrier-pigeon', network: 'lan' }), 400, 'ERR_CONFIG_INVALID');
    await refused(
      r.client.addPort({ name: 'cfg', kind: 'stream', network: 'lan', listen }),
      409,
      'ERR_DECLARED_IN_CONFIG',
    );
    await refused(r.client.deletePort('cfg'), 409, 'ERR_DECLARED_IN_CONFIG');
    await refused(r.client.deletePort('nope'), 404, 'ERR_PORT_NOT_FOUND');
    assert.deepEqual(
      (await r.client.listPorts()).map((x) => x.name),
      ['cfg'],
    );
  });

  test('refuses a port that cannot listen with 422 ERR_PORT_ADDRESS and persists nothing', async () => {
    const listen = `tcp:127.0.0.1:${busyPort}`;
    const err = await refused(
      r.client.addPort({ name: 'clash', kind: 'stream', network: 'lan', listen }),
      422,
      'ERR_PORT_ADDRESS',
    );
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${busyPort}`));
    await refused(r.client.getPort('clash'), 404, 'ERR_PORT_NOT_FOUND');
    const state = await readFile(join(r.dir, 'state', 'state.json'), 'utf8').catch(() => '{"ports":[]}');
    assert.doesNotMatch(state, /clash/);
  });

  test("refuses a port whose transport cannot open with 422 and the port kind's own code, naming the port once", async () => {
    const err = await refused(
      r.client.addPort({ name: 'ghost', kind: 'tap', network: 'lan', ifname: 'vlnosuchtap9', create: false }),
      422,
      'ERR_TAP_NOT_FOUND',
    );
    assert.equal(err.message.split('port "ghost"').length - 1, 1, err.message);
    assert.match(err.message, /"vlnosuchtap9" does not exist; create it first/);
    await refused(r.client.getPort('ghost'), 404, 'ERR_PORT_NOT_FOUND');
  });

  test('answers qemu-args with the arguments, the MAC and one shell-quoted command line', async () => {
    const q = await r.client.qemuArgs('cfg');
    assert.equal(q.args[0], '-netdev');
    assert.match(q.args[1] ?? '', /^stream,id=cfg,server=off,addr\.type=unix,/);
    assert.match(q.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.ok(q.args.some((a) => a.includes(`mac=${q.mac}`)));
    assert.equal(typeof q.command, 'string');
    assert.ok(q.command.startsWith('-netdev '));
    const withId = await r.client.qemuArgs('cfg', 'net0');
    assert.match(withId.args[1] ?? '', /^stream,id=net0,/);
    await refused(r.client.qemuArgs('cfg', '0bad id'), 400, 'ERR_BAD_REQUEST');
    await refused(r.client.qemuArgs('nope'), 404, 'ERR_PORT_NOT_FOUND');
  });

  test('gives qemu-args the port’s mac, else its first allowed MAC', async () => {
    const base = { kind: 'stream', network: 'lan' };
    await r.client.addPort({
      ...base,
      name: 'm1',
      listen: `unix:${join(r.dir, 'm1.sock')}`,
      allowed_macs: [MAC_B, MAC_A],
    });
    await r.client.addPort({
      ...base,
      name: 'm2',
      listen: `unix:${join(r.dir, 'm2.sock')}`,
      allowed_macs: [MAC_B],
      mac: MAC_A,
    });
    assert.equal((await r.client.qemuArgs('m1')).mac, MAC_B);
    assert.equal((await r.client.qemuArgs('m2')).mac, MAC_A);
    await r.client.deletePort('m1');
    await r.client.deletePort('m2');
  });

  test('answers unknown routes, bad JSON and bad query values with error bodies', async () => {
    const notFound = await raw(r.control, 'GET', '/v1/nothing');
    assert.equal(notFound.status, 404);
    assert.equal(JSON.parse(notFound.text).error.code, 'ERR_ROUTE_NOT_FOUND');
    const badJson = await raw(r.control, 'POST', '/v1/networks', '{"name":');
    assert.equal(badJson.status, 400);
    assert.equal(JSON.parse(badJson.text).error.code, 'ERR_BAD_REQUEST');
    const noBody = await raw(r.control, 'POST', '/v1/networks', 'null');
    assert.equal(noBody.status, 400);
    assert.equal(JSON.parse(noBody.text).error.code, 'ERR_CONFIG_INVALID');
    const twice = await raw(r.control, 'GET', '/v1/fdb?network=a&network=b');
    assert.equal(twice.status, 400);
    assert.equal(JSON.parse(twice.text).error.code, 'ERR_BAD_REQUEST');
    await refused(r.client.fdb('nope'), 404, 'ERR_NETWORK_NOT_FOUND');
    await refused(r.client.capture('nope'), 404, 'ERR_PORT_NOT_FOUND');
    await refused(r.client.capture('cfg', { count: 0 }), 400, 'ERR_BAD_REQUEST');
    // One log line per failed request, naming the code.
    assert.ok(r.log.lines.some((l) => l['code'] === 'ERR_ROUTE_NOT_FOUND' && l['status'] === 404));
  });
});

describe('daemon data path and capture', () => {
  let r: Running;
  before(async () => {
    const dir = dirFor();
    r = await startDaemon(twoPortConfig(dir), dir);
  });
  after(() => stopDaemon(r));

  test('forwards a frame from one stream port to the other and learns the source MAC', async () => {
    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    a.sock.write(framed(BCAST_FROM_A));
    assert.deepEqual(await b.reader.next(), BCAST_FROM_A);
    const fdb = await r.client.fdb('lan');
    assert.deepEqual(
      fdb.map((e) => [e.network, e.mac, e.port]),
      [['lan', MAC_A, 'a']],
    );
    b.sock.write(framed(B_TO_A));
    assert.deepEqual(await a.reader.next(), B_TO_A);
    const pa = await r.client.getPort('a');
    assert.equal(pa.state, 'up');
    assert.equal(pa.counters.rx_frames, 1);
    assert.equal(pa.counters.tx_frames, 1);
    assert.equal(pa.macs, 1);
    assert.deepEqual((await r.client.status()).ports, { total: 2, up: 2 });
    const mark = r.log.lines.length;
    a.sock.destroy();
    b.sock.destroy();
    await r.log.waitFor((l) => l['port'] === 'b' && l['state'] === 'listening', mark);
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
  });

  test('closes a peer that sends a bad length prefix, counts it, and keeps serving', async () => {
    const a = await attach(r, 'a');
    const mark = r.log.lines.length;
    a.sock.write(hex('7fffffff'));
    await once(a.sock, 'close');
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
    const pa = await r.client.getPort('a');
    assert.equal(pa.counters.drops.malformed, 1);
    assert.equal((await r.client.status()).host.id, 'h1');
  });

  test('streams both directions of a port as a pcap that ends after count frames and that tshark reads', async () => {
    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    const body = await r.client.capture('a', { count: 3 });
    const chunks: Buffer[] = [];
    let got = 0;
    const header = new Promise<void>((resolve) => {
      body.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= 24) resolve();
      });
    });
    const ended = once(body, 'end');
    await header;
    a.sock.write(framed(BCAST_FROM_A)); // rx on a
    assert.deepEqual(await b.reader.next(), BCAST_FROM_A);
    b.sock.write(framed(B_TO_A)); // tx on a
    assert.deepEqual(await a.reader.next(), B_TO_A);
    a.sock.write(framed(A_TO_B)); // rx on a
    assert.deepEqual(await b.reader.next(), A_TO_B);
    await ended;
    const pcap = Buffer.concat(chunks);
    assert.equal(
      pcap.subarray(0, 24).toString('hex'),
      'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + '00000400' + '01000000',
    );
    let at = 24;
    for (const f of [BCAST_FROM_A, B_TO_A, A_TO_B]) {
      assert.equal(pcap.readUInt32LE(at + 8), f.length, 'captured length');
      assert.equal(pcap.readUInt32LE(at + 12), f.length, 'original length');
      assert.deepEqual(pcap.subarray(at + 16, at + 16 + f.length), f);
      at += 16 + f.length;
    }
    assert.equal(at, pcap.length, 'exactly three records');

    const file = join(r.dir, 'a.pcap');
    await writeFile(file, pcap);
    const { stdout } = await promisify(execFile)('tshark', [
      '-r',
      file,
      '-T',
      'fields',
      '-e',
      'eth.src',
      '-e',
      'eth.dst',
    ]);
    assert.deepEqual(stdout.trim().split('\n'), [
      `${MAC_A}\tff:ff:ff:ff:ff:ff`,
      `${MAC_B}\t${MAC_A}`,
      `${MAC_A}\t${MAC_B}`,
    ]);
    const mark = r.log.lines.length;
    a.sock.destroy();
    b.sock.destroy();
    await r.log.waitFor((l) => l['port'] === 'b' && l['state'] === 'listening', mark);
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
  });

  test('removes the capture tap when the client goes away', async () => {
    const ac = new AbortController();
    const body = await r.client.capture('b', { signal: ac.signal });
    body.on('error', () => undefined);
    body.resume();
    ac.abort();
    const line = await r.log.waitFor((l) => l['msg'] === 'capture ended' && l['port'] === 'b');
    assert.equal(line['reason'], 'the client went away');
  });

  test('drops and counts capture records while the client does not read, instead of buffering them', async () => {
    await r.client.createNetwork({ name: 'jumbo', vni: 90, mtu: 9000 });
    const listen = `unix:${join(r.dir, 'j.sock')}`;
    await r.client.addPort({ name: 'j', kind: 'stream', network: 'jumbo', listen });
    const body = await r.client.capture('j');
    body.on('error', () => undefined);
    body.pause(); // the client stops reading: the daemon must not queue 18 MB for it
    const mark = r.log.lines.length;
    const sock = connect(join(r.dir, 'j.sock'));
    await once(sock, 'connect');
    const frame = Buffer.alloc(9014, 0x5a);
    BCAST_FROM_A.copy(frame, 0, 0, 14);
    const total = 2000;
    for (let i = 0; i < total; i++) sock.write(framed(frame));
    // Wait (by asking, not by sleeping) until the switch has seen every frame.
    while ((await r.client.getPort('j')).counters.rx_frames < total) await new Promise(setImmediate);
    body.destroy();
    const line = await r.log.waitFor((l) => String(l['msg']).startsWith('capture ended') && l['port'] === 'j', mark);
    assert.ok((line['dropped'] as number) > 0, 'some records were dropped');
    assert.equal((line['frames'] as number) + (line['dropped'] as number), total);
    sock.destroy();
    await r.client.deletePort('j');
    await r.client.deleteNetwork('jumbo');
  });

  test('ends a running capture when its port is deleted', async () => {
    await r.client.addPort({ name: 'tmp', kind: 'stream', network: 'lan', listen: `unix:${join(r.dir, 'tmp.sock')}` });
    const body = await r.client.capture('tmp');
    body.resume();
    const ended = once(body, 'end');
    await r.client.deletePort('tmp');
    await ended;
  });
});

describe('daemon life cycle', () => {
  test('brings networks and ports added through the API back after a restart, listening again', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    const path = join(dir, 'p.sock');
    let r = await startDaemon(doc, dir);
    await r.client.createNetwork({ name: 'net1', vni: 100, mtu: 9000 });
    await r.client.addPort({ name: 'p', kind: 'stream', network: 'net1', listen: `unix:${path}` });
    await stopDaemon(r);
    await assert.rejects(stat(r.control), { code: 'ENOENT' }, 'the control socket is removed on stop');

    r = await startDaemon(doc, dir);
    assert.deepEqual(await r.client.listNetworks(), [
      { name: 'net1', vni: 100, mtu: 9000, ports: ['p'], macs: 0, source: 'api' },
    ]);
    const p = await r.client.getPort('p');
    assert.equal(p.source, 'api');
    assert.equal(p.state, 'listening');
    const peer = connect(path);
    await once(peer, 'connect');
    await r.log.waitFor((l) => l['port'] === 'p' && l['state'] === 'up');
    peer.destroy();
    await r.client.deletePort('p');
    await r.client.deleteNetwork('net1');
    await stopDaemon(r);

    r = await startDaemon(doc, dir);
    assert.deepEqual(await r.client.listNetworks(), []);
    assert.deepEqual(await r.client.listPorts(), []);
    await stopDaemon(r);
  });

  test('shows a config port that cannot open as down with the reason, and keeps running', async () => {
    const busy = createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const port = (busy.address() as { port: number }).port;
    const dir = dirFor();
    const r = await startDaemon(
      hostConfig(dir, {
        networks: [{ name: 'lan', vni: 1 }],
        ports: [{ name: 'stuck', kind: 'stream', network: 'lan', listen: `tcp:127.0.0.1:${port}` }],
      }),
      dir,
    );
    try {
      const p = await r.client.getPort('stuck');
      assert.equal(p.state, 'down');
      assert.match((p as unknown as { reason: string }).reason, /cannot open/);
      assert.ok(r.log.lines.some((l) => l['level'] === 50 && String(l['msg']).includes('stuck')));
    } finally {
      await stopDaemon(r);
      busy.close();
    }
  });

  test('refuses to start while another daemon answers on the control socket, and replaces a stale one', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    const r = await startDaemon(doc, dir);
    const second = new Daemon({ config: validateConfig(doc), logger: recordingLogger().logger });
    await assert.rejects(second.start(), (err) => hasCode(err, 'ERR_CONTROL_IN_USE'));
    assert.equal((await r.client.status()).host.pid, process.pid, 'the first daemon still answers');
    await stopDaemon(r);

    // A process killed without cleanup leaves its socket file behind.
    const control = join(dir, 'run', 'vmlink.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(control)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await once(child, 'exit');
    assert.ok((await stat(control)).isSocket());
    const r2 = await startDaemon(doc, dir);
    assert.equal((await r2.client.status()).host.id, 'h1');
    await stopDaemon(r2);
  });

  test('skips stored items that no longer fit, logs why, and keeps them in the store', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir, { networks: [{ name: 'lan', vni: 1 }] });
    const stored = {
      version: 1,
      networks: [
        { name: 'lan', vni: 2 },
        { name: 'ok', vni: 3 },
      ],
      ports: [
        { name: 'orphan', kind: 'stream', network: 'gone', listen: `unix:${join(dir, 'o.sock')}` },
        { name: 'invalid', kind: 'stream', network: 'ok' },
      ],
    };
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'state.json'), JSON.stringify(stored));
    const r = await startDaemon(doc, dir);
    try {
      assert.deepEqual(
        (await r.client.listNetworks()).map((n) => [n.name, n.vni, n.source]),
        [
          ['lan', 1, 'config'],
          ['ok', 3, 'api'],
        ],
      );
      assert.deepEqual(await r.client.listPorts(), []);
      const errors = r.log.lines.filter((l) => l['level'] === 50).map((l) => String(l['msg']));
      assert.equal(errors.length, 3, errors.join('\n'));
      assert.match(errors[0] ?? '', /network "lan" from the state store was not restored: .*declared in the config/);
      assert.match(errors[1] ?? '', /port "orphan" .*network "gone" does not exist/);
      assert.match(errors[2] ?? '', /port "invalid" .*listen: give exactly one of listen or connect/s);
    } finally {
      await stopDaemon(r);
    }
    const after = JSON.parse(await readFile(join(dir, 'state', 'state.json'), 'utf8'));
    assert.deepEqual(after, stored);
  });

  test('refuses to start on a corrupt state file, naming the file', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    await stopDaemon(await startDaemon(doc, dir));
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'state.json'), 'not json');
    const d = new Daemon({ config: validateConfig(doc), logger: recordingLogger().logger });
    await assert.rejects(
      d.start(),
      (err: Error) => hasCode(err, 'ERR_STATE_CORRUPT') && err.message.includes('state.json'),
    );
    await assert.rejects(stat(join(dir, 'run', 'vmlink.sock')), { code: 'ENOENT' });
  });
});

describe('runDaemon', () => {
  /** Runs the daemon entry point in a child process. */
  function child(configPath: string): { proc: ReturnType<typeof spawn>; stderr: () => string } {
    const proc = spawn(process.execPath, [
      '-e',
      `import(${JSON.stringify(runModule)}).then((m) => m.runDaemon({ configPath: ${JSON.stringify(configPath)} })).then((c) => process.exit(c))`,
    ]);
    let err = '';
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (c: string) => {
      err += c;
    });
    return { proc, stderr: () => err };
  }

  test('exits 2 on an invalid config, naming every bad field', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      'host:\n  id: h1\n  aging_sec: 0\nnetworks:\n  - name: lan\n    vni: 99999999\nports:\n  - name: p\n    kind: stream\n    network: lan\n    listen: nowhere\n',
    );
    const c = child(file);
    const [code] = await once(c.proc, 'exit');
    assert.equal(code, 2);
    const text = c.stderr();
    assert.match(text, new RegExp(file));
    for (const field of ['host.aging_sec', 'networks[0].vni', 'ports[0].listen'])
      assert.ok(text.includes(field), `${field} in ${text}`);
  });

  test('exits 0 on SIGTERM after a graceful stop that removes the control socket', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const control = join(dir, 'run', 'vmlink.sock');
    const file = join(dir, 'ok.yaml');
    await writeFile(file, `host:\n  id: h9\n  control: ${control}\n  state_dir: ${join(dir, 'state')}\n`);
    const c = child(file);
    const exited = once(c.proc, 'exit');
    // The daemon logs one JSON line once it serves.
    await new Promise<void>((resolve) => {
      const on = (): void => {
        if (c.stderr().includes('vmlink daemon started')) {
          c.proc.stderr?.off('data', on);
          resolve();
        }
      };
      c.proc.stderr?.on('data', on);
    });
    const client = new ControlClient({ socketPath: control });
    assert.equal((await client.status()).host.id, 'h9');
    await client.close();
    c.proc.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0);
    await assert.rejects(stat(control), { code: 'ENOENT' });
    assert.match(c.stderr(), /vmlink daemon stopped/);
  });

  test('exits 1 at once on a second SIGTERM while the graceful stop waits for a peer', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const control = join(dir, 'run', 'vmlink.sock');
    const file = join(dir, 'slow.yaml');
    await writeFile(
      file,
      [
        'host:',
        '  id: h8',
        `  control: ${control}`,
        `  state_dir: ${join(dir, 'state')}`,
        'networks: [{ name: lan, vni: 1, mtu: 9000 }]',
        'ports:',
        `  - { name: a, kind: stream, network: lan, listen: "unix:${join(dir, 'a.sock')}" }`,
        `  - { name: b, kind: stream, network: lan, listen: "unix:${join(dir, 'b.sock')}" }`,
        '',
      ].join('\n'),
    );
    const c = child(file);
    const exited = once(c.proc, 'exit');
    const stderrHas = (text: string): Promise<void> =>
      new Promise((resolve) => {
        const on = (): void => {
          if (!c.stderr().includes(text)) return;
          c.proc.stderr?.off('data', on);
          resolve();
        };
        c.proc.stderr?.on('data', on);
        on();
      });
    await stderrHas('vmlink daemon started');
    // b's peer never reads: its egress queue fills, and close() waits to flush it.
    const b = connect(join(dir, 'b.sock'));
    await once(b, 'connect');
    b.pause();
    const a = connect(join(dir, 'a.sock'));
    await once(a, 'connect');
    const client = new ControlClient({ socketPath: control });
    while ((await client.getPort('b')).state !== 'up') await new Promise(setImmediate);
    const frame = Buffer.alloc(9014, 0x11);
    BCAST_FROM_A.copy(frame, 0, 0, 14);
    while ((await client.getPort('b')).counters.drops.queue_full === 0) {
      for (let i = 0; i < 200; i++) a.write(framed(frame));
      if (a.writableNeedDrain) await once(a, 'drain');
      else await new Promise(setImmediate);
    }
    await client.close();
    c.proc.kill('SIGTERM');
    await stderrHas('SIGTERM received: stopping');
    c.proc.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 1);
    assert.match(c.stderr(), /exiting at once/);
    a.destroy();
    b.destroy();
  });
});
