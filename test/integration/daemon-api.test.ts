/**
 * The daemon's control API over a real unix socket, the daemon in this
 * process (test/helpers/api-daemon.ts): networks, ports, qemu-args and the
 * error bodies of bad requests, through the real client and raw HTTP.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  hostConfig,
  MAC_A,
  MAC_B,
  type Running,
  raw,
  refused,
  startDaemon,
  stopDaemon,
  tempDirs,
} from '../helpers/api-daemon.js';

const dirFor = await tempDirs('vmlink-api-');

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
