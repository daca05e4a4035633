/**
 * Dgram-port behaviour beyond the shared compliance suite: strangers are
 * dropped and counted, IPv6, bind errors, oversized datagrams.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { portSchema } from '../../src/config/schema.js';
import { createPort } from '../../src/daemon/port-registry.js';
import { silentLogger } from '../../src/log.js';
import { type Port, WriteResult } from '../../src/net/port.js';

const T = { timeout: 30_000 };
const FRAME = Buffer.from('ffffffffffff52540000000188b5' + 'aa'.repeat(50), 'hex');

describe('dgram port', () => {
  const cleanups: (() => unknown)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  async function udp(family: 4 | 6 = 4): Promise<Socket & { port: number; host: string }> {
    const host = family === 6 ? '::1' : '127.0.0.1';
    const s = createSocket(family === 6 ? 'udp6' : 'udp4');
    s.bind(0, host);
    await once(s, 'listening');
    cleanups.push(() => {
      try {
        s.close();
      } catch {
        // closed already
      }
    });
    return Object.assign(s, { port: s.address().port, host });
  }

  /** A port sending to `remote`; `got` collects frames, `bad` malformed reports, and `seen()` waits for the next of either. */
  async function open(local: string, remote: string, maxFrameLen = 65535) {
    const got: Buffer[] = [];
    const bad: string[] = [];
    let wake: (() => void) | undefined;
    const port: Port = createPort(portSchema.parse({ name: 'd', network: 'n', kind: 'dgram', local, remote }), {
      sink: (b, off, len) => {
        got.push(Buffer.from(b.subarray(off, off + len)));
        wake?.();
      },
      logger: silentLogger(),
      maxFrameLen,
      queueLen: 64,
      onMalformed: (r) => {
        bad.push(r);
        wake?.();
      },
      onState: () => {},
    });
    cleanups.push(() => port.destroy());
    await port.open();
    const addr = String(port.describe()['local']);
    const portNo = Number(addr.slice(addr.lastIndexOf(':') + 1));
    const seen = (n: number) =>
      (async () => {
        while (got.length + bad.length < n) await new Promise<void>((r) => (wake = r));
      })();
    return { port, got, bad, portNo, seen };
  }

  test('takes frames from its remote only: datagrams from strangers are dropped and counted', T, async () => {
    const peer = await udp();
    const stranger = await udp();
    const p = await open('udp:127.0.0.1:0', `udp:127.0.0.1:${peer.port}`);
    stranger.send(FRAME, p.portNo, '127.0.0.1');
    peer.send(FRAME, p.portNo, '127.0.0.1');
    await p.seen(2);
    assert.equal(p.got.length, 1);
    assert.deepEqual(p.got[0], FRAME);
    assert.equal(p.bad.length, 1);
    // The sender is compared in C (no string per datagram), so the message names the remote it is not.
    assert.match(p.bad[0] as string, new RegExp(`other than the port's remote udp:127\\.0\\.0\\.1:${peer.port}`));
    assert.equal(p.port.describe()['strangers'], 1);
  });

  test('works over IPv6, comparing addresses in canonical form', T, async () => {
    const peer = await udp(6);
    const p = await open('udp:[::1]:0', `udp:[0:0:0:0:0:0:0:1]:${peer.port}`);
    peer.send(FRAME, p.portNo, '::1');
    await p.seen(1);
    assert.deepEqual(p.got, [FRAME]);
    const msg = once(peer, 'message');
    assert.equal(p.port.write(FRAME, 0, FRAME.length), WriteResult.OK);
    const [m, rinfo] = (await msg) as [Buffer, { port: number }];
    assert.deepEqual(m, FRAME);
    assert.equal(rinfo.port, p.portNo);
  });

  test('drops and counts a datagram longer than the largest frame, and passes runts on', T, async () => {
    const peer = await udp();
    const p = await open('udp:127.0.0.1:0', `udp:127.0.0.1:${peer.port}`, 100);
    peer.send(Buffer.alloc(101), p.portNo, '127.0.0.1');
    peer.send(Buffer.alloc(5), p.portNo, '127.0.0.1');
    await p.seen(2);
    assert.equal(p.bad.length, 1);
    assert.match(p.bad[0] as string, /101 bytes exceeds the largest frame of 100/);
    assert.deepEqual(p.got, [Buffer.alloc(5)]);
  });

  test('refuses a local address in use with ERR_PORT_ADDRESS', T, async () => {
    const busy = await udp();
    const create = () =>
      createPort(
        portSchema.parse({
          name: 'd',
          network: 'n',
          kind: 'dgram',
          local: `udp:127.0.0.1:${busy.port}`,
          remote: 'udp:127.0.0.1:9',
        }),
        {
          sink: () => {},
          logger: silentLogger(),
          maxFrameLen: 2000,
          queueLen: 8,
          onMalformed: () => {},
          onState: () => {},
        },
      );
    await assert.rejects(create().open(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PORT_ADDRESS');
      assert.match(err.message, /already in use/);
      return true;
    });
  });

  test('sends many frames written in one turn, each as its own datagram, byte-exact and in order', T, async () => {
    const peer = await udp();
    const p = await open('udp:127.0.0.1:0', `udp:127.0.0.1:${peer.port}`);
    const got: Buffer[] = [];
    const all = new Promise<void>((resolve) =>
      peer.on('message', (m: Buffer) => {
        got.push(m);
        if (got.length === 50) resolve();
      }),
    );
    const sent: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      const f = Buffer.from(FRAME);
      f.writeUInt16BE(i, 14);
      sent.push(f);
      assert.equal(p.port.write(f, 0, f.length - i), WriteResult.OK);
    }
    await all;
    assert.deepEqual(
      got,
      sent.map((f, i) => f.subarray(0, f.length - i)),
    );
  });
});
