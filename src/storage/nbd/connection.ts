/**
 * One NBD client connection: socket wiring for the handshake and
 * transmission state machines, request validation, dispatch through the
 * IoScheduler to runCommand (commands.ts), replies (simple or structured)
 * written as requests complete (out of order), and backpressure: the socket
 * is paused while the client has `maxInFlight` requests outstanding or while
 * our replies are not draining.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../log.js';
import { payloadPool } from '../buffer-pool.js';
import { errnoOf } from '../errors.js';
import type { ExportRegistry, NbdExport } from '../exports.js';
import { opIndex } from '../io-stats.js';
import type { IoScheduler } from '../scheduler.js';
import { type CommandSink, runCommand } from './commands.js';
import { CMD, NBD_ERR } from './constants.js';
import { type Negotiated, ServerHandshake } from './handshake.js';
import { type NbdTls, upgradeToTls } from './tls.js';
import { errorChunk, type NbdRequest, RequestParser, simpleReply } from './transmission.js';
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
  /**
   * When the chunk being parsed arrived (performance.now()), read at its
   * first request: the requests of one chunk share one clock read; 0 until
   * read. Requests left buffered and delivered later keep their chunk's time.
   */
  #arrival = 0;
  #writeBlocked = false;
  #paused = false;
  #corked = false;
  /** No more requests are read (DISC, protocol error, server close); end once in-flight is zero. */
  #ending = false;
  #closed: Promise<void>;
  /** What runCommand needs of this connection (one object, made once). */
  #sink: CommandSink;

  constructor(o: ConnectionOptions) {
    this.#o = o;
    this.#sink = {
      stats: o.stats,
      structured: false,
      send: this.#send.bind(this),
      releaseAfterWrite: this.#releaseAfterWrite.bind(this),
    };
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
      this.#arrival = 0;
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
      this.#sink.structured = hs.result.structuredReplies;
      const exp = hs.result.export;
      this.#exp = exp;
      this.#hs = undefined;
      void this.#closed.then(this.#o.exports.clientJoined(exp));
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
    if (this.#arrival === 0) this.#arrival = performance.now();
    const t0 = this.#arrival;
    const io = exp.stats.io;
    io.begin();
    const bad = validateRequest(r, exp, this.#neg);
    if (bad !== 0) {
      this.#replyError(r, bad, `request refused (NBD error ${bad})`);
      io.end(opIndex(r.type), performance.now() - t0, true);
      return;
    }
    const cost = r.type === CMD.READ || r.type === CMD.WRITE ? r.length : 0;
    this.#inFlight++;
    this.#inFlightBytes += cost;
    this.#updateFlow();
    this.#o.scheduler.submit(exp, { run: () => this.#execute(r, exp, cost, t0) }, cost);
  }

  /** Runs one request against the backend and replies (`t0`: its arrival, performance.now()). Never rejects. */
  async #execute(r: NbdRequest, exp: NbdExport, cost: number, t0: number): Promise<void> {
    let failed = false;
    try {
      await runCommand(r, exp, this.#sink);
    } catch (err) {
      failed = true;
      const errno = errnoOf(err);
      if (errno !== NBD_ERR.ENOTSUP)
        this.#o.logger.debug({ peer: this.peer, export: exp.name, err }, 'NBD request failed');
      this.#replyError(r, errno, err instanceof Error ? err.message : String(err));
    } finally {
      exp.stats.io.end(opIndex(r.type), performance.now() - t0, failed);
      this.#inFlight--;
      this.#inFlightBytes -= cost;
      if (this.#ending && this.#inFlight === 0) this.#closeSocket();
      else this.#updateFlow();
    }
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
