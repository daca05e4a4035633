/**
 * One NBD client connection: socket wiring for the handshake and
 * transmission state machines, request validation, dispatch through the
 * IoScheduler, replies (simple or structured) written as requests complete
 * (out of order), and backpressure: the socket is paused while the client has
 * `maxInFlight` requests outstanding or while our replies are not draining.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../../log.js';
import type { Extent } from '../backend.js';
import { payloadPool } from '../buffer-pool.js';
import { errnoOf } from '../errors.js';
import type { ExportRegistry, NbdExport } from '../exports.js';
import type { IoScheduler } from '../scheduler.js';
import { BASE_ALLOCATION_ID, CMD, CMD_FLAG, NBD_ERR, STATE_ZERO } from './constants.js';
import { type Negotiated, ServerHandshake } from './handshake.js';
import { type NbdTls, upgradeToTls } from './tls.js';
import {
  blockStatusChunk,
  errorChunk,
  type NbdRequest,
  noneChunk,
  offsetDataHeader,
  offsetHoleChunk,
  RequestParser,
  simpleReply,
} from './transmission.js';
import { validateRequest } from './validate.js';

/** Counters shared by all connections of a server. */
export interface NbdStats {
  connections: number;
  requests: number;
  /** Requests answered with an error. */
  errors: number;
  /** Connections closed because the peer broke the protocol. */
  protocolErrors: number;
  bytesRead: number;
  bytesWritten: number;
}

export interface ConnectionOptions {
  socket: Socket;
  exports: ExportRegistry;
  scheduler: IoScheduler;
  logger: Logger;
  stats: NbdStats;
  /** Requests in flight per client before its socket is paused. */
  maxInFlight: number;
  /** READ/WRITE payload bytes in flight per client before its socket is paused (one request may exceed it). */
  maxInFlightBytes: number;
  /** Called once when the handshake is done (the server's admission then stops its deadline). */
  onEstablished?: (() => void) | undefined;
  /** TLS the server offers (STARTTLS); undefined: none. */
  tls?: NbdTls | undefined;
  /**
   * The socket reads into a buffer it reuses (`onread`) and calls
   * {@link NbdConnection.onRead}: bytes kept past a call are copied.
   */
  transient?: boolean;
}

const EMPTY = Buffer.alloc(0);

/** Most extents in one block status reply (proto.md: SHOULD NOT exceed 2^20). */
const MAX_EXTENTS = 1 << 20;

export class NbdConnection {
  readonly peer: string;
  /** The plain socket, then the TLS socket over it after STARTTLS. */
  #sock: Socket;
  #o: ConnectionOptions;
  #hs: ServerHandshake | undefined;
  #parser: RequestParser | undefined;
  #neg: Negotiated | undefined;
  #exp: NbdExport | undefined;
  #inFlight = 0;
  #inFlightBytes = 0;
  #writeBlocked = false;
  #paused = false;
  #corked = false;
  /** No more requests are read (DISC, protocol error, server close); end once in-flight is zero. */
  #ending = false;
  #closed: Promise<void>;

