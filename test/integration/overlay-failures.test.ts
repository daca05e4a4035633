/**
 * Links that cannot come up say why, and do not flap hot: a peer from
 * another CA, a peer that breaks the record limit, a peer that takes the
 * link and drops it at once, a peer that never sends its network list; and
 * the TLS listener tells a client that hung up from one that refused its
 * certificate. Real TCP/TLS sockets on loopback; the fake peers speak the
 * link protocol by hand.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { encodeControl, writeHeader } from '../../src/net/overlay/codec.js';
import { TcpTransport } from '../../src/net/overlay/tcp-transport.js';
import { type RigHost, recording, rigCa, rigHost, until } from '../helpers/overlay-rig.js';

const hello = (host: string) => encodeControl({ type: 'hello', proto: 'vmlink-link', version: 2, host });

/** A fake peer on loopback: `onConn` gets each connection. */
async function fakePeer(onConn: (s: Socket) => void): Promise<{ server: Server; port: number; conns: Set<Socket> }> {
  const conns = new Set<Socket>();
  const server = createServer((s) => {
    conns.add(s);
    s.on('error', () => undefined);
    s.on('close', () => conns.delete(s));
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, conns };
}

describe('a TLS peer from another CA', { timeout: 60_000 }, () => {
  let ca: Awaited<ReturnType<typeof rigCa>>;
  let other: Awaited<ReturnType<typeof rigCa>>;
  let b: RigHost;
  let m: RigHost | undefined;
  const log = recording();

  before(async () => {
    ca = await rigCa(['b']);
    other = await rigCa(['mallory']);
    b = await rigHost({ id: 'b', tls: ca.tls.b, networks: [{ name: 'lab', vni: 100 }], logger: log.logger });
  });

  after(async () => {
    await Promise.all([b?.stop(), m?.stop()]);
    await ca?.cleanup();
    await other?.cleanup();
  });

  test("is refused; the dialler's link list says the peer refused its certificate, and the listener logs the real address", async () => {
    // mallory trusts the fabric CA (so it accepts b) but its own certificate is from another CA.
    const tls = {
      ca: ca.tls.b?.ca as string,
      cert: other.tls.mallory?.cert as string,
      key: other.tls.mallory?.key as string,
    };
    m = await rigHost({ id: 'mallory', listen: false, tls, networks: [{ name: 'lab', vni: 100 }] });
    m.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port: b.port } }, 'api');
    await until('the refusal is shown', () => m?.overlay.view('b').last_error != null);
    const v = m.overlay.view('b');
    assert.equal(v.state, 'connecting');
    // TLS 1.3: the listener checks the dialler's certificate last, and closes without a word.
    assert.match(v.last_error as string, /before its hello: it may have refused this host's certificate/);
    assert.match(v.reason, /overlay\.tls\.ca.*re-dialling in \d+ ms/);
    assert.ok(v.last_error_at !== null && !Number.isNaN(Date.parse(v.last_error_at)));
    await until('listener logged it', () => log.lines.some((l) => /TLS handshake failed/.test(String(l['msg']))));
    const line = log.lines.find((l) => /TLS handshake failed/.test(String(l['msg']))) as Record<string, unknown>;
    assert.match(String(line['peer']), /^tls:127\.0\.0\.1:\d+$/);
    assert.doesNotMatch(String(line['msg']), /undefined/);
    await m.overlay.delete('b');
  });

  test('the dialler refuses a peer whose certificate is not from its own CA, and says so', async () => {
    const m2 = await rigHost({
      id: 'mallory',
      listen: false,
      tls: other.tls.mallory,
      networks: [{ name: 'lab', vni: 100 }],
    });
    try {
      m2.overlay.add({ name: 'b', connect: { host: '127.0.0.1', port: b.port } }, 'api');
      await until('the refusal is shown', () => m2.overlay.view('b').last_error != null);
      assert.match(
        m2.overlay.view('b').last_error as string,
        /this peer's certificate is not from your overlay\.tls\.ca.* \([A-Z_]+\)/,
      );
      for (const l of log.lines)
        if (/refused link peer/.test(String(l['msg']))) assert.doesNotMatch(String(l['msg']), /undefined/);
    } finally {
      await m2.stop();
    }
  });
});

