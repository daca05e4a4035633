/**
 * The native addon's shared memory: mmap of files and memfds, the SIGBUS guard of mappings, and
 * fds passed with SCM_RIGHTS.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isSyscallError } from '../../src/native/index.js';
import { catchErr, nativeFixture } from '../helpers/native-fixture.js';

const { n, dir, own, ready } = nativeFixture();

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
