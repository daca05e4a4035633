/**
 * The shared base of the compliance peers on a raw socket fd (unix
 * datagram, packet socket): received frames are read in batches through the
 * addon's Poller into a FrameQueue; pause() stops polling, so the port sees
 * what the kernel does when nobody reads. Subclasses say how a frame is sent
 * and which frames are the test's.
 */
import { closeSync } from 'node:fs';
import { native, type Poller } from '../../src/native/index.js';
import { QueuedPeer } from './port-peers.js';

/** Frames read per recvBatch call. */
const BATCH = 16;

export abstract class SocketPeer extends QueuedPeer {
  readonly closed: Promise<void>;
  /** The socket, owned by the peer from the constructor on (close() closes it). */
  protected readonly fd: number;
  readonly #poller: Poller;
  readonly #rx: Buffer;
  readonly #lens = new Uint32Array(BATCH);
  #close: (() => void) | undefined;
  #open = true;

  /** Starts reading `fd` at once, each datagram at most `maxFrame` bytes. */
  constructor(fd: number, maxFrame: number) {
    super();
    const n = native();
    this.fd = fd;
    this.#rx = Buffer.alloc(BATCH * maxFrame);
    this.#poller = new n.Poller(fd, () => {
      const got = n.recvBatch(fd, this.#rx, maxFrame, this.#lens, null);
      for (let i = 0; i < got; i++) {
        const o = i * maxFrame;
        if (this.keeps(this.#rx, o)) this.frames.push(Buffer.from(this.#rx.subarray(o, o + (this.#lens[i] as number))));
      }
    });
    this.#poller.start(n.READABLE);
    this.closed = new Promise((resolve) => (this.#close = resolve));
  }

  /** Whether the frame read at `off` of `rx` is one the test waits for; every frame by default. */
  protected keeps(_rx: Buffer, _off: number): boolean {
    return true;
  }

  /** Sends one datagram to `to` (a unix path; null: where the socket is bound or connected); false when the kernel refused it (EAGAIN). */
  protected sendTo(frame: Buffer, to: string | null): boolean {
    return native().sendBatch(this.fd, frame, new Uint32Array([0]), new Uint32Array([frame.length]), 0, 1, to) !== 0;
  }

  /** Whether close() has not run yet. */
  protected get open(): boolean {
    return this.#open;
  }

  pause(): void {
    this.#poller.stop();
  }
  resume(): void {
    this.#poller.start(native().READABLE);
  }
  async close(): Promise<void> {
    if (this.#open) {
      this.#open = false;
      this.#poller.close();
      closeSync(this.fd);
      this.#close?.();
    }
    await this.closed;
  }
}
