/**
 * Calls every function of the native addon once or twice, including its
 * error paths and its finalizers, then prints "native-exercise: ok". Run
 * under valgrind by test/unit/native.test.ts, so it stays small.
 */
import { closeSync, ftruncateSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/index.js';

const n = native();
const check = (ok: unknown, what: string): void => {
  if (!ok) throw new Error(`native-exercise: ${what}`);
};
const throwsCode = (fn: () => unknown, code: string): void => {
  try {
    fn();
  } catch (err) {
    check((err as { code?: string }).code === code, `expected ${code}, got ${String(err)}`);
    return;
  }
  throw new Error(`native-exercise: expected ${code}`);
};
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

// TAP and interface ioctls, with errors.
throwsCode(() => n.tapOpen('vlnosuch9', true, 0, -1), 'ENODEV');
throwsCode(() => n.tapOpen('bad/name', false, 0, -1), 'EINVAL');
const tap = n.tapOpen('vlvg%d', false, 12, 0);
n.ifSetMtu(tap.name, 1400);
n.ifSetUp(tap.name, false);
check(n.ifIndex(tap.name) > 0, 'ifIndex');
const errs = new Int32Array(2);
const frames = Buffer.alloc(128);
check(n.writeBatch(tap.fd, frames, Uint32Array.of(0), Uint32Array.of(60), 0, 1, Buffer.alloc(12), errs) === 1, 'write');
check(n.readBatch(tap.fd, frames, 64, new Uint32Array(2), new Uint32Array(2)) === 0, 'readBatch');
closeSync(tap.fd);

// eventfd, and a poller that fires, then one dropped without close() (finalizer path).
const efd = n.eventfd(0, false);
n.eventfdWrite(efd, 2);
check(n.eventfdRead(efd) === 2 && n.eventfdRead(efd) === null, 'eventfd');
await new Promise<void>((resolve) => {
  const p = new n.Poller(efd, (status) => {
    check(status === 0, 'poll status');
    p.stop();
    p.close();
    resolve();
  });
  p.start(n.READABLE | n.WRITABLE);
  n.eventfdWrite(efd, 1);
});
(() => {
  new n.Poller(efd, () => {}).stop();
})();

// mmap: one unmapped explicitly, one left to the finalizer.
const mfd = n.memfdCreate('vg');
ftruncateSync(mfd, 8192);
const ab = n.mmap(mfd, 8192, 0, true);
new Uint8Array(ab)[1] = 1;
n.munmap(ab);
n.munmap(ab);
(() => {
  new Uint8Array(n.mmap(mfd, 4096, 4096, false))[0];
})();
throwsCode(() => n.mmap(-1, 4096, 0, false), 'EBADF');

// SCM_RIGHTS and unix datagrams.
const [a, b] = n.socketpair(n.SOCK_STREAM);
n.sendFds(a, Buffer.from('x'), [efd, mfd]);
const got = n.recvFds(b, Buffer.alloc(8));
check(got?.fds.length === 2, 'recvFds');
for (const fd of got?.fds ?? []) closeSync(fd);
const path = join(tmpdir(), `vmlink-vg-${process.pid}.sock`);
const rx = n.socket(n.SOCK_DGRAM);
n.bind(rx, path);
const tx = n.socket(n.SOCK_DGRAM);
n.connect(tx, path);
check(n.sendBatch(tx, Buffer.from('abc'), Uint32Array.of(0, 1), Uint32Array.of(1, 2), 0, 2, null) === 2, 'send');
check(n.sendBatch(tx, Buffer.from('d'), Uint32Array.of(0), Uint32Array.of(1), 0, 1, path) === 1, 'sendto');
const addrs: string[] = [];
check(n.recvBatch(rx, Buffer.alloc(256), 64, new Uint32Array(4), addrs) === 3, 'recvBatch');
throwsCode(() => n.connect(n.socket(n.SOCK_SEQPACKET), join(tmpdir(), 'vmlink-vg-none')), 'ENOENT');
// recvBatchFrom: one datagram from the named peer, one from an unnamed socket (a stranger).
const peerPath = `${path}.peer`;
const named = n.socket(n.SOCK_DGRAM);
n.bind(named, peerPath);
n.sendBatch(named, Buffer.from('p'), Uint32Array.of(0), Uint32Array.of(1), 0, 1, path);
n.sendBatch(tx, Buffer.from('s'), Uint32Array.of(0), Uint32Array.of(1), 0, 1, null);
const strangers = new Uint8Array(4);
check(n.recvBatchFrom(rx, Buffer.alloc(256), 64, new Uint32Array(4), peerPath, strangers) === 2, 'recvBatchFrom');
check(strangers[0] === 0 && strangers[1] === 1, 'recvBatchFrom strangers');
n.setBuffers(named, 1 << 20, 1 << 20);
throwsCode(() => n.setBuffers(-1, 4096, 0), 'EBADF');
closeSync(named);
unlinkSync(peerPath);
// listen/accept on a stream socket: nothing pending, then one connection.
const lpath = `${path}.listen`;
const lst = n.socket(n.SOCK_STREAM);
n.bind(lst, lpath);
n.listen(lst, 4);
check(n.accept(lst) === -1, 'accept with nothing pending');
const dialer = n.socket(n.SOCK_STREAM);
n.connect(dialer, lpath);
const accepted = n.accept(lst);
check(accepted >= 0, 'accept');
throwsCode(() => n.accept(-1), 'EBADF');
for (const fd of [lst, dialer, accepted]) closeSync(fd);
unlinkSync(lpath);
// UDP: a socket, a sockaddr, a batch to it and back with the peer compared.
const u1 = n.udpOpen('127.0.0.1', 0);
const u2 = n.udpOpen('::1', 0);
const to2 = n.sockaddrInet('::1', u2.port, true);
n.sendBatch(u2.fd, Buffer.from('u'), Uint32Array.of(0), Uint32Array.of(1), 0, 1, to2);
const uStr = new Uint8Array(2);
check(n.recvBatchFrom(u2.fd, Buffer.alloc(128), 64, new Uint32Array(2), to2, uStr) === 1 && uStr[0] === 0, 'udp');
// udpSendBatch (a GSO run and a single) to u1, read back by udpRecvBatch with GRO on.
n.udpOffloads(u1.fd, true);
const uTable = Buffer.alloc(28);
n.sockaddrInet('127.0.0.1', u1.port, false).copy(uTable);
const u3 = n.udpOpen('127.0.0.1', 0);
const uSent = n.udpSendBatch(
  u3.fd,
  Buffer.alloc(300, 1),
  Uint32Array.of(0, 100, 200),
  Uint32Array.of(100, 100, 50),
  new Uint16Array(3),
  uTable,
  0,
  3,
  n.udpOffloads(u3.fd, false) & 1 ? 64 : 1,
);
check(uSent === 3, 'udpSendBatch');
let uGot = 0;
for (let i = 0; i < 100 && uGot === 0; i++)
  uGot = n.udpRecvBatch(
    u1.fd,
    Buffer.alloc(65536 * 2),
    65536,
    new Uint32Array(2),
    Buffer.alloc(40),
    new Uint32Array(2),
  );
check(uGot >= 1, 'udpRecvBatch');
throwsCode(
  () =>
    n.udpSendBatch(u3.fd, Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), Uint16Array.of(5), uTable, 0, 1, 1),
  'ERR_OUT_OF_RANGE',
);
closeSync(u3.fd);
check(n.inetSum(Buffer.from('0001f203f4f5f6f7', 'hex'), 0, 8) === 0xddf2, 'inetSum');
throwsCode(() => n.inetSum(Buffer.alloc(2), 1, 3), 'ERR_OUT_OF_RANGE');
throwsCode(() => n.udpOpen('127.0.0.1', u1.port), 'EADDRINUSE');
throwsCode(() => n.sockaddrInet('nowhere', 1, false), 'EINVAL');
closeSync(u1.fd);
closeSync(u2.fd);
// packetOpen: loopback, and a missing interface.
closeSync(n.packetOpen('lo', false).fd);
throwsCode(() => n.packetOpen('vmlink-none0', true), 'ENODEV');
// vring fast path over a small ring in memfd memory: one frame each way, refusals, a handle left to the finalizer.
(() => {
  const vfd = n.memfdCreate('vg-vring');
  ftruncateSync(vfd, 65536);
  const vab = n.mmap(vfd, 65536, 0, true);
  const g = Buffer.from(vab);
  const io = new Uint32Array(new ArrayBuffer(12));
  const ring = n.vringNew(io);
  check(n.vringRx(ring, Buffer.alloc(60), 0, 60) === 2, 'vringRx detached');
  n.vringAttach(
    ring,
    [g],
    Float64Array.of(0),
    4,
    g.subarray(0, 64),
    g.subarray(0x1000, 0x1010),
    g.subarray(0x2000, 0x2030),
  );
  g.writeBigUInt64LE(0x8000n, 0);
  g.writeUInt32LE(72, 8); // transmit: header + 60 bytes, device-readable
  g.writeBigUInt64LE(0x9000n, 16);
  g.writeUInt32LE(2048, 24);
  g.writeUInt16LE(2, 28); // receive: device-writable
  g.writeUInt16LE(0, 0x1004);
  g.writeUInt16LE(1, 0x1006);
  g.writeUInt16LE(2, 0x1002);
  const out = new Uint32Array(12);
  check(n.vringTx(ring, 4, 14, 1514, out) === 1 && out[1] === 0x8000 + 12 && out[2] === 60, 'vringTx');
  n.vringPublish(ring);
  check(n.vringRx(ring, Buffer.alloc(60, 1), 0, 60) === 0 && g[0x9000 + 12] === 1, 'vringRx');
  check(n.vringRx(ring, Buffer.alloc(60), 0, 60) === 1, 'vringRx empty');
  const src = Buffer.alloc(200, 2);
  g.writeUInt16LE(1, 0x1008);
  g.writeUInt16LE(3, 0x1002); // one more receive buffer: the batch of two does one
  check(n.vringRxBatch(ring, src, Uint32Array.of(0, 60, 60, 60), 2) === 1 && g[0x9000 + 12] === 2, 'vringRxBatch');
  throwsCode(() => n.vringRxBatch(ring, src, Uint32Array.of(190, 60), 1), 'ERR_OUT_OF_RANGE');
  throwsCode(
    () => n.vringRxBatch(ring, undefined as unknown as Buffer, Uint32Array.of(0, 60), 1),
    'ERR_INVALID_ARG_TYPE',
  );

  // Mergeable receive buffers (io[2] bit 0): a 3000-byte frame fills two 2048-byte buffers.
  io.set([0, 0, 1]);
  const mrg = ring;
  n.vringAttach(
    mrg,
    [g],
    Float64Array.of(0),
    4,
    g.subarray(0x3000, 0x3040),
    g.subarray(0x4000, 0x4010),
    g.subarray(0x5000, 0x5030),
  );
  for (let i = 0; i < 2; i++) {
    g.writeBigUInt64LE(BigInt(0xa000 + 0x1000 * i), 0x3000 + 16 * i);
    g.writeUInt32LE(2048, 0x3008 + 16 * i);
    g.writeUInt16LE(2, 0x300c + 16 * i);
    g.writeUInt16LE(i, 0x4004 + 2 * i);
  }
  g.writeUInt16LE(1, 0x4002);
  check(n.vringRx(mrg, Buffer.alloc(3000, 3), 0, 3000) === 1, 'vringRx mergeable, too few buffers');
  g.writeUInt16LE(2, 0x4002);
  check(
    n.vringRx(mrg, Buffer.alloc(3000, 3), 0, 3000) === 0 &&
      g[0xa000 + 10] === 2 &&
      g[0xb000 + 3012 - 2048 - 1] === 3 &&
      g.readUInt16LE(0x5002) === 2,
    'vringRx mergeable',
  );
  io.set([0, 0, 0]);

  throwsCode(() => n.vringRx(ring, Buffer.alloc(8), 4, 60), 'ERR_OUT_OF_RANGE');
  throwsCode(() => n.vringTx({} as never, 1, 14, 1514, out), 'ERR_INVALID_ARG_TYPE');
  throwsCode(() => n.vringAttach(ring, [g], Float64Array.of(0), 1 << 20, g, g, g), 'ERR_INVALID_ARG_VALUE');
  n.vringAttach(ring);
  check(n.vringTx(ring, 4, 14, 1514, out) === 0, 'vringTx detached');
  n.munmap(vab);
  closeSync(vfd);
})(); // a function, not a block: its locals must not outlive it in the suspended module frame (top-level await)
for (const fd of [a, b, rx, tx, efd, mfd]) closeSync(fd);
// Block files: nowait I/O, fallocate, SEEK_DATA/SEEK_HOLE, a batch on the pool (and its error path).
const blk = n.memfdCreate('vg-blk');
ftruncateSync(blk, 1 << 16);
const page = Buffer.alloc(4096, 5);
n.pwriteNoWait(blk, page, 0, 4096, 0);
n.preadNoWait(blk, page, 0, 4096, 0);
n.fallocate(blk, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, 0, 4096);
n.seekData(blk, 0);
n.seekHole(blk, 0);
throwsCode(() => n.fallocate(-1, 0, 0, 1), 'EBADF');
const res = new Float64Array(2);
await new Promise<void>((resolve) =>
  n.fileBatch(blk, true, [page, page], Float64Array.of(0, 8192), res, () => resolve()),
);
check(res[0] === 4096 && res[1] === 4096, 'fileBatch');
throwsCode(() => n.fileBatch(blk, true, [], res, res, () => {}), 'ERR_OUT_OF_RANGE');
closeSync(blk);

gc();
await new Promise((r) => setImmediate(r));
gc();
await new Promise((r) => setImmediate(r));
unlinkSync(path);
console.log('native-exercise: ok');
