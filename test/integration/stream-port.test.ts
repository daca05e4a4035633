/**
 * Stream-port behaviour beyond the shared compliance suite: socket-file
 * handling, address errors, dialling before the peer exists, truncated frames.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { createPort } from '../../src/daemon/port-registry.js';
import { silentLogger } from '../../src/log.js';
import { MAX_FRAME_LEN, type Port, type PortState } from '../../src/net/port.js';
import { StreamPeer } from '../helpers/port-peers.js';

const T = { timeout: 30_000 };

interface Made {
  port: Port;
  frames: Buffer[];
  malformed: string[];
  states: [PortState, string][];
  /** Resolves at the next state report equal to `s`. */
  next(s: PortState): Promise<string>;
}

describe('stream port', () => {
  let dir = '';
  const cleanups: (() => unknown)[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-stream-'));
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await rm(dir, { recursive: true, force: true });
  });

  function make(o: Record<string, unknown>): Made {
    const spec: PortConfig = portSchema.parse({ name: 'p', network: 'n', kind: 'stream', ...o });
    const frames: Buffer[] = [];
    const malformed: string[] = [];
    const states: [PortState, string][] = [];
    const waiters: [PortState, (r: string) => void][] = [];
    const port = createPort(spec, {
      sink: (b, off, len) => frames.push(Buffer.from(b.subarray(off, off + len))),
      logger: silentLogger(),
      maxFrameLen: MAX_FRAME_LEN,
      queueLen: 64,
      onMalformed: (r) => malformed.push(r),
      onState: (s, r) => {
        states.push([s, r]);
        for (let i = 0; i < waiters.length; i++) {
          const [want, resolve] = waiters[i] as [PortState, (r: string) => void];
          if (want === s) {
            waiters.splice(i--, 1);
            resolve(r);
          }
        }
      },
    });
    cleanups.push(() => port.destroy());
    return { port, frames, malformed, states, next: (s) => new Promise((r) => waiters.push([s, r])) };
  }

  async function listenOn(path: string): Promise<Server> {
    const socks = new Set<import('node:net').Socket>();
    const s = createServer((sock) => {
      socks.add(sock);
      sock.on('error', () => {});
    });
    s.listen(path);
    await once(s, 'listening');
    cleanups.push(() => {
      for (const sock of socks) sock.destroy();
      return new Promise((r) => s.close(r));
    });
    return s;
  }

  test('creates a missing parent directory and removes its socket file on close', T, async () => {
    const path = join(dir, 'a', 'b', 'p.sock');
    const m = make({ listen: `unix:${path}` });
    await m.port.open();
    assert.equal(m.port.state, 'listening');
    assert.ok(existsSync(path));
    await m.port.close();
    assert.equal(existsSync(path), false);
  });

  test('replaces a stale socket file that nobody answers on', T, async () => {
    const path = join(dir, 'stale.sock');
    // Leave a socket file behind with no listener: listen, move the file away and back after closing.
    const s = createServer();
    s.listen(join(dir, 'tmp.sock'));
    await once(s, 'listening');
    await rename(join(dir, 'tmp.sock'), path);
    await new Promise((r) => s.close(r));
    assert.ok(existsSync(path));
    const m = make({ listen: `unix:${path}` });
    await m.port.open();
    const up = m.next('up');
    const sock = connect(path);
    await up;
    sock.destroy();
  });

  test('refuses a socket somebody listens on, and a file that is not a socket, with ERR_PORT_ADDRESS', T, async () => {
    const live = join(dir, 'live.sock');
    await listenOn(live);
    await assert.rejects(make({ listen: `unix:${live}` }).port.open(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PORT_ADDRESS');
      assert.match(err.message, /another process is listening/);
      assert.ok(err.message.includes(live));
      return true;
    });
    assert.ok(existsSync(live), 'the live socket was removed');
    const file = join(dir, 'file.sock');
    await writeFile(file, 'not a socket');
    await assert.rejects(make({ listen: `unix:${file}` }).port.open(), { code: 'ERR_PORT_ADDRESS' });
  });

  test('refuses a TCP address in use with ERR_PORT_ADDRESS, and opens once it is free', T, async () => {
    const s = createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    cleanups.push(() => new Promise((r) => s.close(r)));
    const busy = (s.address() as { port: number }).port;
    const m = make({ listen: `tcp:127.0.0.1:${busy}` });
    await assert.rejects(m.port.open(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PORT_ADDRESS');
      assert.match(err.message, /already in use/);
      return true;
    });
    // Once the address is free, the same port object opens.
    await new Promise((r) => s.close(r));
    await m.port.open();
    assert.equal(m.port.state, 'listening');
  });

  test(
    'in connect mode, open() resolves at once with nobody listening, and the port comes up when the peer appears',
    T,
    async () => {
      const path = join(dir, 'later.sock');
      const m = make({ connect: `unix:${path}`, reconnect: { min_ms: 10, max_ms: 40 } });
      await m.port.open();
      assert.equal(m.port.state, 'connecting');
      // Let at least one dial fail before the peer exists.
      await m.next('connecting');
      const up = m.next('up');
      const server = await listenOn(path);
      const [sock] = (await once(server, 'connection')) as [import('node:net').Socket];
      await up;
      const peer = new StreamPeer(sock);
      const f = Buffer.from('ffffffffffff52540000000188b5cafe', 'hex');
      peer.send(f);
      assert.equal(m.port.write(f, 0, f.length), 0);
      assert.deepEqual(await peer.next(), f);
      assert.equal(m.port.describe()['mode'], 'connect');
      assert.ok(m.states.some(([s, r]) => s === 'connecting' && /re-dialling in \d+ ms/.test(r)));
    },
  );

  test('close() stops a connect-mode port from dialling', T, async () => {
    const path = join(dir, 'never.sock');
    const m = make({ connect: `unix:${path}`, reconnect: { min_ms: 10, max_ms: 20 } });
    await m.port.open();
    await m.next('connecting');
    await m.port.close();
    assert.equal(m.port.state, 'closed');
    const server = await listenOn(path);
    let accepted = 0;
    server.on('connection', () => accepted++);
    // A probe connection of our own: if the port still dialled, its connection would likely come first.
    const probe = connect(path);
    await once(server, 'connection');
    probe.destroy();
    assert.equal(accepted, 1);
  });

  test('a frame cut short by the peer closing is reported as malformed and the port listens again', T, async () => {
    const path = join(dir, 'trunc.sock');
    const m = make({ listen: `unix:${path}` });
    await m.port.open();
    const up = m.next('up');
    const sock = connect(path);
    await once(sock, 'connect');
    await up;
    const listening = m.next('listening');
    sock.end(Buffer.from('0000003c525400000002', 'hex'));
    await listening;
    assert.equal(m.malformed.length, 1);
    assert.match(m.malformed[0] as string, /truncated frame: connection ended after 6 of 60 bytes/);
    assert.deepEqual(m.frames, []);
    const upAgain = m.next('up');
    const again = connect(path);
    await upAgain;
    again.destroy();
  });

  test('describe() reports mode, addresses, peer and counts', T, async () => {
    const m = make({ listen: 'tcp:127.0.0.1:0' });
    await m.port.open();
    const d = m.port.describe();
    assert.equal(d['mode'], 'listen');
    assert.equal(d['address'], 'tcp:127.0.0.1:0');
    assert.match(String(d['local']), /^tcp:127\.0\.0\.1:\d+$/);
    const port = Number(String(d['local']).split(':').pop());
    const up = m.next('up');
    const sock = connect(port, '127.0.0.1');
    await once(sock, 'connect');
    await up;
    const d2 = m.port.describe();
    assert.equal(d2['peer'], `tcp:127.0.0.1:${sock.localPort}`);
    assert.equal(d2['connections'], 1);
    assert.equal(d2['queued'], 0);
    sock.destroy();
  });
});
