/**
 * The native addon's datagram sockets: unix datagrams, UDP (IPv4 and dual-stack), batches with
 * many peers and GSO/GRO, and the Internet checksum.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isSyscallError } from '../../src/native/index.js';
import { catchErr, nativeFixture } from '../helpers/native-fixture.js';
import { prng } from '../helpers/prng.js';

const { n, dir, own, ready } = nativeFixture();

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
