/**
 * The VXLAN sending queue (vxlan-egress.ts) against a recording stand-in for
 * the addon: GSO falls back to one datagram per message when the kernel
 * refuses it, EAGAIN keeps the rest for POLLOUT, other errors drop one
 * datagram and go on, and a full queue refuses more.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NativeAddon } from '../../src/native/index.js';
import { type EgressCounters, VxlanEgress } from '../../src/net/overlay/vxlan-egress.js';

function sysErr(code: string): Error {
  return Object.assign(new Error(`${code}: test, sendmmsg`), { code, errno: -5, syscall: 'sendmmsg' });
}

/** A stand-in whose udpSendBatch follows `plan` (one entry per call) and records each call. */
function fakeAddon(plan: ((start: number, end: number, gso: number) => number)[]) {
  const calls: { start: number; end: number; gso: number; dests: number[] }[] = [];
  const n = {
    udpSendBatch(
      _fd: number,
      _buf: Uint8Array,
      _offs: Uint32Array,
      _lens: Uint32Array,
      dests: Uint16Array,
      _table: Uint8Array,
      start: number,
      end: number,
      gso: number,
    ): number {
      calls.push({ start, end, gso, dests: [...dests.subarray(start, end)] });
      const step = plan.shift();
      return step ? step(start, end, gso) : end;
    },
  } as unknown as NativeAddon;
  return { n, calls };
}

const counters = (): EgressCounters => ({ calls: 0, datagrams: 0, errors: 0, lastError: '' });

describe('VXLAN egress queue', () => {
  test('turns GSO off for good when the kernel refuses a GSO message with EIO or EINVAL, and sends the same datagrams again', () => {
    const { n, calls } = fakeAddon([
      () => {
        throw sysErr('EIO');
      },
    ]);
    const offs: unknown[] = [];
    const c = counters();
    const e = new VxlanEgress(
      n,
      3,
      50000,
      true,
      false,
      c,
      () => undefined,
      (err) => offs.push(err),
    );
    const f = Buffer.alloc(100, 1);
    for (let i = 0; i < 3; i++) assert.ok(e.push(i, 8, f, 0, 100) >= 0);
    assert.equal(e.flush(Buffer.alloc(28 * 3)), true);
    assert.deepEqual(
      calls.map((x) => [x.start, x.end, x.gso]),
      [
        [0, 3, 64],
        [0, 3, 1],
      ],
    );
    assert.deepEqual(calls[1]?.dests, [0, 1, 2]);
    assert.equal(e.gso, false);
    assert.equal(offs.length, 1);
    assert.deepEqual([c.datagrams, c.errors], [3, 0]);
  });

  test('keeps what EAGAIN left for POLLOUT, and drops one datagram per other error', () => {
    const { n, calls } = fakeAddon([
      (start) => start + 2, // two sent, then EAGAIN
      (start) => start, // nothing more now
      () => {
        throw sysErr('EMSGSIZE');
      },
    ]);
    const watch: boolean[] = [];
    const c = counters();
    const e = new VxlanEgress(
      n,
      3,
      50000,
      false,
      false,
      c,
      (on) => watch.push(on),
      () => undefined,
    );
    const f = Buffer.alloc(60, 2);
    for (let i = 0; i < 5; i++) e.push(0, 8, f, 0, 60);
    assert.equal(e.flush(Buffer.alloc(28)), false);
    assert.equal(e.queued, 3);
    assert.deepEqual(watch, [true]);
    // POLLOUT: the first of the rest fails with EMSGSIZE (dropped, counted), the other two go.
    assert.equal(e.flush(Buffer.alloc(28)), true);
    assert.deepEqual(watch, [true, false]);
    assert.deepEqual(
      calls.map((x) => [x.start, x.end]),
      [
        [0, 5],
        [2, 5],
        [2, 5],
        [3, 5],
      ],
    );
    assert.deepEqual([c.datagrams, c.errors], [4, 1]);
    assert.match(c.lastError, /EMSGSIZE/);
  });

  test('refuses a datagram when its queue holds 4096, and takes more once they are sent', () => {
    const { n } = fakeAddon([]);
    const e = new VxlanEgress(
      n,
      3,
      50000,
      false,
      false,
      counters(),
      () => undefined,
      () => undefined,
    );
    const f = Buffer.alloc(20);
    let taken = 0;
    while (e.push(0, 8, f, 0, 20) >= 0) taken++;
    assert.equal(taken, 4096);
    e.flush(Buffer.alloc(28));
    assert.ok(e.push(0, 8, f, 0, 20) >= 0);
  });
});
