/**
 * A vhost-user front-end that lies about its memory, against the real
 * daemon: a region larger than the memory file it sends, and a memory file
 * shrunk after SET_MEM_TABLE with rings or buffers in the part that is gone.
 * Each must cost that front-end its connection (with a reason in the log and
 * the port's status) and nothing else: the daemon stays up, another port
 * still forwards, an NBD export still reads. Also: a front-end that
 * reconnects at once after closing is served every time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, ftruncateSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { native } from '../../src/native/index.js';
import { Req } from '../../src/net/vhost/constants.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { StreamPeer } from '../helpers/port-peers.js';
import { GPA_BASE, TestFrontend, UVA_BASE } from '../helpers/vhost-frontend.js';

const MAC_A = '020000000a01';
const MAC_S = '020000000c03';

function frame(dst: string, src: string, fill: number, len = 60): Buffer {
  const f = Buffer.alloc(len, fill);
  Buffer.from(dst, 'hex').copy(f, 0);
  Buffer.from(src, 'hex').copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  return f;
}

interface PortView {
  port: { state: string; status?: Record<string, unknown> } & Record<string, unknown>;
}

describe('vhost-user front-ends that lie about their memory', { timeout: 180_000 }, () => {
  let daemon: TestDaemon;
  let good: TestFrontend;
  let peer: StreamPeer;
  let nbd: NbdClient;
  const n = native();

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) => [
        { name: 'vx', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vx.sock` },
        { name: 'va', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/va.sock` },
        { name: 'st', network: 'lab', kind: 'stream', listen: `unix:${dir}/st.sock` },
      ],
      extra: (dir) => ({
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`] },
        exports: [{ name: 'disk', backend: { type: 'memory', size: '1M' } }],
      }),
    });
    good = new TestFrontend(daemon.path('va.sock'));
    await good.setup();
    const sock = connect(daemon.path('st.sock'));
    await once(sock, 'connect');
    peer = new StreamPeer(sock);
    nbd = await NbdClient.connect({ address: { type: 'unix', path: daemon.path('nbd.sock') }, export: 'disk' });
    await nbd.write(0, Buffer.alloc(4096, 0xd1));
  });

  after(async () => {
    good?.close();
    await peer?.close();
    await nbd?.disconnect().catch(() => undefined);
    await daemon?.cleanup();
  });

  /** The daemon is up, the other vhost-user port and the stream port still forward both ways, the export reads. */
  async function othersCarryOn(fill: number): Promise<void> {
    assert.ok(daemon.pid !== undefined && processAlive(daemon.pid), `the daemon is running:\n${daemon.log}`);
    const out = frame(MAC_S, MAC_A, fill, 300);
    good.sendFrame(out);
    // Skip anything flooded meanwhile; the frame must come.
    for (let got = await peer.next(); !got.equals(out); got = await peer.next());
    const back = frame(MAC_A, MAC_S, fill + 1, 200);
    peer.send(back);
    const until = Date.now() + 5000;
    let seen = false;
    while (!seen && Date.now() < until) seen = (await good.waitFrames(1, 500)).some((b) => b.equals(back));
    assert.ok(seen, "the vhost-user port got the stream port's frame");
    assert.deepEqual(await nbd.read(0, 4096), Buffer.alloc(4096, 0xd1));
  }

  /** The one log line of the disconnect after `from`, with its code. */
  async function disconnectLine(from: number, code: string): Promise<string> {
    const until = Date.now() + 10_000;
    for (;;) {
      const lines = daemon.log
        .slice(from)
        .split('\n')
        .filter((l) => l.includes('vhost-user front-end disconnected'));
      if (lines.length > 0) {
        assert.equal(lines.length, 1, lines.join('\n'));
        assert.match(lines[0] as string, new RegExp(`"code":"${code}"`));
        return lines[0] as string;
      }
      if (Date.now() > until) throw new Error(`no disconnect logged:\n${daemon.log.slice(from)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  test('a region of 1 GiB over a 16 MiB memfd is refused at SET_MEM_TABLE with the region, its size and the file size', async () => {
    const f = new TestFrontend(daemon.path('vx.sock'));
    const small = n.memfdCreate('vhost-attack-small');
    ftruncateSync(small, 16 << 20);
    try {
      await f.negotiate();
      const from = daemon.log.length;
      const table = f.memTable([{ gpa: GPA_BASE, size: 1 << 30, uva: UVA_BASE, offset: 0 }]);
      await assert.rejects(f.memTableWith(table, [small]), /not acked|closed the connection/);
      // What the attack went on with: rings far beyond the end of the file, and a kick. The connection is gone.
      try {
        const a = Buffer.alloc(40);
        a.writeUInt32LE(1, 0);
        a.writeBigUInt64LE(BigInt(UVA_BASE + (512 << 20)), 8);
        f.send(Req.SET_VRING_ADDR, a);
      } catch {
        // refused already
      }
      assert.equal(await f.closedByPeer(5000), true);
      const line = await disconnectLine(from, 'ERR_VHOST_MEMORY');
      assert.match(
        line,
        /region 0 \(gpa 0x40000000\): 1073741824 bytes at fd offset 0 end at byte 1073741824, but its file holds 16777216 bytes/,
      );
      const st = await daemon.json<PortView>(['port', 'show', 'vx']);
      assert.equal(st.port.state, 'listening');
      await othersCarryOn(0x10);
    } finally {
      f.close();
      closeSync(small);
    }
  });

  for (const [where, keep] of [
    ['the rings', 0],
    ['the transmit buffers', -1],
  ] as const) {
    test(`a memfd shrunk after SET_MEM_TABLE with ${where} in the part that is gone, then a kick: only that front-end is disconnected`, async () => {
      const f = new TestFrontend(daemon.path('vx.sock'));
      try {
        await f.setup();
        const st0 = await daemon.json<PortView>(['port', 'show', 'vx']);
        assert.equal(JSON.stringify(st0).includes('"guest_memory_sealed":false'), true, JSON.stringify(st0));
        const from = daemon.log.length;
        f.truncateMemory(keep < 0 ? f.txBuf(0) : keep);
        f.sendFrame(frame(MAC_S, 'aa0000000001', 0x33, 100)); // descriptors and kick (into the lost part, if it is gone)
        assert.equal(await f.closedByPeer(10_000), true, 'the back-end closed the lying front-end');
        const line = await disconnectLine(from, 'ERR_VHOST_MEMORY_FAULT');
        assert.match(line, /guest memory region 0 \(gpa 0x40000000, \d+ bytes at fd offset 0\) faulted/);
        const st = await daemon.json<PortView>(['port', 'show', 'vx']);
        assert.equal(st.port.state, 'listening');
        assert.match(JSON.stringify(st), /"last_error":"guest memory region 0 [^"]*faulted/);
        await othersCarryOn(0x20 + keep);
      } finally {
        f.close();
      }
    });
  }

  test('a front-end whose memfd is sealed against shrinking shows it in the port status', async () => {
    const f = new TestFrontend(daemon.path('vx.sock'), { sealed: true });
    try {
      await f.setup();
      const st = await daemon.json<PortView>(['port', 'show', 'vx']);
      assert.match(JSON.stringify(st), /"guest_memory_sealed":true/);
      assert.throws(() => f.truncateMemory(4096), { code: 'EPERM' });
    } finally {
      f.close();
    }
  });

  test('a front-end that reconnects at once after closing is never refused as a second front-end (200 times in a row)', async () => {
    const count = (v: PortView, key: string) => Number(new RegExp(`"${key}":(\\d+)`).exec(JSON.stringify(v))?.[1]);
    const before = await daemon.json<PortView>(['port', 'show', 'vx']);
    /** Connects; a full listen backlog (EAGAIN: the daemon has not accepted the last ones yet) is waited out. */
    const dial = async (): Promise<TestFrontend> => {
      for (;;) {
        try {
          return new TestFrontend(daemon.path('vx.sock'), { queueSize: 8, bufSize: 64 });
        } catch (err) {
          if ((err as { code?: string }).code !== 'EAGAIN') throw err;
          await new Promise((r) => setImmediate(r));
        }
      }
    };
    // Connect, ask, hang up, connect again at once: the daemon sees each close and the next connect together.
    let hungUp = 0;
    for (let i = 0; i < 200; i++) {
      const f = await dial();
      try {
        f.send(Req.GET_FEATURES);
      } catch {
        hungUp++; // EPIPE: the daemon closed this connection at once (refused it)
      }
      f.close();
    }
    assert.equal(hungUp, 0, 'the daemon closed none of the connections');
    // The last one stays and is served.
    const last = await dial();
    try {
      last.send(Req.GET_FEATURES);
      assert.equal((await last.reply()).request, Req.GET_FEATURES);
      const after = await daemon.json<PortView>(['port', 'show', 'vx']);
      assert.equal(count(after, 'refused'), count(before, 'refused'), 'none refused');
      assert.equal(count(after, 'sessions'), count(before, 'sessions') + 201, 'every connection became a session');
    } finally {
      last.close();
    }
    await othersCarryOn(0x40);
  });
});

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
