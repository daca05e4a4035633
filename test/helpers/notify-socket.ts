/**
 * The service manager's end of sd_notify(3), as systemd holds it for a
 * `Type=notify` unit: a unix datagram socket bound in a temp directory, whose
 * path goes to the daemon as `NOTIFY_SOCKET`. Every datagram is kept, parsed
 * into its `KEY=VALUE` fields, in order of arrival; a test waits for the next
 * message that has a field, and may act the moment it arrives (`onMessage`).
 */
import { closeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native, type Poller } from '../../src/native/index.js';

/** One notification: its fields, and the raw text. */
export interface Notification {
  fields: Map<string, string>;
  text: string;
}

export class NotifySocket {
  /** The socket's path: the value of `NOTIFY_SOCKET`. */
  readonly path: string;
  /** Every notification so far, in order. */
  readonly messages: Notification[] = [];
  /** Called synchronously as each notification arrives (before any waiter is woken). */
  onMessage: ((m: Notification) => void) | undefined;
  readonly #dir: string;
  readonly #fd: number;
  readonly #poller: Poller;
  #waiters: (() => void)[] = [];

  private constructor(dir: string) {
    const n = native();
    this.#dir = dir;
    this.path = join(dir, 'notify.sock');
    this.#fd = n.socket(n.SOCK_DGRAM);
    n.bind(this.#fd, this.path);
    const buf = Buffer.alloc(16 * 4096);
    const lens = new Uint32Array(16);
    this.#poller = new n.Poller(this.#fd, () => {
      for (;;) {
        const got = n.recvBatch(this.#fd, buf, 4096, lens, null);
        for (let i = 0; i < got; i++) {
          const text = buf.toString('utf8', i * 4096, i * 4096 + Math.min(lens[i] as number, 4096));
          const fields = new Map<string, string>();
          for (const line of text.split('\n')) {
            const eq = line.indexOf('=');
            if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
          }
          const m = { fields, text };
          this.messages.push(m);
          this.onMessage?.(m);
        }
        if (got < lens.length) break;
      }
      const w = this.#waiters;
      this.#waiters = [];
      for (const f of w) f();
    });
    this.#poller.start(n.READABLE);
  }

  /** A socket bound in a fresh temp directory. */
  static async open(): Promise<NotifySocket> {
    return new NotifySocket(await mkdtemp(join(tmpdir(), 'vmlink-notify-')));
  }

  /**
   * The first notification at index `from` or later that has field `key`
   * (with `value`, when given); waits for it up to `timeoutMs`.
   */
  async next(key: string, opts: { from?: number; value?: string; timeoutMs?: number } = {}): Promise<Notification> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      const m = this.messages
        .slice(opts.from ?? 0)
        .find((x) => x.fields.has(key) && (opts.value === undefined || x.fields.get(key) === opts.value));
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no ${key}${opts.value === undefined ? '' : `=${opts.value}`} notification; got:\n${this.dump()}`,
        );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The index of `m` among the messages. */
  indexOf(m: Notification): number {
    return this.messages.indexOf(m);
  }

  /** Every notification so far, one per line (newlines shown as `|`), for failure messages. */
  dump(): string {
    return this.messages.map((m) => m.text.replace(/\n/g, ' | ')).join('\n');
  }

  async close(): Promise<void> {
    this.#poller.close();
    closeSync(this.#fd);
    await rm(this.#dir, { recursive: true, force: true });
  }
}
