/**
 * A FIFO of frames in one circular byte buffer: each frame is stored
 * contiguously (a frame that does not fit before the end of the buffer starts
 * again at offset 0), with offsets and lengths in a ring of typed arrays.
 * Unlike the ports' FrameArena (emptied in one batch per flush), frames
 * leave one at a time while others arrive, as a scheduler's flow queue needs;
 * nothing is moved and nothing is allocated per frame.
 */
export class FrameRing {
  /** The frame bytes. */
  readonly buf: Buffer;
  readonly #offs: Uint32Array;
  readonly #lens: Uint32Array;
  /** A number the owner keeps with each frame (a shared egress: which member port it is for). */
  readonly #tags: Uint32Array;
  #head = 0;
  #count = 0;
  /** Where the next frame goes. */
  #tail = 0;
  /** True while the newest frames sit before the oldest in the buffer. */
  #wrapped = false;

  /**
   * @param frames most frames held at once
   * @param bytes buffer size in bytes; the largest frame must fit
   */
  constructor(frames: number, bytes: number) {
    this.buf = Buffer.allocUnsafe(bytes);
    this.#offs = new Uint32Array(frames);
    this.#lens = new Uint32Array(frames);
    this.#tags = new Uint32Array(frames);
  }

  /** Frames held. */
  get length(): number {
    return this.#count;
  }

  /** Offset in {@link buf} of the oldest frame (valid while length > 0). */
  get headOff(): number {
    return this.#offs[this.#head] as number;
  }

  /** Length of the oldest frame (valid while length > 0). */
  get headLen(): number {
    return this.#lens[this.#head] as number;
  }

  /** The tag of the oldest frame (valid while length > 0). */
  get headTag(): number {
    return this.#tags[this.#head] as number;
  }

  /**
   * Copies `src[off .. off+len)` in as the newest frame, with `tag` (an
   * unsigned 32-bit number kept beside it; default 0); false (nothing copied)
   * when it does not fit.
   */
  push(src: Buffer, off: number, len: number, tag = 0): boolean {
    const cap = this.#offs.length;
    if (this.#count === cap) return false;
    let pos: number;
    if (this.#count === 0) {
      if (len > this.buf.length) return false;
      pos = 0;
      this.#wrapped = false;
    } else {
      const head = this.headOff;
      if (this.#wrapped) {
        if (this.#tail + len > head) return false;
        pos = this.#tail;
      } else if (this.#tail + len <= this.buf.length) {
        pos = this.#tail;
      } else if (len <= head) {
        pos = 0;
        this.#wrapped = true;
      } else {
        return false;
      }
    }
    src.copy(this.buf, pos, off, off + len);
    const slot = (this.#head + this.#count) % cap;
    this.#offs[slot] = pos;
    this.#lens[slot] = len;
    this.#tags[slot] = tag;
    this.#count++;
    this.#tail = pos + len;
    return true;
  }

  /** Forgets the oldest frame. */
  shift(): void {
    if (this.#count === 0) return;
    const old = this.headOff;
    this.#head = (this.#head + 1) % this.#offs.length;
    this.#count--;
    if (this.#count === 0) {
      this.#tail = 0;
      this.#wrapped = false;
    } else if (this.#wrapped && this.headOff < old) {
      this.#wrapped = false;
    }
  }

  /** Forgets every frame; returns how many there were. */
  clear(): number {
    const n = this.#count;
    this.#count = 0;
    this.#tail = 0;
    this.#wrapped = false;
    return n;
  }
}