describe('a peer that breaks the protocol or drops the link at once', { timeout: 60_000 }, () => {
  let a: RigHost;
  const peers: { server: Server; conns: Set<Socket> }[] = [];

  before(async () => {
    a = await rigHost({ id: 'a', listen: false, networks: [{ name: 'lab', vni: 100 }] });
  });

  after(async () => {
    await a?.stop();
    for (const p of peers) {
      for (const c of p.conns) c.destroy();
      p.server.close();
    }
  });

  test('a record over the control limit closes the link with a reason that says so', async () => {
    const peer = await fakePeer((s) => {
      const big = Buffer.alloc(8);
      writeHeader(big, 0, 107_322, 2, 0);
      s.write(Buffer.concat([hello('big'), big]));
    });
    peers.push(peer);
    a.overlay.add({ name: 'big', connect: { host: '127.0.0.1', port: peer.port } }, 'api');
    await until('the reason is shown', () => /exceeds the limit/.test(a.overlay.view('big').last_error ?? ''));
    assert.match(a.overlay.view('big').last_error as string, /record of 107322 bytes exceeds the limit for type 2/);
    assert.notEqual(a.overlay.view('big').state, 'up');
    await a.overlay.delete('big');
  });

  test('a frame for a VNI the link does not carry is an unknown_vni drop, not a received frame', async () => {
    const frame = Buffer.alloc(8 + 60, 0xab);
    writeHeader(frame, 0, 60, 1, 999);
    const peer = await fakePeer((s) => {
      s.write(
        Buffer.concat([
          hello('odd'),
          encodeControl({ type: 'networks', part: 0, last: true, networks: [{ vni: 100, name: 'lab' }] }),
        ]),
      );
      // After a's network list has come (a is up on our side too), a frame of a VNI a does not have.
      s.once('data', () => s.write(frame));
    });
    peers.push(peer);
    a.overlay.add({ name: 'odd', connect: { host: '127.0.0.1', port: peer.port } }, 'api');
    await until('the drop is counted', () => a.overlay.view('odd').drops.unknown_vni === 1);
    assert.equal(a.overlay.view('odd').rx_frames, 0);
    assert.equal(a.overlay.view('odd').rx_bytes, 0);
    assert.equal(a.overlay.view('odd').state, 'up');
    await a.overlay.delete('odd');
  });

  test('a peer that takes each connection and drops it is re-dialled ever more slowly (backoff), not at the minimum', async () => {
    // A valid hello and network list, then a bye: the channel comes up and goes at once, every time.
    const peer = await fakePeer((s) => {
      s.write(
        Buffer.concat([
          hello('flappy'),
          encodeControl({ type: 'networks', part: 0, last: true, networks: [{ vni: 100, name: 'lab' }] }),
          encodeControl({ type: 'bye', reason: 'going away' }),
        ]),
      );
      s.end();
    });
    peers.push(peer);
    a.overlay.add({ name: 'flappy', connect: { host: '127.0.0.1', port: peer.port } }, 'api');
    await until('five connections', () => a.overlay.view('flappy').connects >= 5, 30_000);
    // The rig's backoff is 50..400 ms with jitter in [d/2, d]: from the 4th failure on, d is 400,
    // so a re-dial delay of at least 200 ms. Were the backoff reset at each connect, it would stay under 50.
    await until('a re-dial delay is shown', () => /re-dialling in \d+ ms/.test(a.overlay.view('flappy').reason));
    const delay = Number(/re-dialling in (\d+) ms/.exec(a.overlay.view('flappy').reason)?.[1]);
    assert.ok(delay >= 200, `re-dial delay ${delay} ms after 5 flaps: the backoff was reset`);
    assert.match(a.overlay.view('flappy').last_error as string, /going away/);
    await a.overlay.delete('flappy');
  });

  test('a peer that sends its hello but no network list is closed at the deadline, with a reason that says so', async () => {
    const peer = await fakePeer((s) => s.write(hello('mute')));
    peers.push(peer);
    const q = await rigHost({
      id: 'q',
      listen: false,
      networks: [{ name: 'lab', vni: 100 }],
      networkListTimeoutMs: 300,
    });
    try {
      q.overlay.add({ name: 'mute', connect: { host: '127.0.0.1', port: peer.port } }, 'api');
      await until('the link is closed', () => q.overlay.view('mute').last_error != null);
      const v = q.overlay.view('mute');
      assert.equal(v.last_error, 'protocol error: no network list within 0.3 s after the hello');
      assert.equal(v.connects, 1);
      assert.notEqual(v.state, 'up');
    } finally {
      await q.stop();
    }
  });
});

