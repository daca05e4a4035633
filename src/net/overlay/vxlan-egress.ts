/**
 * One sending socket of the VXLAN transport and its egress queue. The
 * transport has a few of these, each bound to its own UDP source port; a
 * frame goes out of the one its flow hashes to (RFC 7348 §5), so one flow
 * keeps one source port and many flows spread over several.
 *
 * Datagrams (VXLAN header + frame) are copied back to back into an arena
 * with a destination index each (an entry of the transport's table of
 * VTEP addresses), and sent with sendmmsg once per event-loop turn
 * (udpSendBatch). With UDP GSO, the datagrams of one cut TCP segment (all
 * the same size but the last, one destination, back to back) leave as one
 * message that the kernel cuts; where the kernel or the path refuses GSO
 * (EIO, EINVAL), this socket sends them one by one from then on. On EAGAIN
 * the rest waits for POLLOUT. Nothing is allocated per datagram.
 */
import { closeSync } from 'node:fs';
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon } from '../../native/index.js';

/** Most datagrams queued on one socket. */
const QUEUE_FRAMES = 4096;
/** Arena bytes of one socket's queue. */
const QUEUE_BYTES = 4 << 20;
/** Datagrams per GSO message at most (UDP_MAX_SEGMENTS). */
export const GSO_SEGS = 64;

/** What the transport keeps about its sends (for tests, benchmarks and logs). */
export interface EgressCounters {
  /** udpSendBatch calls. */
  calls: number;
  /** Datagrams handed to the kernel. */
  datagrams: number;
  /** Datagrams dropped because the kernel refused them (not EAGAIN). */
  errors: number;
  lastError: string;
}

export class VxlanEgress {
  /** The bound UDP source port. */
  readonly port: number;
  /** UDP GSO on this socket (off after the kernel refused it once). */
  gso: boolean;
  #fd: number;
  readonly #n: NativeAddon;
  readonly #counters: EgressCounters;
  readonly #onGsoOff: (err: unknown) => void;
  #buf: Buffer | undefined;
  readonly #offs = new Uint32Array(QUEUE_FRAMES);
  readonly #lens = new Uint32Array(QUEUE_FRAMES);
  readonly #dests = new Uint16Array(QUEUE_FRAMES);
  #head = 0;
  #count = 0;
  #cursor = 0;
  #waiting = false;
  readonly #watchWritable: (on: boolean) => void;
  /** Whether this socket's fd is the transport's receiving socket (closed by the transport). */
  readonly #shared: boolean;

  /**
   * @param shared the fd is the transport's receiving socket: close() leaves it open
   * @param watchWritable asks (true) or stops asking (false) for a flush when the full socket can take more
   * @param onGsoOff called once when the kernel refuses a GSO message, with its error
   */
  constructor(
    n: NativeAddon,
    fd: number,
    port: number,
    gso: boolean,
    shared: boolean,
    counters: EgressCounters,
    watchWritable: (on: boolean) => void,
    onGsoOff: (err: unknown) => void,
  ) {
    this.#n = n;
    this.#fd = fd;
    this.port = port;
    this.gso = gso;
    this.#shared = shared;
    this.#counters = counters;
    this.#watchWritable = watchWritable;
    this.#onGsoOff = onGsoOff;
  }

  /** Datagrams queued and not yet sent. */
  get queued(): number {
    return this.#count - this.#head;
  }

  /**
   * Queues one datagram to destination `dest`: `hdr` bytes reserved in front
   * of `src[off .. off+len)` for the caller to fill. Returns the offset of
   * the reserved bytes in {@link buffer}, or -1 when the queue is full.
   */
  push(dest: number, hdr: number, src: Buffer, off: number, len: number): number {
    if (this.#fd < 0 || this.#count >= QUEUE_FRAMES) return -1;
    const total = hdr + len;
    this.#buf ??= Buffer.allocUnsafe(QUEUE_BYTES);
    if (this.#cursor + total > this.#buf.length && !this.#compact(total)) return -1;
    const at = this.#cursor;
    src.copy(this.#buf, at + hdr, off, off + len);
    this.#offs[this.#count] = at;
    this.#lens[this.#count] = total;
    this.#dests[this.#count] = dest;
    this.#count++;
    this.#cursor += total;
    return at;
  }

  /** The arena (valid until the next push). */
  get buffer(): Buffer {
    return this.#buf as Buffer;
  }

  /** Sends what is queued; true when the queue is empty afterwards. */
  flush(table: Buffer): boolean {
    const n = this.#n;
    const c = this.#counters;
    while (this.#head < this.#count && this.#fd >= 0) {
      const head = this.#head;
      let next: number;
      try {
        c.calls++;
        next = n.udpSendBatch(
          this.#fd,
          this.#buf as Buffer,
          this.#offs,
          this.#lens,
          this.#dests,
          table,
          head,
          this.#count,
          this.gso ? GSO_SEGS : 1,
        );
      } catch (err) {
        if (this.gso && (isSyscallError(err, 'EIO') || isSyscallError(err, 'EINVAL'))) {
          // The path cannot segment (no checksum offload on the device, a segment above its MTU): no GSO from now on.
          this.gso = false;
          this.#onGsoOff(err);
          continue;
        }
        // An error for the first datagram (EMSGSIZE, an unreachable network, ...): drop it, go on.
        c.errors++;
        c.lastError = describeError(err);
        this.#advance(head + 1);
        continue;
      }
      c.datagrams += next - head;
      if (next === head) break; // EAGAIN: the socket's send buffer is full
      this.#advance(next);
    }
    const empty = this.#head >= this.#count;
    this.#watch(!empty);
    return empty;
  }

  /** Drops what is queued; returns how many. */
  clear(): number {
    const dropped = this.#count - this.#head;
    this.#head = this.#count = this.#cursor = 0;
    return dropped;
  }

  /** Stops and closes the socket (unless it is the receiving one). Idempotent. */
  close(): void {
    this.clear();
    this.#watch(false);
    if (this.#fd >= 0 && !this.#shared) closeSync(this.#fd);
    this.#fd = -1;
  }

  #advance(next: number): void {
    this.#head = next;
    if (next >= this.#count) this.#head = this.#count = this.#cursor = 0;
  }

  #watch(on: boolean): void {
    if (on === this.#waiting) return;
    this.#waiting = on;
    this.#watchWritable(on);
  }

  /** Moves the unsent datagrams to the front of the arena; true when `len` more bytes then fit. */
  #compact(len: number): boolean {
    const head = this.#head;
    const buf = this.#buf as Buffer;
    if (head === 0) return false;
    const from = this.#offs[head] as number;
    buf.copy(buf, 0, from, this.#cursor);
    for (let i = head; i < this.#count; i++) this.#offs[i - head] = (this.#offs[i] as number) - from;
    this.#lens.copyWithin(0, head, this.#count);
    this.#dests.copyWithin(0, head, this.#count);
    this.#count -= head;
    this.#cursor -= from;
    this.#head = 0;
    return this.#cursor + len <= buf.length;
  }
}
