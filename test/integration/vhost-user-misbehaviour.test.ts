/**
 * vhost-user front-ends that break the protocol, the ring rules or the
 * memory rules, each on a fresh connection to a real daemon's port: every
 * one is disconnected alone, with one log line that says why, while the
 * other front-ends go on moving frames; a seeded fuzz of message sequences
 * never takes the daemon down.
 */
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Req } from '../../src/net/vhost/constants.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { prng } from '../helpers/prng.js';
import { TestFrontend } from '../helpers/vhost-frontend.js';
import { frame, MAC_A, MAC_B, startVhostLab, waitFor } from '../helpers/vhost-lab.js';

describe('vhost-user front-ends that misbehave', { timeout: 120_000 }, () => {
  let daemon: TestDaemon;
  const fronts: TestFrontend[] = [];

  before(async () => {
    daemon = await startVhostLab();
    // Two well-behaved front-ends on va and vb: they must carry on after every bad one.
    for (const port of ['va', 'vb']) {
      const f = new TestFrontend(daemon.path(`${port}.sock`));
      fronts.push(f);
      await f.setup();
    }
  });

  after(async () => {
    for (const f of fronts) f.close();
    await daemon?.cleanup();
  });

  /** Each case: a fresh front-end on port vc does one bad thing and must be disconnected alone. */
  const cases: [string, string, (f: TestFrontend) => void][] = [
    [
      'a descriptor loop',
      'longer than',
      (f) => {
        f.writeDesc(1, 0, f.gpa(f.txBuf(0)), 100, 1, 1);
        f.writeDesc(1, 1, f.gpa(f.txBuf(0)), 100, 1, 0);
        f.pushAvail(1, 0);
        f.kick(1);
      },
    ],
    [
      'a buffer outside guest memory',
      'outside guest memory',
      (f) => {
        f.writeDesc(1, 0, f.gpa(f.memBytes - 10), 100, 0, 0);
        f.pushAvail(1, 0);
        f.kick(1);
      },
    ],
    [
      'a head index beyond the queue size',
      'beyond queue size',
      (f) => {
        f.pushAvail(1, f.num + 5);
        f.kick(1);
      },
    ],
    [
      'an available index far ahead',
      'entries ahead',
      (f) => {
        f.setAvailIdx(1, f.num + 1);
        f.kick(1);
      },
    ],
    [
      'a receive buffer that is device-readable',
      'device-readable in a receive queue',
      (f) => {
        // Buffer 0 is already available; make it device-readable, then flood a frame to every port.
        f.writeDesc(0, 0, f.gpa(f.rxBuf(0)), 2048, 0, 0);
        (fronts.find((x) => x.rings.length > 0) as TestFrontend).sendFrame(frame('ffffffffffff', MAC_A, 9));
      },
    ],
    [
      'a nested indirect table',
      'nested indirect',
      (f) => {
        const t = f.txBuf(4);
        f.mem.writeBigUInt64LE(BigInt(f.gpa(t)), t);
        f.mem.writeUInt32LE(16, t + 8);
        f.mem.writeUInt16LE(4, t + 12);
        f.writeDesc(1, 0, f.gpa(t), 16, 4, 0);
        f.pushAvail(1, 0);
        f.kick(1);
      },
    ],
    ['an unknown request', 'unknown request', (f) => f.send(99, Buffer.alloc(8))],
    ['a wrong payload size', 'payload of 8 bytes, expected 40', (f) => f.send(Req.SET_VRING_ADDR, Buffer.alloc(8))],
    ['a ring index out of range', 'does not exist', (f) => f.send(Req.SET_VRING_NUM, TestFrontend.state(40, 256))],
    [
      'a ring outside memory',
      'outside the memory table',
      (f) => {
        const a = Buffer.alloc(40);
        a.writeBigUInt64LE(0xdead0000n, 8);
        f.send(Req.SET_VRING_ADDR, a);
      },
    ],
    [
      'a bad protocol version',
      'protocol version',
      (f) => {
        const m = Buffer.alloc(12);
        m.writeUInt32LE(1, 0);
        m.writeUInt32LE(2, 4);
        f.sendRaw(m);
      },
    ],
    [
      'a kick message without its fd',
      'fds received, expected 1',
      (f) => f.send(Req.SET_VRING_KICK, TestFrontend.u64(0)),
    ],
  ];

  for (const [what, logged, misbehave] of cases) {
    test(`disconnects a front-end for ${what}, with one log line, and the others carry on`, async () => {
      const f = new TestFrontend(daemon.path('vc.sock'));
      try {
        await f.setup();
        const before = daemon.log.length;
        misbehave(f);
        assert.equal(await f.closedByPeer(5000), true, 'the back-end closed the bad front-end');
        await check(before, logged);
      } finally {
        f.close();
      }
    });
  }

  async function check(before: number, logged: string): Promise<void> {
    {
      await waitFor(() =>
        /"code":"ERR_[A-Z_]+","msg":"vhost-user front-end disconnected/.test(daemon.log.slice(before)),
      );
      const lines = daemon.log
        .slice(before)
        .split('\n')
        .filter((l) => l.includes('vhost-user front-end disconnected') && l.includes('"code":"ERR_'));
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0] as string, new RegExp(logged.replace(/[()]/g, '\\$&')));
      // The daemon and the other front-ends carry on.
      const [a, b] = fronts.filter((x) => x.rings.length > 0) as [TestFrontend, TestFrontend];
      await b.waitFrames(1, 200); // a flood from the case itself, if any
      a.sendFrame(frame(MAC_B, MAC_A, 0x5a, 200));
      const got = await b.waitFrames(1);
      assert.deepEqual(got[0], frame(MAC_B, MAC_A, 0x5a, 200));
      const st = await daemon.json<{ port: { state: string } }>(['port', 'show', 'vc']);
      assert.equal(st.port.state, 'listening');
    }
  }

  test('fuzz: random message sequences (seeded) never take the daemon down; each ends in a disconnect or a live session', async () => {
    const rnd = prng(0x7e57);
    const int = (k: number) => Math.floor(rnd() * k);
    const n = fronts[0]!.n;
    for (let round = 0; round < 40; round++) {
      const f = new TestFrontend(daemon.path('vc.sock'));
      const extra: number[] = [];
      try {
        // Sometimes a valid start, so later messages reach ring and memory handling.
        if (int(2) === 0) await f.setup();
        for (let i = 0; i < 1 + int(12); i++) {
          const request = int(5) === 0 ? int(64) : 1 + int(20);
          const size = [0, 8, 16, 40, 8 + 32 * int(3), int(300)][int(6)] as number;
          const p = Buffer.alloc(size);
          for (let j = 0; j < size; j++) p[j] = int(3) === 0 ? int(256) : int(4);
          if (size >= 8 && int(2) === 0) p.writeUInt32LE(int(4), 0); // a plausible ring index
          const fds: number[] = [];
          for (let k = int(3) === 0 ? 1 + int(2) : 0; k > 0; k--) {
            const fd = n.eventfd(0, false);
            extra.push(fd);
            fds.push(fd);
          }
          try {
            f.send(request, p, fds, int(2) === 0);
          } catch {
            break; // the back-end already hung up
          }
        }
        await f.closedByPeer(int(4) === 0 ? 300 : 50);
      } finally {
        f.close();
        for (const fd of extra) closeSync(fd);
      }
    }
    // The daemon is alive and the other ports still move frames.
    const [a, b] = fronts.filter((x) => x.rings.length > 0) as [TestFrontend, TestFrontend];
    b.receive();
    a.sendFrame(frame(MAC_B, MAC_A, 0x77, 99));
    assert.deepEqual((await b.waitFrames(1))[0], frame(MAC_B, MAC_A, 0x77, 99));
    const st = await daemon.json<{ port: { state: string } }>(['port', 'show', 'vc']);
    assert.ok(['listening', 'up'].includes(st.port.state));
  });
});