describe('a TLS link listener and a client that leaves after the TLS handshake without its hello', {
  timeout: 60_000,
}, () => {
  let ca: Awaited<ReturnType<typeof rigCa>>;
  let t: TcpTransport;
  let port = 0;
  const log = recording('debug');

  before(async () => {
    ca = await rigCa(['b', 'a']);
    t = new TcpTransport({
      logger: log.logger,
      hello: () => ({ host: 'b', relay: false }),
      tls: ca.tls.b,
      keepaliveMs: 1000,
    });
    port = (await t.listen({ host: '127.0.0.1', port: 0 }, (ch) => void ch.close('not expected'))).port;
  });

  after(async () => {
    await t?.close();
    await ca?.cleanup();
  });

  /**
   * A client with a certificate of the fabric: it completes the TLS handshake,
   * reads the listener's hello (so the listener waits for the client's), then
   * `leave`s without sending its own.
   */
  async function client(leave: (raw: Socket, sock: Socket) => void): Promise<void> {
    const raw = netConnect(port, '127.0.0.1');
    raw.on('error', () => undefined);
    await once(raw, 'connect');
    const a = ca.tls.a as { ca: string; cert: string; key: string };
    const sock = tlsConnect({ socket: raw, ca: a.ca, cert: a.cert, key: a.key, checkServerIdentity: () => undefined });
    sock.on('error', () => undefined);
    await once(sock, 'data');
    leave(raw, sock);
  }

  const linesOf = (re: RegExp) => log.lines.filter((l) => re.test(String(l['msg'])));

  test('a client that resets the connection hung up: counted as refused, logged at debug level only', async () => {
    const before = t.refused;
    await client((raw) => raw.resetAndDestroy());
    await until('the refusal is counted', () => t.refused === before + 1);
    await until('the hang-up is logged', () => linesOf(/hung up before its hello/).length === 1);
    const line = linesOf(/hung up before its hello/)[0] as Record<string, unknown>;
    assert.equal(line['level'], 20);
    assert.match(String(line['peer']), /^tls:127\.0\.0\.1:\d+$/);
    assert.equal(linesOf(/refused link peer/).length, 0);
  });

  test("a client that closes the connection most likely refused this host's certificate: a warning that says so", async () => {
    const before = t.refused;
    await client((_raw, sock) => sock.end());
    await until('the refusal is counted', () => t.refused === before + 1);
    await until('the refusal is logged', () => linesOf(/refused link peer/).length === 1);
    const line = linesOf(/refused link peer/)[0] as Record<string, unknown>;
    assert.equal(line['level'], 40);
    assert.match(
      String(line['msg']),
      /^refused link peer tls:127\.0\.0\.1:\d+: .*before its hello: it may have refused this host's certificate/,
    );
    assert.equal(linesOf(/hung up before its hello/).length, 1, 'no second hang-up line');
  });
});
