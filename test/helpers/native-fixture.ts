/**
 * What the native addon tests share: the addon, a temp dir, and the fds and
 * pollers a test opens, all released in after() of the file that calls
 * {@link nativeFixture}.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { type NativeAddon, native, type Poller } from '../../src/native/index.js';

export interface NativeFixture {
  /** The loaded addon. */
  n: NativeAddon;
  /** A temp dir of this test file. */
  dir: string;
  /** Tracks an fd for after(); returns it. */
  own(fd: number): number;
  /** Tracks a poller for after(); returns it. */
  ownPoller(p: Poller): Poller;
  /** Resolves with the first readiness callback of `fd` for `events`. */
  ready(fd: number, events: number): Promise<{ status: number; events: number }>;
}

/** Loads the addon and makes a temp dir; registers the clean-up in after(). */
export function nativeFixture(): NativeFixture {
  const n = native();
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-native-'));
  const fds: number[] = [];
  const pollers: Poller[] = [];
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
  const own = (fd: number): number => {
    fds.push(fd);
    return fd;
  };
  const ownPoller = (p: Poller): Poller => {
    pollers.push(p);
    return p;
  };
  const ready = (fd: number, events: number): Promise<{ status: number; events: number }> =>
    new Promise((resolve) => {
      const p = new n.Poller(fd, (status, ev) => {
        p.close();
        resolve({ status, events: ev });
      });
      pollers.push(p);
      p.start(events);
    });
  return { n, dir, own, ownPoller, ready };
}

/** The exception `fn` throws (fails the test when it throws none). */
export function catchErr(
  fn: () => unknown,
): Error & Partial<{ code: string; errno: number; syscall: string; path: string }> {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected an exception');
}
