/**
 * An in-memory Port for switch tests: records what the switch writes (as
 * hex), answers with {@link RecPort.result}, and sends frames into the switch
 * through the sink it was made with, as if read from the wire.
 */
import {
  type BatchResult,
  countWrite,
  type FrameSink,
  type Port,
  type PortState,
  WriteResult,
} from '../../src/net/port.js';

export class RecPort implements Port {
  readonly kind = 'rec';
  state: PortState = 'up';
  readonly queued = 0;
  /** What write() answers; frames are recorded only while it is OK. */
  result: WriteResult = WriteResult.OK;
  /** Frames written, in order, as hex. */
  readonly sent: string[] = [];
  /** Frames per writeBatch call (ports made with `batch`). */
  readonly batches: number[] = [];
  writeBatch?: (buf: Buffer, frames: Uint32Array, count: number, res: BatchResult) => void;

  /** `batch`: the port has writeBatch (each frame counted as write() answers it). */
  constructor(
    readonly name: string,
    readonly sink: FrameSink,
    batch = false,
  ) {
    if (batch)
      this.writeBatch = (buf, frames, count, res) => {
        this.batches.push(count);
        for (let k = 0; k < count; k++) {
          const off = frames[2 * k] as number;
          const len = frames[2 * k + 1] as number;
          countWrite(res, this.write(buf, off, len), len);
        }
      };
  }

  async open(): Promise<void> {}

  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.result !== WriteResult.OK) return this.result;
    this.sent.push(buf.toString('hex', off, off + len));
    return WriteResult.OK;
  }

  describe(): Record<string, unknown> {
    return {};
  }

  async close(): Promise<void> {}

  async destroy(): Promise<void> {}

  /** Sends a frame (hex) into the switch as if read from the wire. */
  rx(hex: string): void {
    const b = Buffer.from(hex, 'hex');
    this.sink(b, 0, b.length);
  }

  /** The frames written since the last take(). */
  take(): string[] {
    return this.sent.splice(0);
  }
}

/**
 * Lays hex frames out in one buffer, 2 bytes apart, as a port reading many at
 * once does: `idx` holds offset, length pairs, for Switch ingressBatch.
 */
export function packBatch(frames: readonly string[]): { buf: Buffer; idx: Uint32Array; count: number } {
  const bufs = frames.map((h) => Buffer.from(h, 'hex'));
  const buf = Buffer.alloc(bufs.reduce((n, b) => n + b.length + 2, 0));
  const idx = new Uint32Array(2 * bufs.length);
  let at = 0;
  bufs.forEach((b, k) => {
    b.copy(buf, at);
    idx[2 * k] = at;
    idx[2 * k + 1] = b.length;
    at += b.length + 2;
  });
  return { buf, idx, count: bufs.length };
}
