/**
 * The egress queue of the fd-based ports (tap, host, unix dgram, vde): frames
 * copied back to back into one arena, with offsets and lengths in typed arrays
 * in the shape the addon's batched writers take (writeBatch / sendBatch with
 * `from`, `to`). Frames [head, count) are queued. Nothing is allocated per frame.
 */
export class FrameArena {
  /** The frame bytes. */
  readonly buf: Buffer;
  /** Offset in {@link buf} of each queued frame. */
  readonly offs: Uint32Array;
  /** Length of each queued frame. */
  readonly lens: Uint32Array;
  /** First frame not yet sent. */
  head = 0;
  /** One past the last queued frame. */
  count = 0;
  #cursor = 0;

  /**
   * @param frames most frames queued at once (the port's queue length)
   * @param bytes arena size in bytes; at least two of the largest frames fit
   */
  constructor(frames: number, bytes: number) {
    this.buf = Buffer.allocUnsafe(bytes);
    this.offs = new Uint32Array(frames);
    this.lens = new Uint32Array(frames);
  }

  /** Frames queued and not yet sent. */
  get queued(): number {
    return this.count - this.head;
  }

  /**
   * Copies `src[off .. off+len)` to the end of the queue. False (nothing
   * copied) when the queue holds its most frames or the arena has no room even
   * after moving the unsent frames to its front.
   */
  push(src: Buffer, off: number, len: number): boolean {
    return this.pushAfter(0, src, off, len) >= 0;
  }

  /**
   * Like {@link push}, with `pre` bytes reserved in front of the frame and
   * queued with it (a per-frame header such as a virtio_net_hdr, for the
   * caller to fill in). Returns the offset of the reserved bytes in
   * {@link buf}, or -1 (nothing queued) when there is no room.
   */
  pushAfter(pre: number, src: Buffer, off: number, len: number): number {
    if (this.count >= this.offs.length) return -1;
    const total = pre + len;
    if (this.#cursor + total > this.buf.length && !this.#compact(total)) return -1;
    const at = this.#cursor;
    src.copy(this.buf, at + pre, off, off + len);
    this.offs[this.count] = at;
    this.lens[this.count] = total;
    this.count++;
    this.#cursor += total;
    return at;
  }

  /** Frames up to `next` were sent (or skipped). Empties the arena when all were; returns whether it is empty. */
  advance(next: number): boolean {
    this.head = next;
    if (next < this.count) return false;
    this.clear();
    return true;
  }

  /** Drops every queued frame; returns how many there were. */
  clear(): number {
    const dropped = this.count - this.head;
    this.head = this.count = this.#cursor = 0;
    return dropped;
  }

  /** Moves the unsent frames to the front of the arena; true when `len` more bytes then fit. */
  #compact(len: number): boolean {
    const head = this.head;
    if (head === 0) return false;
    const from = this.offs[head] as number;
    this.buf.copy(this.buf, 0, from, this.#cursor);
    for (let i = head; i < this.count; i++) this.offs[i - head] = (this.offs[i] as number) - from;
    this.lens.copyWithin(0, head, this.count);
    this.count -= head;
    this.#cursor -= from;
    this.head = 0;
    return this.#cursor + len <= this.buf.length;
  }
}
