/**
 * The native addon (test/helpers/native-fixture.ts): its errors, TAP devices, batched frame I/O,
 * eventfds, and every function under valgrind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isSyscallError } from '../../src/native/index.js';
import { catchErr, nativeFixture } from '../helpers/native-fixture.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';

const { n, dir, own, ownPoller, ready } = nativeFixture();

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
    ownPoller(p);
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
