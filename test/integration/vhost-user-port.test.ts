/**
 * vhost-user ports in a real daemon, driven by the test front-end over the
 * real control socket with memfd memory: frames between two vhost-user
 * ports, to and from a stream port, mergeable buffers, RARP and dirty
 * logging, a dialled front-end, multiqueue. Misbehaving front-ends are in
 * vhost-user-misbehaviour.test.ts.
 */
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { F, ProtoF, Req } from '../../src/net/vhost/constants.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { DEFAULT_FEATURES, GPA_BASE, TestFrontend } from '../helpers/vhost-frontend.js';
import { frame, MAC_A, MAC_B, startVhostLab, waitFor } from '../helpers/vhost-lab.js';

const MAC_S = '020000000c03';
const MAC_M = '020000000d04';
const MAC_D = '020000000e05';

describe('vhost-user ports', { timeout: 120_000 }, () => {
  let daemon: TestDaemon;
  const fronts: TestFrontend[] = [];
  let stream: Socket | undefined;

  const attach = async (port: string, opts = {}): Promise<TestFrontend> => {
    const f = new TestFrontend(daemon.path(`${port}.sock`), opts);
    fronts.push(f);
    await f.setup(opts);
    return f;
  };

  before(async () => {
    daemon = await startVhostLab();
  });

  after(async () => {
    for (const f of fronts) f.close();
    stream?.destroy();
    await daemon?.cleanup();
  });

  test('negotiates VERSION_1, protocol features, EVENT_IDX and REPLY_ACK, and offers checksum and TSO offloads but no UFO', async () => {
    const f = new TestFrontend(daemon.path('va.sock'));
    fronts.push(f);
    const { features, protocolFeatures } = await f.setup();
    assert.ok(features & (1n << 32n), 'VERSION_1');
    assert.ok(features & (1n << 30n), 'PROTOCOL_FEATURES');
    assert.ok(features & (1n << 29n), 'EVENT_IDX');
    assert.ok(features & (1n << 15n), 'MRG_RXBUF');
    for (const b of [0n, 1n, 7n, 8n, 9n, 11n, 12n, 13n])
      assert.ok(features & (1n << b), `offload feature bit ${b} offered`);
    for (const b of [10n, 14n]) assert.equal(features & (1n << b), 0n, `UFO bit ${b} not offered`);
    assert.equal(protocolFeatures & 0b11110n, 0b11110n, 'LOG_SHMFD, RARP, REPLY_ACK, MTU');
    f.close();
    fronts.pop();
  });

  test('moves frames between two vhost-user ports both ways, plain and chained descriptors', async () => {
    const a = await attach('va');
    const b = await attach('vb');
    a.sendFrame(frame('ffffffffffff', MAC_A, 1)); // B learns nothing yet; A's MAC is learned
    const first = await b.waitFrames(1);
    assert.equal(first.length, 1);
    assert.deepEqual(first[0], frame('ffffffffffff', MAC_A, 1));
    b.sendFrame(frame(MAC_A, MAC_B, 2, 1514), 12); // header and frame in two descriptors
    const back = await a.waitFrames(1);
    assert.deepEqual(back[0], frame(MAC_A, MAC_B, 2, 1514));
    for (let i = 0; i < 100; i++) a.sendFrame(frame(MAC_B, MAC_A, i & 0xff, 64 + i), i % 3 === 0 ? 40 : undefined);
    const many = await b.waitFrames(100);
    assert.equal(many.length, 100);
    many.forEach((f, i) => {
      assert.deepEqual(f, frame(MAC_B, MAC_A, i & 0xff, 64 + i));
    });
  });

  test('a vhost-user port reaches a stream port and back', async () => {
    const a = fronts.find((f) => f.rings.length > 0) as TestFrontend;
    stream = connect(daemon.path('st.sock'));
    await new Promise<void>((resolve, reject) => stream!.once('connect', resolve).once('error', reject));
    const got: Buffer[] = [];
    let acc = Buffer.alloc(0);
    stream.on('data', (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      while (acc.length >= 4 && acc.length >= 4 + acc.readUInt32BE(0)) {
        got.push(acc.subarray(4, 4 + acc.readUInt32BE(0)));
        acc = acc.subarray(4 + acc.readUInt32BE(0));
      }
    });
    const out = frame(MAC_A, MAC_S, 7, 600);
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(out.length);
    stream.write(Buffer.concat([hdr, out]));
    const atA = await a.waitFrames(1);
    assert.deepEqual(atA[0], out);
    a.sendFrame(frame(MAC_S, MAC_A, 8, 900));
    for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got[0], frame(MAC_S, MAC_A, 8, 900));
  });

  test('spreads a frame over several mergeable receive buffers and sets num_buffers', async () => {
    const a = fronts.find((f) => f.rings.length > 0) as TestFrontend;
    const m = new TestFrontend(daemon.path('vc.sock'), { bufSize: 256 });
    try {
      await m.setup({ features: DEFAULT_FEATURES + 2 ** F.NET_MRG_RXBUF + 2 ** F.RING_INDIRECT_DESC });
      m.sendFrame(frame(MAC_A, MAC_M, 3, 100)); // teach the switch where MAC_M is
      await a.waitFrames(1);
      a.sendFrame(frame(MAC_M, MAC_A, 4, 1514));
      a.sendFrame(frame(MAC_M, MAC_A, 5, 200));
      const got = await m.waitFrames(2);
      assert.deepEqual(got, [frame(MAC_M, MAC_A, 4, 1514), frame(MAC_M, MAC_A, 5, 200)]);
      // 12 + 1514 bytes in 256-byte buffers: 6 buffers, num_buffers 6 (checked inside receive()).
    } finally {
      m.close();
    }
  });

  test('a frame waiting for more mergeable buffers than are posted arrives when the guest posts more, kicking only when asked (EVENT_IDX)', async () => {
    const a = fronts.find((f) => f.rings.length > 0) as TestFrontend;
    const m = new TestFrontend(daemon.path('vc.sock'), { queueSize: 64, rxBufSize: 256 });
    try {
      await m.setup({ features: DEFAULT_FEATURES + 2 ** F.NET_MRG_RXBUF });
      m.sendFrame(frame(MAC_A, MAC_M, 0x41, 80));
      await a.waitFrames(1);
      const rxUsed = () => m.mem.readUInt16LE((m.rings[0] as { used: number }).used + 2);
      for (let i = 0; i < 60; i++) a.sendFrame(frame(MAC_M, MAC_A, i, 200)); // one 256-byte buffer each
      await waitFor(() => rxUsed() === 60);
      const before = a.txUsed();
      a.sendFrame(frame(MAC_M, MAC_A, 0x42, 1514)); // needs 6 buffers, 4 are left: it waits
      await waitFor(() => a.txUsed() !== before);
      assert.equal(rxUsed(), 60);
      // drainRx reposts every buffer and kicks only when avail_event asks for it, as a Linux driver does.
      let frames = 0;
      let bytes = 0;
      const until = Date.now() + 5000;
      while (frames < 61 && Date.now() < until) {
        const r = m.drainRx();
        frames += r.frames;
        bytes += r.bytes;
        await new Promise((res) => setTimeout(res, 5));
      }
      assert.equal(frames, 61);
      assert.equal(bytes, 60 * 200 + 1514);
    } finally {
      m.close();
    }
  });

  test('a burst larger than the receive ring fills it, waits in the backlog, and arrives in order once buffers come back', async () => {
    const a = fronts.find((f) => f.rings.length > 0) as TestFrontend;
    const m = new TestFrontend(daemon.path('vc.sock'), { queueSize: 64 });
    try {
      await m.setup();
      m.sendFrame(frame(MAC_A, MAC_M, 0x31, 80));
      await a.waitFrames(1);
      const sent: Buffer[] = [];
      for (let burst = 0; burst < 5; burst++) {
        const before = a.txUsed();
        for (let i = 0; i < 40; i++) {
          const f = frame(MAC_M, MAC_A, sent.length & 0xff, 60 + (sent.length % 50));
          a.sendFrame(f);
          sent.push(f);
        }
        await waitFor(() => ((a.txUsed() - before) & 0xffff) === 40);
      }
      // 64 receive buffers were posted, 200 frames sent: the rest waited in the port's backlog.
      const got = await m.waitFrames(sent.length);
      assert.equal(got.length, sent.length);
      assert.deepEqual(got, sent);
    } finally {
      m.close();
    }
  });

  test('without mergeable buffers, a frame larger than the posted buffers is dropped and counted, and the next one arrives', async () => {
    const a = fronts.find((f) => f.rings.length > 0) as TestFrontend;
    const m = new TestFrontend(daemon.path('vc.sock'), { bufSize: 512 });
    try {
      await m.setup();
      m.sendFrame(frame(MAC_A, MAC_M, 0x41, 80));
      await a.waitFrames(1);
      a.sendFrame(frame(MAC_M, MAC_A, 0x42, 1000)); // 12 + 1000 bytes do not fit in 512
      a.sendFrame(frame(MAC_M, MAC_A, 0x43, 400));
      const got = await m.waitFrames(1);
      assert.deepEqual(got, [frame(MAC_M, MAC_A, 0x43, 400)]);
      const { port } = await daemon.json<{ port: { transport: { rx_dropped: number } } }>(['port', 'show', 'vc']);
      assert.equal(port.transport.rx_dropped, 1);
    } finally {
      m.close();
    }
  });

  test('SEND_RARP announces the MAC to the other ports; dirty logging marks the pages written while migrating', async () => {
    const [a, b] = fronts.filter((x) => x.rings.length > 0) as [TestFrontend, TestFrontend];
    const m = new TestFrontend(daemon.path('vc.sock'));
    const n = m.n;
    const logFd = n.memfdCreate('vhost-test-log');
    const logSize = Math.ceil(m.memBytes / 4096 / 8) + GPA_BASE / 4096 / 8;
    ftruncateSync(logFd, logSize);
    const logAb = n.mmap(logFd, logSize, 0, true);
    const log = Buffer.from(logAb);
    try {
      await m.setup({
        protocolFeatures: 2 ** ProtoF.REPLY_ACK + 2 ** ProtoF.LOG_SHMFD + 2 ** ProtoF.RARP,
        logRings: true,
      });
      await b.waitFrames(1, 100);
      const mac = Buffer.from(MAC_M, 'hex');
      await m.ack(Req.SEND_RARP, Buffer.concat([mac, Buffer.alloc(2)]));
      const rarp = await b.waitFrames(1);
      assert.equal(rarp[0]?.subarray(0, 14).toString('hex'), `ffffffffffff${MAC_M}8035`);
      assert.equal(rarp[0]?.subarray(22, 28).toString('hex'), MAC_M);
      // Migration starts: the log, then LOG_ALL.
      const p = Buffer.alloc(16);
      p.writeBigUInt64LE(BigInt(logSize), 0);
      m.send(Req.SET_LOG_BASE, p, [logFd]);
      const r = await m.reply();
      assert.equal(r.request, Req.SET_LOG_BASE);
      await m.ack(Req.SET_FEATURES, TestFrontend.u64(DEFAULT_FEATURES + 2 ** F.LOG_ALL));
      assert.equal(
        log.every((x) => x === 0),
        true,
      );
      a.sendFrame(frame(MAC_M, MAC_A, 6, 1000)); // the switch learned MAC_M from the RARP
      const got = await m.waitFrames(1);
      assert.deepEqual(got[0], frame(MAC_M, MAC_A, 6, 1000));
      const dirty = (gpa: number) => ((log[Math.floor(gpa / 4096) >> 3] as number) >> (Math.floor(gpa / 4096) & 7)) & 1;
      assert.equal(dirty(m.gpa(m.rxBuf(0))), 1, 'the receive buffer page is dirty');
      assert.equal(dirty(m.gpa(m.rings[0]!.used)), 1, 'the used ring page is dirty');
      assert.equal(dirty(m.gpa(m.rxBuf(100))), 0, 'an untouched page is clean');
    } finally {
      m.close();
      n.munmap(logAb);
      closeSync(logFd);
    }
  });

  test('a port added with the CLI dials a front-end that listens (QEMU server=on), and dials again after it goes away', async () => {
    const n = fronts[0]!.n;
    const path = daemon.path('qemu-server.sock');
    const lfd = n.socket(n.SOCK_STREAM);
    n.bind(lfd, path);
    n.listen(lfd, 4);
    const acceptOne = async (): Promise<number> => {
      for (let i = 0; i < 500; i++) {
        const fd = n.accept(lfd);
        if (fd >= 0) return fd;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('vmlink never dialled');
    };
    const a = fronts.filter((x) => x.rings.length > 0)[0] as TestFrontend;
    a.receive(); // whatever earlier tests flooded to it
    try {
      const add = await daemon.cli([
        'port',
        'add',
        'vd',
        '--kind',
        'vhost-user',
        '--network',
        'lab',
        '--connect',
        `unix:${path}`,
        '--memory-mb',
        '256',
      ]);
      assert.equal(add.code, 0, add.stderr);
      for (let round = 0; round < 2; round++) {
        const f = new TestFrontend({ fd: await acceptOne() });
        try {
          await f.setup();
          f.sendFrame(frame(MAC_A, MAC_D, 10 + round, 300));
          assert.deepEqual((await a.waitFrames(1))[0], frame(MAC_A, MAC_D, 10 + round, 300));
          a.sendFrame(frame(MAC_D, MAC_A, 20 + round, 400));
          assert.deepEqual((await f.waitFrames(1))[0], frame(MAC_D, MAC_A, 20 + round, 400));
        } finally {
          f.close(); // vmlink sees the front-end go and dials again
        }
      }
      const q = await daemon.json<{ args: string[] }>(['qemu-args', 'vd']);
      assert.ok(q.args.includes(`socket,id=chr-vd,path=${path},server=on,wait=off`), q.args.join(' '));
    } finally {
      await daemon.cli(['port', 'delete', 'vd']);
      closeSync(lfd);
    }
  });

  test('serves a second queue pair (MQ): frames go to the first enabled receive ring, and every transmit ring is read', async () => {
    const a = fronts.filter((x) => x.rings.length > 0)[0] as TestFrontend;
    a.receive();
    const m = new TestFrontend(daemon.path('vc.sock'), { pairs: 2 });
    try {
      await m.setup({ protocolFeatures: 2 ** ProtoF.REPLY_ACK + 2 ** ProtoF.MQ });
      m.send(Req.GET_QUEUE_NUM);
      assert.equal((await m.reply()).payload.readBigUInt64LE(0), 8n);
      m.sendFrame(frame(MAC_A, MAC_M, 0x61, 120), undefined, 1); // transmit on pair 1
      assert.deepEqual((await a.waitFrames(1))[0], frame(MAC_A, MAC_M, 0x61, 120));
      a.sendFrame(frame(MAC_M, MAC_A, 0x62, 130));
      assert.deepEqual((await m.waitFrames(1, 5000, 0))[0], frame(MAC_M, MAC_A, 0x62, 130));
      // The guest turns receive ring 0 off: frames now land on pair 1's receive ring.
      await m.ack(Req.SET_VRING_ENABLE, TestFrontend.state(0, 0));
      a.sendFrame(frame(MAC_M, MAC_A, 0x63, 140));
      assert.deepEqual((await m.waitFrames(1, 5000, 1))[0], frame(MAC_M, MAC_A, 0x63, 140));
      assert.deepEqual(m.receive(0), []);
    } finally {
      m.close();
    }
  });

  test('refuses a second front-end on a port in use and keeps the first', async () => {
    const b = fronts.filter((x) => x.rings.length > 0)[1] as TestFrontend;
    const second = new TestFrontend(daemon.path('vb.sock'));
    assert.equal(await second.closedByPeer(5000), true);
    second.close();
    const a = fronts.filter((x) => x.rings.length > 0)[0] as TestFrontend;
    a.sendFrame(frame(MAC_B, MAC_A, 0x33, 100));
    assert.deepEqual((await b.waitFrames(1))[0], frame(MAC_B, MAC_A, 0x33, 100));
  });
});
