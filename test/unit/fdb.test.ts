import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Fdb, LEARN_FULL, LEARN_NEW } from '../../src/net/switch/fdb.js';
import { prng } from '../helpers/prng.js';

const TWO32 = 0x1_0000_0000;
const hiOf = (mac: number) => Math.floor(mac / TWO32);
const loOf = (mac: number) => mac % TWO32;

describe('Fdb', () => {
  test('learns a MAC, finds it, and reports a refresh with the same port', () => {
    const f = new Fdb();
    const mac = 0x5254_0000_0001;
    assert.equal(f.lookup(hiOf(mac), loOf(mac)), -1);
    assert.equal(f.learn(hiOf(mac), loOf(mac), 3, 1000), LEARN_NEW);
    assert.equal(f.lookup(hiOf(mac), loOf(mac)), 3);
    assert.equal(f.learn(hiOf(mac), loOf(mac), 3, 2000), 3);
    assert.equal(f.size, 1);
    assert.deepEqual(f.entries(), [{ mac, port: 3, seen: 2000, pinned: false }]);
  });

  test('moves a MAC to its new port at once and returns the old port', () => {
    const f = new Fdb();
    f.learn(0x5254, 1, 1, 0);
    assert.equal(f.learn(0x5254, 1, 2, 5), 1);
    assert.equal(f.lookup(0x5254, 1), 2);
  });

  test('keeps MACs whose low 32 bits have the top bit set apart from others', () => {
    const f = new Fdb();
    f.learn(0xffff, 0xffff_ffff, 7, 0);
    f.learn(0xffff, 0x7fff_ffff, 8, 0);
    assert.equal(f.lookup(0xffff, 0xffff_ffff), 7);
    assert.equal(f.lookup(0xffff, 0x7fff_ffff), 8);
    assert.equal(f.entries().find((e) => e.port === 7)?.mac, 0xffff_ffff_ffff);
  });

  test('grows past its first capacity and keeps every entry', () => {
    const f = new Fdb();
    for (let i = 0; i < 1000; i++) assert.equal(f.learn(0x5254, i * 7919, i, i), LEARN_NEW);
    assert.equal(f.size, 1000);
    for (let i = 0; i < 1000; i++) assert.equal(f.lookup(0x5254, i * 7919), i);
  });

  test('refuses a new MAC when full but still refreshes known ones', () => {
    const f = new Fdb(2);
    f.learn(1, 1, 1, 0);
    f.learn(1, 2, 1, 0);
    assert.equal(f.learn(1, 3, 1, 0), LEARN_FULL);
    assert.equal(f.lookup(1, 3), -1);
    assert.equal(f.learn(1, 2, 2, 9), 1);
  });

  test('sweep ages out entries older than the limit and reports their ports', () => {
    const f = new Fdb();
    f.learn(1, 1, 1, 0);
    f.learn(1, 2, 2, 500);
    f.learn(1, 3, 3, 1000);
    const gone: number[] = [];
    assert.equal(
      f.sweep(1000, 499, (p) => gone.push(p)),
      2,
    );
    assert.deepEqual(gone.sort(), [1, 2]);
    assert.equal(f.lookup(1, 3), 3);
    assert.equal(f.size, 1);
  });

  test('sweep by port removes every entry of that port only', () => {
    const f = new Fdb();
    for (let i = 0; i < 300; i++) f.learn(2, i, i % 3, 0);
    assert.equal(f.sweep(0, 0, undefined, 1), 100);
    for (let i = 0; i < 300; i++) assert.equal(f.lookup(2, i), i % 3 === 1 ? -1 : i % 3);
  });

  test('forget removes one MAC and keeps probe chains intact', () => {
    const f = new Fdb();
    for (let i = 0; i < 40; i++) f.learn(3, i, i, 0);
    for (let i = 0; i < 40; i += 2) assert.equal(f.forget(3, i), i);
    assert.equal(f.forget(3, 0), -1);
    for (let i = 0; i < 40; i++) assert.equal(f.lookup(3, i), i % 2 ? i : -1);
  });

  test('clear empties the table', () => {
    const f = new Fdb();
    f.learn(1, 1, 1, 0);
    f.clear();
    assert.equal(f.size, 0);
    assert.equal(f.lookup(1, 1), -1);
  });

  test('keeps pinned entries through aging, and through a sweep of their port unless asked', () => {
    const f = new Fdb();
    f.pin(1, 1, 4, 0);
    f.learn(1, 2, 4, 0);
    const gone: string[] = [];
    assert.equal(
      f.sweep(10_000, 1, (p, hi, lo, pinned) => gone.push(`${p} ${hi}:${lo} ${pinned}`)),
      1,
    );
    assert.deepEqual(gone, ['4 1:2 false']);
    assert.equal(f.sweep(10_000, 0, undefined, 4), 0);
    assert.equal(f.lookup(1, 1), 4);
    assert.equal(
      f.sweep(10_000, 0, (p, hi, lo, pinned) => gone.push(`${p} ${hi}:${lo} ${pinned}`), 4, true),
      1,
    );
    assert.deepEqual(gone, ['4 1:2 false', '4 1:1 true']);
  });

  test('a learn turns a pinned entry into a learned one; unpin removes only pinned entries', () => {
    const f = new Fdb();
    assert.equal(f.pin(1, 1, 4, 0), LEARN_NEW);
    assert.equal(f.pinned(1, 1), true);
    assert.equal(f.learn(1, 1, 5, 0), 4);
    assert.equal(f.pinned(1, 1), false);
    assert.equal(f.unpin(1, 1), -1);
    assert.equal(f.lookup(1, 1), 5);
    assert.equal(f.pin(1, 1, 6, 0), 5);
    assert.equal(f.unpin(1, 1), 6);
    assert.equal(f.lookup(1, 1), -1);
    assert.equal(f.pinned(1, 1), false);
  });

  test('random operations agree with a Map model (seeded)', () => {
    const rand = prng(7);
    const int = (n: number) => Math.floor(rand() * n);
    const f = new Fdb(500);
    const model = new Map<number, { port: number; seen: number; pinned: boolean }>();
    let now = 0;
    for (let op = 0; op < 20_000; op++) {
      now += int(3);
      // A small MAC space forces collisions, moves and refreshes.
      const mac = 0x5254_0000_0000 + int(700) * 0x0101_0101;
      const hi = hiOf(mac);
      const lo = loOf(mac);
      const r = rand();
      if (r < 0.6) {
        const port = int(8);
        const pinned = rand() < 0.2;
        const got = pinned ? f.pin(hi, lo, port, now) : f.learn(hi, lo, port, now);
        const prev = model.get(mac);
        if (prev) {
          assert.equal(got, prev.port);
          model.set(mac, { port, seen: now, pinned });
        } else if (model.size >= 500) {
          assert.equal(got, LEARN_FULL);
        } else {
          assert.equal(got, LEARN_NEW);
          model.set(mac, { port, seen: now, pinned });
        }
      } else if (r < 0.7) {
        const e = model.get(mac);
        assert.equal(f.unpin(hi, lo), e?.pinned ? e.port : -1);
        if (e?.pinned) model.delete(mac);
      } else if (r < 0.8) {
        assert.equal(f.forget(hi, lo), model.get(mac)?.port ?? -1);
        model.delete(mac);
      } else if (r < 0.85) {
        const maxAge = int(200);
        let expect = 0;
        for (const [m, e] of model)
          if (!e.pinned && now - e.seen > maxAge) {
            model.delete(m);
            expect++;
          }
        assert.equal(f.sweep(now, maxAge), expect);
      } else if (r < 0.87) {
        const port = int(8);
        const withPinned = rand() < 0.5;
        let expect = 0;
        for (const [m, e] of model)
          if (e.port === port && (withPinned || !e.pinned)) {
            model.delete(m);
            expect++;
          }
        assert.equal(f.sweep(now, 0, undefined, port, withPinned), expect);
      } else {
        assert.equal(f.lookup(hi, lo), model.get(mac)?.port ?? -1);
        assert.equal(f.pinned(hi, lo), model.get(mac)?.pinned ?? false);
      }
      assert.equal(f.size, model.size);
    }
    for (const [m, e] of model) assert.equal(f.lookup(hiOf(m), loOf(m)), e.port);
    assert.equal(f.entries().filter((e) => e.pinned).length, [...model.values()].filter((e) => e.pinned).length);
  });
});
