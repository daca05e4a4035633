import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../src/native/index.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import { prng } from '../helpers/prng.js';

let n: NativeAddon;
const fds: number[] = [];
const pollers: Poller[] = [];
let dir: string;

/** Tracks an fd for after(). */
function own(fd: number): number {
  fds.push(fd);
  return fd;
}

/** Resolves with the first readiness callback of `fd` for `events`. */
function ready(fd: number, events: number): Promise<{ status: number; events: number }> {
  return new Promise((resolve) => {
    const p = new n.Poller(fd, (status, ev) => {
      p.close();
      resolve({ status, events: ev });
    });
    pollers.push(p);
    p.start(events);
  });
}

before(() => {
  n = native();
  dir = mkdtempSync(join(tmpdir(), 'vmlink-native-'));
});

after(() => {
  for (const p of pollers) p.close();
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed by the test
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('errors', () => {
  test('a failed syscall throws an Error carrying the errno name, negative errno and the syscall, like Node', () => {
    const err = catchErr(() => n.connect(own(n.socket(n.SOCK_DGRAM)), join(dir, 'nobody-listens')));
    assert.ok(isSyscallError(err, 'ENOENT'));
    assert.equal(err.errno, -2);
    assert.equal(err.syscall, 'connect');
    assert.equal(err.path, join(dir, 'nobody-listens'));
    assert.match(err.message, /^ENOENT: no such file or directory, connect '/);
  });

  test('a wrongly typed argument throws a TypeError with ERR_INVALID_ARG_TYPE', () => {
    const err = catchErr(() => n.eventfdRead('3' as unknown as number)) as Error & { code?: string };
    assert.ok(err instanceof TypeError);
    assert.equal(err.code, 'ERR_INVALID_ARG_TYPE');
  });
});

describe('TAP', () => {
  let ns: Netns;
  before(async () => {
    ns = await Netns.create('native');
  });
  after(async () => {
    await ns.delete();
  });

  test('attaching to an interface that does not exist fails with ENODEV from if_nametoindex', () => {
    const err = catchErr(() => n.tapOpen('vlnosuch0', true, 0, -1));
    assert.ok(isSyscallError(err, 'ENODEV'));
    assert.equal(err.syscall, 'if_nametoindex');
    assert.equal(err.path, 'vlnosuch0');
  });

  test('an invalid interface name fails with EINVAL from TUNSETIFF, and an over-long one with a RangeError', () => {
    const err = catchErr(() => n.tapOpen('bad/name', false, 0, -1));
    assert.ok(isSyscallError(err, 'EINVAL'));
    assert.equal(err.syscall, 'ioctl TUNSETIFF');
    const long = catchErr(() => n.tapOpen('a-name-that-is-far-too-long', false, 0, -1)) as Error & { code?: string };
    assert.ok(long instanceof RangeError);
    assert.equal(long.code, 'ERR_INVALID_ARG_VALUE');
  });

  test('creates a TAP from a %d pattern, reports its name, and removes it when the fd closes', () => {
    const { fd, name } = n.tapOpen('vlnat%d', false, 12, 0);
    assert.match(name, /^vlnat\d+$/);
    assert.ok(n.ifIndex(name) > 0);
    n.ifSetMtu(name, 1400);
    n.ifSetUp(name, true);
    n.ifSetUp(name, false);
    assert.equal(n.readBatch(fd, Buffer.alloc(4096), 2048, new Uint32Array(4), new Uint32Array(4)), 0);
    closeSync(fd);
    assert.equal(n.ifIndex(name), 0);
  });

  test('writes a batch into a down TAP counting each refused frame (EIO) without throwing', () => {
    const { fd } = n.tapOpen(uniqueIfname('vln'), false, 0, -1);
    own(fd);
    const frames = Buffer.alloc(128);
    const errs = new Int32Array(2);
    const next = n.writeBatch(fd, frames, Uint32Array.of(0, 64), Uint32Array.of(60, 60), 0, 2, null, errs);
    assert.equal(next, 2);
    assert.equal(errs[0], 2);
    assert.equal(errs[1], 5); // EIO
  });

  test('a batch written into a TAP reaches the kernel, and its reply is read back after the poller reports readable', async () => {
    const ifname = uniqueIfname('vln');
    const { fd } = n.tapOpen(ifname, false, 0, -1);
    own(fd);
    await ns.adopt(ifname, '10.77.0.1/24');
    // Two frames in one batch: a runt the kernel drops, then an ARP request for 10.77.0.1 from 02:00:00:00:00:02.
    const buf = Buffer.alloc(128);
    const arp = Buffer.from(
      'ffffffffffff020000000002080600010800060400010200000000020a4d0002000000000000' + '0a4d0001',
      'hex',
    );
    arp.copy(buf, 64);
    const errs = new Int32Array(2);
    const readable = ready(fd, n.READABLE);
    assert.equal(n.writeBatch(fd, buf, Uint32Array.of(0, 64), Uint32Array.of(20, arp.length), 0, 2, null, errs), 2);
    const ev = await readable;
    assert.equal(ev.status, 0);
    assert.ok(ev.events & n.READABLE);
    const rx = Buffer.alloc(1 << 16);
    const offs = new Uint32Array(64);
    const lens = new Uint32Array(64);
    let reply: Buffer | undefined;
    // IPv6 housekeeping frames may come too: look for the ARP reply (op 2) among what is ready.
    for (let tries = 0; tries < 50 && !reply; tries++) {
      const count = n.readBatch(fd, rx, 2048, offs, lens);
      for (let i = 0; i < count; i++) {
        const f = rx.subarray(offs[i], (offs[i] as number) + (lens[i] as number));
        if (f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 2) reply = Buffer.from(f);
      }
      if (!reply && count === 0) await ready(fd, n.READABLE);
    }
    assert.ok(reply, 'no ARP reply read from the TAP');
    assert.equal(reply.subarray(0, 6).toString('hex'), '020000000002');
    assert.equal(reply.subarray(28, 32).toString('hex'), '0a4d0001');
  });
});

describe('batched frame I/O', () => {
  test('readBatch packs frames 8-byte aligned and stops when less than maxLen bytes remain', () => {
    const [a, b] = n.socketpair(n.SOCK_DGRAM);
    own(a);
    own(b);
    const out = Buffer.alloc(4090, 0x5a);
    const errs = new Int32Array(2);
    assert.equal(n.writeBatch(a, out, Uint32Array.of(0, 0, 0), Uint32Array.of(10, 13, 4090), 0, 3, null, errs), 3);
    assert.equal(errs[0], 0);
    const offs = new Uint32Array(8);
    const lens = new Uint32Array(8);
    // Room for the two small frames (at 0 and 16), then 8192-32 bytes left: the 4090-byte one fits too.
    assert.equal(n.readBatch(b, Buffer.alloc(8192), 4090, offs, lens), 3);
    assert.deepEqual([...offs.subarray(0, 3)], [0, 16, 32]);
    assert.deepEqual([...lens.subarray(0, 3)], [10, 13, 4090]);
    // A buffer with room for exactly one maxLen read takes one frame and leaves the rest queued.
    n.writeBatch(a, out, Uint32Array.of(0, 0), Uint32Array.of(4090, 4090), 0, 2, null, errs);
    assert.equal(n.readBatch(b, Buffer.alloc(4095), 4090, offs, lens), 1);
    assert.equal(n.readBatch(b, Buffer.alloc(4095), 4090, offs, lens), 1);
    assert.equal(n.readBatch(b, Buffer.alloc(4095), 4090, offs, lens), 0);
  });

  test('writeBatch writes the prefix before each frame, and refuses a frame outside the buffer', () => {
    const [a, b] = n.socketpair(n.SOCK_DGRAM);
    own(a);
    own(b);
    const errs = new Int32Array(2);
    const prefix = Buffer.from('hdr:');
    assert.equal(n.writeBatch(a, Buffer.from('xy'), Uint32Array.of(0, 1), Uint32Array.of(1, 1), 0, 2, prefix, errs), 2);
    const rx = Buffer.alloc(64);
    const offs = new Uint32Array(4);
    const lens = new Uint32Array(4);
    assert.equal(n.readBatch(b, rx, 16, offs, lens), 2);
    assert.equal(rx.toString('latin1', 0, 5), 'hdr:x');
    assert.equal(rx.toString('latin1', 8, 13), 'hdr:y');
    assert.throws(() => n.writeBatch(a, Buffer.alloc(4), Uint32Array.of(2), Uint32Array.of(4), 0, 1, null, errs), {
      code: 'ERR_OUT_OF_RANGE',
    });
  });

  test('streamWrite gathers two ranges into one write, returns 0 when the socket is full and -errno for a closed peer', () => {
    const [a, b] = n.socketpair(n.SOCK_STREAM);
    own(a);
    assert.equal(n.streamWrite(a, Buffer.from('..hdr'), 2, 3, Buffer.from('frame!'), 0, 5), 8);
    const rx = Buffer.alloc(64);
    assert.equal(readSync(b, rx, 0, 64, null), 8);
    assert.equal(rx.toString('latin1', 0, 8), 'hdrframe');
    let total = 0;
    const chunk = Buffer.alloc(65536);
    for (let w = 1; w > 0; total += w) w = n.streamWrite(a, chunk, 0, chunk.length, chunk, 0, 0);
    assert.ok(total > 0);
    assert.equal(n.streamWrite(a, chunk, 0, 1, chunk, 0, 0), 0);
    closeSync(b);
    assert.equal(n.streamWrite(a, chunk, 0, 1, chunk, 0, 0), -32); // EPIPE (Node ignores SIGPIPE)
    assert.throws(() => n.streamWrite(a, chunk, 65536, 1, chunk, 0, 0), { code: 'ERR_OUT_OF_RANGE' });
  });
});

describe('eventfd', () => {
  test('counts writes, reads and resets the counter, and reads null when it is zero', () => {
    const fd = own(n.eventfd(0, false));
    assert.equal(n.eventfdRead(fd), null);
    assert.equal(n.eventfdWrite(fd, 3), true);
    assert.equal(n.eventfdWrite(fd, 4), true);
    assert.equal(n.eventfdRead(fd), 7);
    assert.equal(n.eventfdRead(fd), null);
  });

  test('in semaphore mode each read takes one', () => {
    const fd = own(n.eventfd(2, true));
    assert.equal(n.eventfdRead(fd), 1);
    assert.equal(n.eventfdRead(fd), 1);
    assert.equal(n.eventfdRead(fd), null);
  });

  test('a poller reports an eventfd readable after a write, and not after stop()', async () => {
    const fd = own(n.eventfd(0, false));
    let calls = 0;
    const p = new n.Poller(fd, () => {
      calls++;
    });
    pollers.push(p);
    p.start(n.READABLE);
    p.stop();
    n.eventfdWrite(fd, 1);
    await new Promise((r) => setImmediate(r));
    assert.equal(calls, 0);
    const ev = await ready(fd, n.READABLE);
    assert.equal(ev.status, 0);
    assert.ok(ev.events & n.READABLE);
    p.close();
    p.close();
  });
});

describe('mmap', () => {
  test('maps a file shared and writable: bytes written through the ArrayBuffer are in the file', () => {
    const path = join(dir, 'map');
    writeFileSync(path, Buffer.alloc(8192));
    const fd = own(openSync(path, 'r+'));
    const ab = n.mmap(fd, 8192, 4096, true);
    assert.equal(ab.byteLength, 8192);
    new Uint8Array(ab).set([1, 2, 3], 10);
    const back = Buffer.alloc(3);
    readSync(fd, back, 0, 3, 4096 + 10);
    assert.deepEqual([...back], [1, 2, 3]);
    n.munmap(ab);
    assert.equal(ab.byteLength, 0);
    n.munmap(ab); // idempotent
  });

  test('two mappings of one memfd share memory', () => {
    const fd = own(n.memfdCreate('vmlink-test'));
    ftruncateSync(fd, 4096);
    const a = new Uint32Array(n.mmap(fd, 4096, 0, true));
    const b = new Uint32Array(n.mmap(fd, 4096, 0, false));
    a[5] = 0xdeadbeef;
    assert.equal(b[5], 0xdeadbeef);
    n.munmap(a.buffer as ArrayBuffer);
    n.munmap(b.buffer as ArrayBuffer);
  });

  test('mapping a bad fd fails with EBADF from mmap, and munmap refuses a foreign ArrayBuffer', () => {
    const err = catchErr(() => n.mmap(987654, 4096, 0, false));
    assert.ok(isSyscallError(err, 'EBADF'));
    assert.equal(err.syscall, 'mmap');
    assert.throws(() => n.munmap(new ArrayBuffer(8)), { code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('the SIGBUS guard of mappings', () => {
  test('an access beyond the end of a shrunk file reads zeros, counts one fault per page and wakes the guard eventfd', async () => {
    const fd = own(n.memfdCreate('vmlink-guard', false));
    ftruncateSync(fd, 4 * 4096);
    const ab = n.mmap(fd, 4 * 4096, 0, true);
    const b = new Uint8Array(ab);
    b.fill(9);
    ftruncateSync(fd, 4096);
    const woke = ready(n.guardFd(), n.READABLE);
    assert.equal(b[4095], 9);
    assert.equal(b[4096], 0);
    assert.equal(b[4097], 0, 'the page was replaced: no second fault');
    b[3 * 4096] = 1;
    assert.equal(n.mmapFaults(ab), 2);
    assert.equal((await woke).status, 0);
    n.eventfdRead(n.guardFd());
    n.munmap(ab);
    assert.equal(n.mmapFaults(ab), 0);
  });

  test('reports the seals of a memfd and its size; a file that cannot carry seals reports -1', () => {
    const fd = own(n.memfdCreate('vmlink-seals', true));
    ftruncateSync(fd, 8192);
    assert.deepEqual(n.fdInfo(fd), { size: 8192, regular: true, seals: 0 });
    n.addSeals(fd, n.F_SEAL_SHRINK);
    assert.equal(n.fdInfo(fd).seals, n.F_SEAL_SHRINK);
    assert.throws(() => ftruncateSync(fd, 4096), { code: 'EPERM' });
    const plain = own(openSync(join(dir, 'plain'), 'w+'));
    assert.equal(n.fdInfo(plain).seals, -1);
  });

  test('a SIGBUS that is not a guest-memory fault still kills the process with SIGBUS', async () => {
    const index = fileURLToPath(new URL('../../src/native/index.js', import.meta.url));
    const code = `import(${JSON.stringify(index)}).then((m) => { m.native(); process.kill(process.pid, 'SIGBUS'); setTimeout(() => {}, 5000); });`;
    const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
    const [exitCode, signal] = await new Promise<[number | null, string | null]>((resolve) =>
      child.once('exit', (c, s) => resolve([c, s])),
    );
    assert.equal(exitCode, null);
    assert.equal(signal, 'SIGBUS');
  });
});

describe('SCM_RIGHTS', () => {
  test('passes an eventfd across a socketpair: the received fd is the same eventfd', () => {
    const [a, b] = n.socketpair(n.SOCK_STREAM);
    own(a);
    own(b);
    const efd = own(n.eventfd(0, false));
    assert.equal(n.recvFds(b, Buffer.alloc(16)), null);
    assert.equal(n.sendFds(a, Buffer.from('hi'), [efd]), 2);
    const got = n.recvFds(b, Buffer.alloc(16));
    assert.ok(got);
    assert.equal(got.bytes, 2);
    assert.equal(got.fds.length, 1);
    assert.equal(got.truncated, false);
    const copy = own(got.fds[0] as number);
    assert.notEqual(copy, efd);
    n.eventfdWrite(efd, 5);
    assert.equal(n.eventfdRead(copy), 5);
  });

  test('reports end of stream as 0 bytes', () => {
    const [a, b] = n.socketpair(n.SOCK_STREAM);
    own(b);
    closeSync(a);
    assert.deepEqual(n.recvFds(b, Buffer.alloc(4)), { bytes: 0, fds: [], truncated: false });
  });
});

describe('unix datagrams', () => {
  test('sends a batch with sendmmsg and receives it with recvmmsg, with the sender address and truncation', async () => {
    const rx = own(n.socket(n.SOCK_DGRAM));
    const tx = own(n.socket(n.SOCK_DGRAM));
    const rxPath = join(dir, 'rx.sock');
    const txPath = join(dir, 'tx.sock');
    n.bind(rx, rxPath);
    n.bind(tx, txPath);
    const out = Buffer.alloc(600);
    out.write('one', 0);
    out.write('second', 100);
    out.fill(7, 200, 600);
    const readable = ready(rx, n.READABLE);
    assert.equal(n.sendBatch(tx, out, Uint32Array.of(0, 100, 200), Uint32Array.of(3, 6, 400), 0, 3, rxPath), 3);
    assert.equal((await readable).status, 0);
    const buf = Buffer.alloc(256 * 4);
    const lens = new Uint32Array(4);
    const addrs: string[] = [];
    assert.equal(n.recvBatch(rx, buf, 256, lens, addrs), 3);
    assert.deepEqual([...lens.subarray(0, 3)], [3, 6, 400]); // 400 > slot: truncated
    assert.equal(buf.toString('latin1', 0, 3), 'one');
    assert.equal(buf.toString('latin1', 256, 262), 'second');
    assert.deepEqual(addrs, [txPath, txPath, txPath]);
    assert.equal(n.recvBatch(rx, buf, 256, lens, null), 0);
  });

  test('sends to the connected peer when no destination is given, and a poller reports the socket writable', async () => {
    const [a, b] = n.socketpair(n.SOCK_DGRAM);
    own(a);
    own(b);
    const ev = await ready(a, n.WRITABLE);
    assert.ok(ev.events & n.WRITABLE);
    assert.equal(n.sendBatch(a, Buffer.from('xy'), Uint32Array.of(0, 1), Uint32Array.of(1, 1), 0, 2, null), 2);
    const lens = new Uint32Array(8);
    const buf = Buffer.alloc(64 * 8);
    assert.equal(n.recvBatch(b, buf, 64, lens, null), 2);
    assert.equal(buf[0], 0x78);
    assert.equal(buf[64], 0x79);
  });

  test('sending to a path nobody bound fails with ENOENT naming the path', () => {
    const tx = own(n.socket(n.SOCK_DGRAM));
    const err = catchErr(() =>
      n.sendBatch(tx, Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), 0, 1, join(dir, 'void')),
    );
    assert.ok(isSyscallError(err, 'ENOENT'));
    assert.equal(err.syscall, 'sendmmsg');
  });
});

describe('UDP', () => {
  test('udpOpen binds a numeric address (port 0: the kernel picks), and batches move with a sockaddrInet destination', () => {
    const a = n.udpOpen('127.0.0.1', 0);
    const b = n.udpOpen('127.0.0.1', 0);
    own(a.fd);
    own(b.fd);
    assert.ok(a.port > 0 && b.port > 0 && a.port !== b.port);
    const toB = n.sockaddrInet('127.0.0.1', b.port, false);
    assert.equal(toB.toString('hex', 0, 4), `0200${b.port.toString(16).padStart(4, '0')}`); // AF_INET, port big-endian
    assert.equal(n.sendBatch(a.fd, Buffer.from('xyz'), Uint32Array.of(0, 1, 2), Uint32Array.of(1, 1, 1), 0, 3, toB), 3);
    const c = own(n.udpOpen('127.0.0.1', 0).fd);
    n.sendBatch(c, Buffer.from('s'), Uint32Array.of(0), Uint32Array.of(1), 0, 1, toB);
    const strangers = new Uint8Array(8);
    const buf = Buffer.alloc(64 * 8);
    const lens = new Uint32Array(8);
    assert.equal(n.recvBatchFrom(b.fd, buf, 64, lens, n.sockaddrInet('127.0.0.1', a.port, false), strangers), 4);
    assert.deepEqual([...strangers.subarray(0, 4)], [0, 0, 0, 1], 'the fourth came from another port');
    assert.equal(buf.toString('latin1', 128, 129), 'z');
  });

  test('a dual-stack IPv6 socket takes an IPv4 peer as ::ffff:a.b.c.d, and a name is refused with EINVAL', () => {
    const six = n.udpOpen('::', 0);
    own(six.fd);
    const four = n.udpOpen('127.0.0.1', 0);
    own(four.fd);
    const mapped = n.sockaddrInet('127.0.0.1', four.port, true);
    assert.equal(mapped.length, 28);
    assert.equal(mapped.toString('hex', 8, 24), '00000000000000000000ffff7f000001');
    n.sendBatch(
      four.fd,
      Buffer.from('q'),
      Uint32Array.of(0),
      Uint32Array.of(1),
      0,
      1,
      n.sockaddrInet('127.0.0.1', six.port, false),
    );
    const strangers = new Uint8Array(2);
    let got = 0;
    for (let i = 0; i < 100 && got === 0; i++)
      got = n.recvBatchFrom(six.fd, Buffer.alloc(128), 64, new Uint32Array(2), mapped, strangers);
    assert.equal(got, 1);
    assert.equal(strangers[0], 0);
    assert.ok(
      isSyscallError(
        catchErr(() => n.udpOpen('localhost', 0)),
        'EINVAL',
      ),
    );
    assert.ok(
      isSyscallError(
        catchErr(() => n.sockaddrInet('::1', 1, false)),
        'EINVAL',
      ),
    );
  });

  test('binding an address in use fails with EADDRINUSE', () => {
    const a = n.udpOpen('127.0.0.1', 0);
    own(a.fd);
    const err = catchErr(() => n.udpOpen('127.0.0.1', a.port));
    assert.ok(isSyscallError(err, 'EADDRINUSE'));
    assert.equal(err.syscall, 'bind');
  });
});

describe('inetSum', () => {
  test('is the RFC 1071 sum, folded: the worked example of §3, an odd last byte, all zeros', () => {
    const ex = Buffer.from('0001f203f4f5f6f7', 'hex');
    assert.equal(n.inetSum(ex, 0, 8), 0xddf2);
    assert.equal(n.inetSum(Buffer.from('ab', 'hex'), 0, 1), 0xab00);
    assert.equal(n.inetSum(Buffer.alloc(100), 0, 100), 0);
    assert.equal(n.inetSum(Buffer.alloc(2, 0xff), 0, 2), 0xffff);
    assert.equal(catchErr(() => n.inetSum(ex, 4, 9)).code, 'ERR_OUT_OF_RANGE');
    assert.equal(catchErr(() => n.inetSum(ex, 5, 4)).code, 'ERR_OUT_OF_RANGE');
  });

  test('folds to what the JavaScript sum folds to, for any offset and length (seeded fuzz)', () => {
    const rnd = prng(1071);
    const fold = (x: number) => {
      let s = x;
      while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
      return s;
    };
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(1 + Math.floor(rnd() * 3000));
      const dense = rnd() < 0.3;
      for (let j = 0; j < b.length; j++) b[j] = dense ? 0xff : Math.floor(rnd() * 256);
      const from = Math.floor(rnd() * b.length);
      const to = from + Math.floor(rnd() * (b.length - from + 1));
      let js = 0;
      for (let k = from; k < to; k += 2) js += ((b[k] as number) << 8) | (k + 1 < to ? (b[k + 1] as number) : 0);
      assert.equal(n.inetSum(b, from, to), fold(js), `${from}..${to} of ${b.length}`);
    }
  });
});

describe('UDP batches with many peers (udpRecvBatch, udpSendBatch, udpOffloads)', () => {
  /** Receives until `want` datagrams or buffers arrived (loopback delivers at once; bounded retries). */
  const recvAll = (fd: number, slot: number, want: number, gso: Uint32Array | null) => {
    const buf = Buffer.alloc(slot * 16);
    const lens = new Uint32Array(16);
    const from = Buffer.alloc(16 * 20);
    let got = 0;
    for (let i = 0; i < 1000 && got < want; i++)
      got += n.udpRecvBatch(fd, buf.subarray(got * slot), slot, lens.subarray(got), from.subarray(got * 20), gso);
    return { got, buf, lens, from };
  };
  /** A destination table of sockaddrInet entries, 28 bytes each. */
  const table = (...sa: Buffer[]): Buffer => {
    const t = Buffer.alloc(28 * sa.length);
    sa.forEach((s, i) => {
      s.copy(t, i * 28);
    });
    return t;
  };

  test('udpRecvBatch reports each datagram length and sender (IPv4, IPv6 and IPv4 on a dual-stack socket)', () => {
    const six = n.udpOpen('::', 0);
    own(six.fd);
    const a4 = n.udpOpen('127.0.0.1', 0);
    own(a4.fd);
    const a6 = n.udpOpen('::1', 0);
    own(a6.fd);
    n.sendBatch(
      a4.fd,
      Buffer.from('four'),
      Uint32Array.of(0),
      Uint32Array.of(4),
      0,
      1,
      n.sockaddrInet('127.0.0.1', six.port, false),
    );
    n.sendBatch(
      a6.fd,
      Buffer.from('six!!!'),
      Uint32Array.of(0),
      Uint32Array.of(6),
      0,
      1,
      n.sockaddrInet('::1', six.port, true),
    );
    const r = recvAll(six.fd, 64, 2, null);
    assert.equal(r.got, 2);
    assert.deepEqual([...r.lens.subarray(0, 2)], [4, 6]);
    assert.equal(
      r.from.toString('hex', 0, 20),
      `00000000000000000000ffff7f000001${a4.port.toString(16).padStart(4, '0')}0400`,
    );
    assert.equal(
      r.from.toString('hex', 20, 40),
      `00000000000000000000000000000001${a6.port.toString(16).padStart(4, '0')}0600`,
    );
    assert.equal(r.buf.toString('latin1', 64, 70), 'six!!!');
  });

  test('udpSendBatch sends each datagram to its own destination entry, and a longer datagram than the slot is reported whole', () => {
    const tx = own(n.udpOpen('127.0.0.1', 0).fd);
    const b = n.udpOpen('127.0.0.1', 0);
    own(b.fd);
    const c = n.udpOpen('127.0.0.1', 0);
    own(c.fd);
    const t = table(n.sockaddrInet('127.0.0.1', b.port, false), n.sockaddrInet('127.0.0.1', c.port, false));
    const data = Buffer.from('abbcccdddd');
    const sent = n.udpSendBatch(
      tx,
      data,
      Uint32Array.of(0, 1, 3, 6),
      Uint32Array.of(1, 2, 3, 4),
      Uint16Array.of(0, 1, 0, 1),
      t,
      0,
      4,
      1,
    );
    assert.equal(sent, 4);
    const rb = recvAll(b.fd, 64, 2, null);
    const rc = recvAll(c.fd, 2, 2, null);
    assert.deepEqual([rb.got, rc.got], [2, 2]);
    assert.equal(rb.buf.toString('latin1', 0, 1) + rb.buf.toString('latin1', 64, 67), 'accc');
    assert.deepEqual([...rc.lens.subarray(0, 2)], [2, 4], 'lengths are full lengths even when the slot was shorter');
    assert.equal(
      catchErr(() => n.udpSendBatch(tx, data, Uint32Array.of(0), Uint32Array.of(1), Uint16Array.of(2), t, 0, 1, 1))
        .code,
      'ERR_OUT_OF_RANGE',
    );
    assert.equal(
      catchErr(() => n.udpSendBatch(tx, data, Uint32Array.of(8), Uint32Array.of(9), Uint16Array.of(0), t, 0, 1, 1))
        .code,
      'ERR_OUT_OF_RANGE',
    );
  });

  test('with GSO a run of equal datagrams (the last shorter) leaves as one message: separate datagrams without GRO, one buffer and its size with GRO', (t) => {
    const tx = own(n.udpOpen('127.0.0.1', 0).fd);
    if ((n.udpOffloads(tx, false) & 1) === 0) return t.skip('this kernel has no UDP_SEGMENT');
    const plain = n.udpOpen('127.0.0.1', 0);
    own(plain.fd);
    const gro = n.udpOpen('127.0.0.1', 0);
    own(gro.fd);
    assert.equal(n.udpOffloads(gro.fd, true) & 2, 2);
    const data = Buffer.alloc(1000 * 3 + 400);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    const offs = Uint32Array.of(0, 1000, 2000, 3000);
    const lens = Uint32Array.of(1000, 1000, 1000, 400);
    for (const to of [plain.port, gro.port]) {
      const tb = table(n.sockaddrInet('127.0.0.1', to, false));
      assert.equal(n.udpSendBatch(tx, data, offs, lens, new Uint16Array(4), tb, 0, 4, 64), 4);
    }
    const p = recvAll(plain.fd, 2048, 4, new Uint32Array(16));
    assert.equal(p.got, 4);
    assert.deepEqual([...p.lens.subarray(0, 4)], [1000, 1000, 1000, 400]);
    assert.ok(p.buf.subarray(2048 * 3, 2048 * 3 + 400).equals(data.subarray(3000)));
    const gso = new Uint32Array(16);
    const g = recvAll(gro.fd, 65536, 1, gso);
    assert.equal(g.got, 1, 'one buffer');
    assert.equal(g.lens[0], 3400);
    assert.equal(gso[0], 1000);
    assert.ok(g.buf.subarray(0, 3400).equals(data));
  });

  test('GSO runs stop at another destination, a gap in the buffer or a longer datagram', (t) => {
    const tx = own(n.udpOpen('127.0.0.1', 0).fd);
    if ((n.udpOffloads(tx, false) & 1) === 0) return t.skip('this kernel has no UDP_SEGMENT');
    const rx = n.udpOpen('127.0.0.1', 0);
    own(rx.fd);
    n.udpOffloads(rx.fd, true);
    const tb = table(n.sockaddrInet('127.0.0.1', rx.port, false), n.sockaddrInet('127.0.0.1', rx.port, false));
    const data = Buffer.alloc(1000, 7);
    // [0,1] one run; 2 has another entry; 3 lies after a gap; 4 is longer than 3.
    const offs = Uint32Array.of(0, 100, 200, 400, 500);
    const lens = Uint32Array.of(100, 100, 100, 100, 200);
    assert.equal(n.udpSendBatch(tx, data, offs, lens, Uint16Array.of(0, 0, 1, 1, 1), tb, 0, 5, 64), 5);
    const gso = new Uint32Array(16);
    const r = recvAll(rx.fd, 65536, 4, gso);
    assert.equal(r.got, 4);
    assert.deepEqual([...r.lens.subarray(0, 4)], [200, 100, 100, 200]);
    assert.deepEqual([...gso.subarray(0, 4)], [100, 0, 0, 0]);
  });
});

describe('block files', () => {
  const file = (size: number): number => {
    const path = join(dir, `blk-${Math.random().toString(36).slice(2)}.img`);
    const fd = own(openSync(path, 'w+'));
    ftruncateSync(fd, size);
    return fd;
  };

  test('preadNoWait reads what the page cache holds and returns 0 at the end of the file', () => {
    const fd = file(8192);
    writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, 4096);
    const buf = Buffer.alloc(4096);
    assert.equal(n.preadNoWait(fd, buf, 0, 4096, 4096), 4096);
    assert.ok(buf.every((b) => b === 0xab));
    assert.equal(n.preadNoWait(fd, buf, 0, 4096, 8192), 0);
    assert.equal(catchErr(() => n.preadNoWait(fd, buf, 1, 4096, 0)).code, 'ERR_OUT_OF_RANGE');
    assert.equal(catchErr(() => n.preadNoWait(fd, buf, 0, 16, -1)).code, 'ERR_OUT_OF_RANGE');
    assert.equal(catchErr(() => n.preadNoWait(-1, buf, 0, 16, 0)).code, 'EBADF');
  });

  test('pwriteNoWait writes, or answers -1/-2 when it would block or the file system cannot', () => {
    const fd = file(8192);
    const r = n.pwriteNoWait(fd, Buffer.alloc(512, 1), 0, 512, 0);
    assert.ok(r === 512 || r === -1 || r === -2, String(r));
    if (r === 512) {
      const back = Buffer.alloc(512);
      readSync(fd, back, 0, 512, 0);
      assert.ok(back.every((b) => b === 1));
    }
  });

  test('fallocate punches a hole that SEEK_DATA and SEEK_HOLE then report', () => {
    const fd = file(1 << 20);
    writeSync(fd, Buffer.alloc(1 << 20, 7), 0, 1 << 20, 0);
    assert.equal(n.seekData(fd, 0), 0);
    assert.equal(n.seekHole(fd, 0), 1 << 20);
    n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, 256 << 10, 256 << 10);
    assert.equal(n.seekHole(fd, 0), 256 << 10);
    assert.equal(n.seekData(fd, 256 << 10), 512 << 10);
    const back = Buffer.alloc(4096, 1);
    readSync(fd, back, 0, 4096, 300 << 10);
    assert.ok(
      back.every((b) => b === 0),
      'a punched hole reads as zeroes',
    );
    n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, 512 << 10, 512 << 10);
    assert.equal(n.seekData(fd, 256 << 10), -1, 'only a hole follows: ENXIO gives -1');
    assert.equal(catchErr(() => n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE, 0, 4096)).code, 'EOPNOTSUPP');
    assert.equal(catchErr(() => n.seekData(-1, 0)).syscall, 'lseek SEEK_DATA');
  });

  test('fallocate ZERO_RANGE zeroes in place', () => {
    const fd = file(65536);
    writeSync(fd, Buffer.alloc(65536, 9), 0, 65536, 0);
    n.fallocate(fd, n.FALLOC_FL_ZERO_RANGE | n.FALLOC_FL_KEEP_SIZE, 4096, 8192);
    const back = Buffer.alloc(16384);
    readSync(fd, back, 0, 16384, 0);
    assert.ok(back.subarray(0, 4096).every((b) => b === 9));
    assert.ok(back.subarray(4096, 12288).every((b) => b === 0));
    assert.ok(back.subarray(12288).every((b) => b === 9));
  });

  test('fileBatch runs a batch of pwrites then preads on the pool and reports bytes and errnos', async () => {
    const fd = file(1 << 20);
    const bufs = [Buffer.alloc(4096, 1), Buffer.alloc(100, 2), Buffer.alloc(65536, 3)];
    const pos = Float64Array.of(0, 8192, 500_000);
    const res = new Float64Array(3);
    await new Promise<void>((resolve) => n.fileBatch(fd, true, bufs, pos, res, () => resolve()));
    assert.deepEqual([...res], [4096, 100, 65536]);
    const back = [Buffer.alloc(4096), Buffer.alloc(100), Buffer.alloc(100)];
    await new Promise<void>((resolve) =>
      n.fileBatch(fd, false, back, Float64Array.of(0, 8192, (1 << 20) - 40), res, () => resolve()),
    );
    assert.deepEqual([...res], [4096, 100, 40], 'a read at the end of the file stops short');
    assert.ok(back[0]?.every((b) => b === 1) && back[1]?.every((b) => b === 2));
    await new Promise<void>((resolve) =>
      n.fileBatch(-1, false, [Buffer.alloc(1)], Float64Array.of(0), res, () => resolve()),
    );
    assert.equal(res[0], -9, 'EBADF as -errno');
    assert.equal(
      catchErr(() => n.fileBatch(fd, true, [], new Float64Array(1), res, () => {})).code,
      'ERR_OUT_OF_RANGE',
    );
    assert.equal(
      catchErr(() =>
        n.fileBatch(fd, true, [Buffer.alloc(1)], new Float64Array(1), new Uint32Array(1) as never, () => {}),
      ).code,
      'ERR_INVALID_ARG_TYPE',
    );
  });
});

describe('under valgrind', () => {
  test('a script using every addon function runs without memory errors or definite leaks', async () => {
    const script = fileURLToPath(new URL('../helpers/native-exercise.js', import.meta.url));
    const supp = fileURLToPath(new URL('../../../test/helpers/node-valgrind.supp', import.meta.url));
    const args = [
      '--error-exitcode=99',
      '--leak-check=full',
      '--errors-for-leak-kinds=definite',
      `--suppressions=${supp}`,
      process.execPath,
      '--expose-gc',
      script,
    ];
    const child = spawn('valgrind', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.match(out, /native-exercise: ok/, out.slice(-4000));
    assert.equal(code, 0, out.slice(-4000));
  });
});

function catchErr(fn: () => unknown): Error & Partial<{ code: string; errno: number; syscall: string; path: string }> {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected an exception');
}
