/**
 * The vhost-user harness of the Port compliance suite: each peer is a
 * {@link TestFrontend} (memfd memory, rings, eventfds) attached to a
 * `vhost-user` port that listens. Frames are datagram-like: `raw()` transmits
 * the bytes as one frame, an oversized frame is dropped and counted, and
 * `pause()` stops posting receive buffers so the port's backlog fills.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { portSchema } from '../../src/config/schema.js';
import type { Harness, Peer } from './port-peers.js';
import { TestFrontend } from './vhost-frontend.js';

class VhostPeer implements Peer {
  readonly #f: TestFrontend;
  readonly #q: Buffer[] = [];
  #paused = false;
  #closed: Promise<void> | undefined;
  #gone = false;

  constructor(f: TestFrontend) {
    this.#f = f;
  }

  send(frame: Buffer): void {
    this.#f.sendFrame(frame);
  }

  raw(bytes: Buffer): void {
    this.#f.sendFrame(bytes);
  }

  async next(): Promise<Buffer> {
    for (;;) {
      if (!this.#paused && !this.#gone) this.#q.push(...this.#f.receive());
      const b = this.#q.shift();
      if (b) return b;
      await sleep(2);
    }
  }

  get backlog(): number {
    return this.#q.length;
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
  }

  get closed(): Promise<void> {
    this.#closed ??= (async () => {
      while (!this.#gone && !(await this.#f.closedByPeer(1000))) {}
    })();
    return this.#closed;
  }

  async close(): Promise<void> {
    this.#gone = true;
    this.#f.close();
  }
}

/** vmlink's vhost-user port listens; the test front-end connects and sets up its rings. */
export function vhostUserHarness(): Harness {
  return {
    label: 'vhost-user listen',
    mode: 'vhost-user',
    async make(name, network, extra = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'vmlink-vhost-'));
      const path = join(dir, `${name}.sock`);
      const spec = portSchema.parse({ name, kind: 'vhost-user', network, listen: `unix:${path}`, ...extra });
      const peers: TestFrontend[] = [];
      return {
        spec,
        async attach() {
          const f = new TestFrontend(path, { bufSize: 8192 });
          peers.push(f);
          await f.setup();
          return new VhostPeer(f);
        },
        async cleanup() {
          for (const f of peers) f.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  };
}
