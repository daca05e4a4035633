/**
 * One connection of a stream port (stream.ts): its socket, read straight
 * into one reusable buffer, its deframer, its egress batch and its graceful end.
 */
import type { Socket } from 'node:net';
import { describeError } from '../../errors.js';
import { enlargeSocketBuffers } from '../../util/sockets.js';
import type { PortContext } from '../port.js';
import { Deframer, PushResult } from './deframer.js';
import { StreamEgress } from './stream-egress.js';
import type { StreamHold } from './stream-hold.js';

/** What a connection reports to its port. */
export interface ConnOwner {
  /** The peer broke the framing: count it, say why once, drop the connection. */
  malformed(c: Conn, reason: string): void;
  /** The connection closed (for any reason). */
  lost(c: Conn): void;
}

/** Size of a connection's read buffer: many frames per read syscall. */
export const READ_BYTES = 256 * 1024;
/**
 * Kernel send and receive buffer of each connection, bytes. The defaults
 * (about 200 KiB) make the daemon and its peer wake each other for every few
 * batches; 4 MiB let a burst pass in a few syscalls (1500-byte frames between
 * two ports: about 0.3 of a direct socket pair with the defaults, 0.55 with
 * this). Set through the native addon (SO_SNDBUFFORCE as root); without it the
 * defaults stay.
 */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/** How long {@link Conn.end} waits for queued frames to reach a slow peer before giving up, ms. */
const CLOSE_GRACE_MS = 2000;

/** Enlarges the kernel buffers of a connected socket; best effort (see SOCKET_BUFFER_BYTES). */
export function enlargeBuffers(sock: Socket, log: PortContext['logger']): void {
  const err = enlargeSocketBuffers(sock, SOCKET_BUFFER_BYTES);
  if (err) log.debug({ err: describeError(err) }, 'socket buffers left at the kernel defaults');
}

/**
 * Node's `onread` socket option: every read lands in one reusable buffer and
 * is handed to the connection's deframer at once, so reading allocates
 * nothing per chunk (a 'data' event allocates a Buffer per read, and at
 * gigabits per second that garbage dominates). The connection is bound right
 * after the socket is made; no read completes before that (reads complete in
 * later event-loop turns).
 */
export class Reader {
  conn: Conn | undefined;
  readonly onread = {
    buffer: Buffer.allocUnsafe(READ_BYTES),
    callback: (nread: number, buf: Buffer): boolean => (this.conn ? this.conn.onRead(nread, buf) : true),
  };
}

/** One live connection: its socket, parser and egress batch. */
export class Conn {
  readonly deframer: Deframer;
  readonly egress: StreamEgress;
  /** Why we dropped it (set before destroy), for the state reason. */
  dropReason = '';
  /** Set once {@link StreamPort.lost} handled it. */
  gone = false;
  /** Socket `onread` callback: each read lands in one reusable buffer and is parsed at once. */
  readonly onRead: (nread: number, buf: Buffer) => boolean;

  constructor(
    readonly sock: Socket,
    readonly peer: string,
    port: ConnOwner,
    ctx: PortContext,
    hold: StreamHold,
  ) {
    this.deframer = new Deframer(hold.sink, ctx.maxFrameLen, hold.sinkBatch);
    this.egress = new StreamEgress(sock, ctx.queueLen);
    this.onRead = (nread: number, buf: Buffer): boolean => {
      if (this.deframer.push(buf, nread) !== PushResult.OK) {
        port.malformed(
          this,
          `length prefix ${this.deframer.badLength} exceeds the largest frame of ${ctx.maxFrameLen} bytes`,
        );
      }
      return true;
    };
    sock.on('end', () => {
      if (this.deframer.partial && !this.dropReason) {
        const want = this.deframer.partialLength;
        port.malformed(
          this,
          want < 0
            ? `truncated length prefix: connection ended after ${this.deframer.partialBytes} of 4 bytes`
            : `truncated frame: connection ended after ${this.deframer.partialBytes - 4} of ${want} bytes`,
        );
      }
    });
    sock.on('error', (err) => {
      if (!this.dropReason) this.dropReason = describeError(err);
    });
    sock.on('close', () => port.lost(this));
  }

  /**
   * Writes what is queued, half-closes, and resolves once the socket has
   * finished or closed, or after CLOSE_GRACE_MS (2000 ms) at the most. The
   * caller destroys the socket afterwards.
   */
  end(): Promise<void> {
    const sock = this.sock;
    if (sock.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, CLOSE_GRACE_MS);
      function done() {
        clearTimeout(timer);
        sock.off('finish', done);
        sock.off('close', done);
        resolve();
      }
      sock.once('finish', done);
      sock.once('close', done);
      this.egress.flush();
      sock.end();
    });
  }
}