  constructor(o: ConnectionOptions) {
    this.#o = o;
    this.#sock = o.socket;
    this.peer = o.socket.remoteAddress ? `${o.socket.remoteAddress}:${o.socket.remotePort}` : 'unix';
    let closed: () => void = () => {};
    this.#closed = new Promise((resolve) => {
      closed = resolve;
    });
    this.#onClose = () => closed();
    const s = o.socket;
    s.setNoDelay?.(true);
    s.on('error', (err) => o.logger.debug({ peer: this.peer, err: err.message }, 'NBD connection error'));
    this.#hs = new ServerHandshake(o.exports, o.socket.remoteAddress, o.tls?.mode);
    this.#flushHandshake();
    this.#wire(s);
  }

  /** The socket requests arrive on (the TLS socket once STARTTLS succeeded). */
  get socket(): Socket {
    return this.#sock;
  }

  /** Resolves when the socket has closed. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  #onClose: () => void;

  #onDrain = (): void => {
    this.#writeBlocked = false;
    this.#updateFlow();
  };

  #onEnd = (): void => this.#end();

  #wire(s: Socket): void {
    s.on('drain', this.#onDrain);
    s.on('data', this.#onData);
    s.on('end', this.#onEnd);
    s.once('close', this.#onClose);
  }

  /**
   * NBD_REP_ACK to STARTTLS has just been written: move the session onto TLS
   * in this same tick (see upgradeToTls) and resume option haggling once the
   * TLS handshake is done. A failed TLS handshake ends the session (proto.md:
   * too late to go on without TLS).
   */
  #startTls(hs: ServerHandshake, tls: NbdTls): void {
    const raw = this.#sock;
    raw.off('drain', this.#onDrain);
    raw.off('data', this.#onData);
    raw.off('end', this.#onEnd);
    const t = upgradeToTls(raw, tls);
    this.#sock = t;
    t.on('error', (err) => {
      this.#o.logger.warn({ peer: this.peer, err: err.message }, `closing NBD connection: TLS failed: ${err.message}`);
      t.destroy();
    });
    t.once('secure', () => {
      if (this.#hs !== hs) return;
      this.#o.logger.debug({ peer: this.peer, protocol: t.getProtocol() }, 'NBD client started TLS');
      hs.tlsStarted();
      this.#flushHandshake();
    });
    this.#wire(t);
  }

  /** Stops reading requests, answers those in flight, then closes the socket. */
  async shutdown(): Promise<void> {
    this.#end();
    await this.#closed;
  }

  /** The socket's `onread` callback (see ConnectionOptions.transient); false pauses the socket. */
  readonly onRead = (nread: number, buf: Buffer): boolean => {
    if (nread > 0) this.#onData(buf.subarray(0, nread));
    return !this.#paused;
  };

  #onData = (chunk: Buffer): void => {
    if (this.#parser) {
      this.#parser.feed(chunk);
      return;
    }
    const hs = this.#hs;
    if (!hs) return;
    // The handshake keeps bytes by reference: copy a transient chunk (rare: option haggling only).
    hs.feed(this.#o.transient ? Buffer.from(chunk) : chunk);
    this.#flushHandshake();
    if (hs.state === 'closed') {
      if (hs.clean) this.#o.logger.debug({ peer: this.peer }, hs.closeReason);
      else this.#o.logger.warn({ peer: this.peer }, `closing NBD connection: ${hs.closeReason}`);
      this.#hs = undefined;
      this.#closeSocket();
    } else if (hs.state === 'starttls' && this.#o.tls) {
      this.#startTls(hs, this.#o.tls);
    } else if (hs.state === 'done' && hs.result) {
      this.#o.onEstablished?.();
      this.#neg = hs.result;
      const exp = hs.result.export;
      this.#exp = exp;
      this.#hs = undefined;
      exp.stats.clients++;
      void this.#closed.then(() => exp.stats.clients--);
      this.#o.logger.debug({ peer: this.peer, export: this.#exp.name }, 'NBD client entered transmission');
      this.#parser = new RequestParser(
        (r) => this.#onRequest(r),
        (reason) => this.#protocolError(reason),
        this.#o.transient,
      );
      if (hs.rest.length) this.#parser.feed(hs.rest);
    }
  };

  #flushHandshake(): void {
    const hs = this.#hs;
    if (!hs || hs.out.length === 0) return;
    for (const b of hs.out) this.socket.write(b);
    hs.out = [];
  }

  #protocolError(reason: string): void {
    this.#o.stats.protocolErrors++;
    this.#o.logger.warn({ peer: this.peer, export: this.#exp?.name }, `closing NBD connection: ${reason}`);
    this.#end();
  }

  #end(): void {
    if (this.#ending) return;
    this.#ending = true;
    this.#parser?.stop();
    this.#hs = undefined;
    this.#updateFlow();
    if (this.#inFlight === 0) this.#closeSocket();
  }

  /** Sends what is queued, then closes (the peer's half is not waited for). */
  #closeSocket(): void {
    const s = this.socket;
    if (s.destroyed) return;
    s.end(() => s.destroy());
  }

  #onRequest(r: NbdRequest): void {
    const exp = this.#exp as NbdExport;
    this.#o.stats.requests++;
    if (r.type === CMD.DISC) {
      this.#end();
      return;
    }
    exp.stats.requests++;
    const bad = validateRequest(r, exp, this.#neg);
    if (bad !== 0) {
      this.#replyError(r, bad, `request refused (NBD error ${bad})`);
      return;
    }
    const cost = r.type === CMD.READ || r.type === CMD.WRITE ? r.length : 0;
    this.#inFlight++;
    this.#inFlightBytes += cost;
    this.#updateFlow();
    this.#o.scheduler.submit(exp, { run: () => this.#execute(r, exp, cost) }, cost);
  }

  /** Runs one request against the backend and replies. Never rejects. */
  async #execute(r: NbdRequest, exp: NbdExport, cost: number): Promise<void> {
    const b = exp.backend;
    const fua = (r.flags & CMD_FLAG.FUA) !== 0;
    try {
      switch (r.type) {
        case CMD.READ:
          await this.#read(r, exp);
          break;
        case CMD.WRITE:
          await b.write(r.offset, r.data as Buffer, fua);
          if (b.pooledBuffers) payloadPool.release(r.data as Buffer);
          this.#o.stats.bytesWritten += r.length;
          exp.stats.bytesWritten += r.length;
          this.#send(simpleReply(r.cookie, 0));
          break;
        case CMD.FLUSH:
          await b.flush();
          this.#send(simpleReply(r.cookie, 0));
          break;
        case CMD.TRIM:
          await b.trim(r.offset, r.length, fua);
          this.#send(simpleReply(r.cookie, 0));
          break;
        case CMD.CACHE:
          await b.cache(r.offset, r.length);
          this.#send(simpleReply(r.cookie, 0));
          break;
        case CMD.WRITE_ZEROES:
          await b.writeZeroes(r.offset, r.length, {
            noHole: (r.flags & CMD_FLAG.NO_HOLE) !== 0,
            fastZero: (r.flags & CMD_FLAG.FAST_ZERO) !== 0,
            fua,
          });
          this.#send(simpleReply(r.cookie, 0));
          break;
        case CMD.BLOCK_STATUS:
          await this.#blockStatus(r, exp);
          break;
      }
    } catch (err) {
      const errno = errnoOf(err);
      if (errno !== NBD_ERR.ENOTSUP)
        this.#o.logger.debug({ peer: this.peer, export: exp.name, err }, 'NBD request failed');
      this.#replyError(r, errno, err instanceof Error ? err.message : String(err));
    } finally {
      this.#inFlight--;
      this.#inFlightBytes -= cost;
      if (this.#ending && this.#inFlight === 0) this.#closeSocket();
      else this.#updateFlow();
    }
  }

  async #read(r: NbdRequest, exp: NbdExport): Promise<void> {
    const b = exp.backend;
    if (!this.#neg?.structuredReplies) {
      const data = await b.read(r.offset, r.length);
      this.#o.stats.bytesRead += r.length;
      exp.stats.bytesRead += r.length;
      this.#send(simpleReply(r.cookie, 0), data);
      if (b.pooledBuffers) this.#releaseAfterWrite(data);
      return;
    }
    if (r.length === 0) {
      this.#send(noneChunk(r.cookie));
      return;
    }
    if ((r.flags & CMD_FLAG.DF) !== 0 || !b.cheapExtents) {
      const data = await b.read(r.offset, r.length);
      this.#o.stats.bytesRead += r.length;
      exp.stats.bytesRead += r.length;
      this.#send(offsetDataHeader(r.cookie, true, r.offset, r.length), data);
      if (b.pooledBuffers) this.#releaseAfterWrite(data);
      return;
    }
    // Holes go out as OFFSET_HOLE chunks; data ranges are read and sent as OFFSET_DATA.
    const out: Buffer[] = [];
    let pos = r.offset;
    const end = r.offset + r.length;
    while (pos < end) {
      const ext = await b.extents(pos, end - pos);
      for (const e of ext) {
        const len = Math.min(e.length, end - pos);
        // A backend bug must not spin this loop forever: fail the request (EIO) instead.
        if (!(len > 0)) throw new Error(`backend returned an empty extent at offset ${pos}`);
        if ((e.flags & STATE_ZERO) !== 0) out.push(offsetHoleChunk(r.cookie, false, pos, len));
        else {
          const data = await b.read(pos, len);
          out.push(offsetDataHeader(r.cookie, false, pos, len), data);
        }
        pos += len;
        if (pos >= end) break;
      }
    }
    out.push(noneChunk(r.cookie));
    this.#o.stats.bytesRead += r.length;
    exp.stats.bytesRead += r.length;
    this.#send(...out);
  }

  async #blockStatus(r: NbdRequest, exp: NbdExport): Promise<void> {
    const reqOne = (r.flags & CMD_FLAG.REQ_ONE) !== 0;
    let ext: Extent[] = await exp.backend.extents(r.offset, r.length);
    if (reqOne) {
      const first = ext[0] as Extent;
      ext = [{ length: Math.min(first.length, r.length), flags: first.flags }];
    } else if (ext.length > MAX_EXTENTS) ext = ext.slice(0, MAX_EXTENTS);
    this.#send(blockStatusChunk(r.cookie, BASE_ALLOCATION_ID, ext));
  }

  #replyError(r: NbdRequest, errno: number, message: string): void {
    this.#o.stats.errors++;
    if (this.#exp) this.#exp.stats.errors++;
    const structured = this.#neg?.structuredReplies && (r.type === CMD.READ || r.type === CMD.BLOCK_STATUS);
    this.#send(structured ? errorChunk(r.cookie, errno, message) : simpleReply(r.cookie, errno));
  }

  /**
   * Writes one reply's buffers contiguously; notes socket backpressure. The
   * socket stays corked until the current callback's nextTick queue runs, so
   * a reply's header and data (and replies completed in the same callback)
   * leave in one writev. Uncorking later (setImmediate) batched more but
   * halved 4 KiB ops/s: the added latency cost more than the syscalls saved.
   */
  #send(...bufs: Buffer[]): void {
    const s = this.socket;
    if (s.destroyed || !s.writable) return;
    if (!this.#corked) {
      this.#corked = true;
      s.cork();
      process.nextTick(this.#uncork);
    }
    let ok = true;
    for (const b of bufs) ok = s.write(b);
    if (!ok && !this.#writeBlocked) {
      this.#writeBlocked = true;
      this.#updateFlow();
    }
  }

  /**
   * Gives a pooled reply buffer back once the socket has taken it: an empty
   * write queued after it completes only when everything before it has been
   * written (or the socket is gone), so the kernel holds its own copy then.
   */
  #releaseAfterWrite(data: Buffer): void {
    const s = this.socket;
    if (data.length < 65536 || s.destroyed || !s.writable) return;
    s.write(EMPTY, () => payloadPool.release(data));
  }

  #uncork = (): void => {
    this.#corked = false;
    this.socket.uncork();
  };

  /**
   * Pauses reading while over the in-flight bounds (requests, bytes) or while replies are not
   * draining. Once ending, input is read and discarded (the parser is stopped)
   * so the peer's FIN is seen and the socket can close.
   */
  #updateFlow(): void {
    const o = this.#o;
    const stop =
      !this.#ending &&
      (this.#writeBlocked || this.#inFlight >= o.maxInFlight || this.#inFlightBytes >= o.maxInFlightBytes);
    if (stop && !this.#paused) {
      this.#paused = true;
      this.#parser?.pause();
      this.socket.pause();
    } else if (!stop && this.#paused) {
      this.#paused = false;
      this.socket.resume();
      // May deliver buffered requests and re-enter here to pause again: state is already updated.
      this.#parser?.resume();
    }
  }
}
