/**
 * A {@link LinkChannel} over a byte stream: a TCP socket or a TLS socket.
 * Handles the hello exchange, keepalives with RTT, aggregation (egress.ts),
 * record parsing (codec.ts) and an orderly close with a `bye`.
 */
import type { Socket } from 'node:net';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DirectWrite } from '../../util/sockets.js';
import { OffloadMeta } from '../offload/vnet-hdr.js';
import { WriteResult } from '../port.js';
import { DecodeResult, encodeControl, HEADER_LEN, LinkDecoder, MAX_CONTROL_BODY } from './codec.js';
import { LinkEgress } from './egress.js';
import { type LinkCloseCause, LinkProtocolError } from './errors.js';
import { HELLO_TIMEOUT_MS, helloMessage, parseHello } from './hello.js';
import { Keepalive } from './keepalive.js';
import type { LinkReader } from './link-reader.js';
import type { ChannelHandlers, ChannelStats, ControlMessage, LinkChannel, PeerHello } from './transport.js';

/** Frames that arrive between the hello and attach() are held, up to this many. */
const EARLY_FRAMES = 256;
/** Control messages that arrive between the hello and attach() are held, up to this many (more: protocol error). */
const EARLY_CONTROLS = 1024;
/** How long close() waits for queued bytes to leave, ms. */
const CLOSE_GRACE_MS = 2000;

export interface StreamChannelOptions {
  kind: string;
  outbound: boolean;
  /** Remote address for listings and messages. */
  remote: string;
  /** Our hello. */
  hello: PeerHello;
  logger: Logger;
  /** Keepalive interval, ms; the channel closes after 3 silent intervals. */
  keepaliveMs: number;
  /** Egress bound in bytes. */
  queueBytes?: number | undefined;
  /** Checks the peer's hello (e.g. host id against its certificate); returns why it is refused, or undefined. */
  verify?: ((hello: PeerHello) => string | undefined) | undefined;
  /** ms clock; default performance.now. */
  clock?: () => number;
  /**
   * The receive window the socket was made with (its `onread` option):
   * records are parsed in place in it. Without one, 'data' events feed the
   * decoder (a TLS socket the server accepted cannot take `onread`).
   */
  reader?: LinkReader | undefined;
  /** Writes straight to the socket's fd when nothing is queued (plain TCP only; see egress.ts). */
  direct?: DirectWrite | undefined;
}

export class StreamChannel implements LinkChannel {
  readonly kind: string;
  readonly outbound: boolean;
  readonly remote: string;
  peer!: PeerHello;
  readonly #sock: Socket;
  readonly #opts: StreamChannelOptions;
  readonly #log: Logger;
  readonly #egress: LinkEgress;
  readonly #decoder: LinkDecoder;
  readonly #clock: () => number;
  #handlers: ChannelHandlers | undefined;
  #early: { vni: number; frame: Buffer; meta: OffloadMeta | undefined }[] = [];
  #earlyControls: ControlMessage[] = [];
  /** Both ends take offload records (set from the peer's hello; this end always announces them). */
  #offloads = false;
  #helloWait: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #helloTimer: NodeJS.Timeout | undefined;
  readonly #keepalive: Keepalive;
  #rxFrames = 0;
  #rxBytes = 0;
  #unknownVni = 0;
  #closeReason = '';
  /** Why the connection closed, typed (set with the first reason). */
  #closeCause: LinkCloseCause = 'lost';
  /** A protocol error closed the connection: what still arrives is ignored. */
  #failed = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(sock: Socket, opts: StreamChannelOptions) {
    this.#sock = sock;
    this.#opts = opts;
    this.kind = opts.kind;
    this.outbound = opts.outbound;
    this.remote = opts.remote;
    this.#log = opts.logger;
    this.#clock = opts.clock ?? (() => performance.now());
    this.#keepalive = new Keepalive(opts.keepaliveMs, this.#clock);
    this.#egress = new LinkEgress(sock, opts.queueBytes, opts.direct);
    this.#decoder = new LinkDecoder(
      {
        frame: (vni, buf, off, len, meta) => this.#frame(vni, buf, off, len, meta),
        control: (buf, off, len) => this.#control(buf, off, len),
      },
      new OffloadMeta(),
    );
    sock.setNoDelay(true);
    const reader = opts.reader;
    if (reader !== undefined) {
      reader.bind((buf, start, end) => {
        this.#keepalive.lastRx = this.#clock();
        const p = this.#decoder.parse(buf, start, end);
        if (p < 0) this.#decodeFailed(this.#decoder.error);
        return p;
      });
    } else {
      sock.on('data', (chunk: Buffer) => {
        this.#keepalive.lastRx = this.#clock();
        const r = this.#decoder.push(chunk);
        if (r !== DecodeResult.OK) this.#decodeFailed(r);
      });
    }
    sock.on('error', (err) => {
      // A reset before the hello proves nothing about the peer (a scan, a client that gave up).
      const reset = (err as NodeJS.ErrnoException).code === 'ECONNRESET' && this.peer === undefined;
      this.#setClose(describeError(err), reset ? 'hung-up' : 'lost');
    });
    sock.on('close', () => this.#onClose());
  }

  get queuedBytes(): number {
    return this.#egress.queuedBytes;
  }

  get offloads(): boolean {
    return this.#offloads;
  }

  /** Sends our hello and waits for the peer's (and its verification). */
  handshake(): Promise<void> {
    this.#egress.raw(encodeControl(helloMessage(this.#opts.hello)));
    return new Promise<void>((resolve, reject) => {
      this.#helloWait = { resolve, reject };
      this.#helloTimer = setTimeout(
        () => this.#fail(`no hello within ${HELLO_TIMEOUT_MS / 1000} s`, true, 'timeout'),
        HELLO_TIMEOUT_MS,
      );
      this.#helloTimer.unref();
    });
  }

  attach(h: ChannelHandlers): void {
    this.#handlers = h;
    const early = this.#early;
    this.#early = [];
    const controls = this.#earlyControls;
    this.#earlyControls = [];
    for (const m of controls) h.control(m);
    for (const e of early) h.frame(e.vni, e.frame, 0, e.frame.length, e.meta);
    if (this.#closed) h.closed(this.#closeReason, this.#closeCause);
  }

  send(vni: number, buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    if (this.#closed || this.#closing) return WriteResult.DOWN;
    // An older peer never receives an offload record (the switch only gives meta when offloads is true).
    return this.#egress.frame(vni, buf, off, len, this.#offloads ? meta : undefined);
  }

  sendControl(msg: ControlMessage): boolean {
    if (this.#closed || this.#closing) return false;
    const rec = encodeControl(msg);
    if (rec.length - HEADER_LEN > MAX_CONTROL_BODY) {
      // The peer would close the link over it: a bug here, never sent.
      this.#log.error(
        { peer: this.remote, type: msg.type, bytes: rec.length - HEADER_LEN },
        `not sending a "${msg.type}" control record of ${rec.length - HEADER_LEN} bytes to ${this.remote}: over the limit of ${MAX_CONTROL_BODY}`,
      );
      return false;
    }
    return this.#egress.raw(rec);
  }

  stats(): ChannelStats {
    const e = this.#egress;
    return {
      rtt_ms: this.#keepalive.rttMs,
      tx_frames: e.txFrames,
      tx_bytes: e.txBytes,
      rx_frames: this.#rxFrames,
      rx_bytes: this.#rxBytes,
      tx_writes: e.writes,
      drops_queue_full: e.dropsQueueFull,
      drops_too_big: 0,
      drops_unknown_vni: this.#unknownVni,
    };
  }

  /**
   * The frame of `len` bytes just delivered is for a VNI the link does not
   * carry (called by the overlay): counted as dropped, not as received.
   */
  unknownVni(len: number): void {
    this.#unknownVni++;
    this.#rxFrames--;
    this.#rxBytes -= len;
  }

  close(reason: string): Promise<void> {
    this.#closing ??= this.#close(reason);
    return this.#closing;
  }

  /** Closes at once with a reason and its cause (default: a timeout). */
  destroy(reason: string, cause: LinkCloseCause = 'timeout'): void {
    this.#setClose(reason, cause);
    this.#egress.kill();
    this.#sock.destroy();
  }

  // ---- internals ------------------------------------------------------------------

  /** Records why the connection closes; the first reason given stays, unless `replace`. */
  #setClose(reason: string, cause: LinkCloseCause, replace = false): void {
    if (this.#closeReason && !replace) return;
    this.#closeReason = reason;
    this.#closeCause = cause;
  }

  async #close(reason: string): Promise<void> {
    if (this.#closed) return;
    this.#setClose(`closed here: ${reason}`, 'closed-here');
    this.#egress.raw(encodeControl({ type: 'bye', reason }));
    this.#egress.flush();
    this.#egress.kill();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#sock.destroy();
        resolve();
      }, CLOSE_GRACE_MS);
      this.#sock.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.#sock.end();
    });
  }

  #decodeFailed(r: DecodeResult): void {
    const d = this.#decoder;
    this.#fail(
      r === DecodeResult.BAD_TYPE
        ? `unknown record type ${d.badType}`
        : r === DecodeResult.BAD_OFFLOAD
          ? `offload record of ${d.badLength} bytes has a bad offload header`
          : `record of ${d.badLength} bytes exceeds the limit for type ${d.badType}`,
    );
  }

  /**
   * Closes the connection over a protocol error: one log line, and a `bye`
   * that tells the peer why (so its `link list` shows the reason, not a bare
   * close), unless `tell` is false (the peer's own bye before its hello).
   */
  #fail(reason: string, tell = true, cause: LinkCloseCause = tell ? 'protocol' : 'peer-refused'): void {
    if (this.#closed || this.#closeReason) return;
    this.#log.warn({ peer: this.remote, reason }, `closing link connection with ${this.remote}: ${reason}`);
    const why = tell ? `protocol error: ${reason}` : reason;
    if (tell) {
      this.#egress.raw(encodeControl({ type: 'bye', reason: why }));
      this.#egress.flush();
    }
    this.#setClose(why, cause);
    this.#failed = true;
    this.#egress.kill();
    this.#sock.end();
    setTimeout(() => this.#sock.destroy(), 500).unref();
  }

  #frame(vni: number, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): void {
    if (this.#failed) return;
    this.#rxFrames++;
    this.#rxBytes += len;
    const h = this.#handlers;
    if (h) {
      h.frame(vni, buf, off, len, meta);
      return;
    }
    if (this.#helloWait !== undefined || this.peer === undefined) {
      this.#fail('a frame came before the hello');
      return;
    }
    if (this.#early.length < EARLY_FRAMES) {
      let m: OffloadMeta | undefined;
      if (meta !== undefined) {
        m = new OffloadMeta();
        m.copyFrom(meta);
      }
      this.#early.push({ vni, frame: Buffer.from(buf.subarray(off, off + len)), meta: m });
    }
  }

  #control(buf: Buffer, off: number, len: number): void {
    if (this.#failed) return;
    let msg: ControlMessage;
    try {
      msg = JSON.parse(buf.toString('utf8', off, off + len)) as ControlMessage;
    } catch {
      this.#fail('a control record is not valid JSON');
      return;
    }
    if (typeof msg !== 'object' || msg === null || typeof msg.type !== 'string') {
      this.#fail('a control record is not an object with a type');
      return;
    }
    if (this.peer === undefined) {
      if (msg.type === 'bye') {
        // The peer refused this end (its hello, certificate or limits) and says why.
        this.#fail(`peer closed the link: ${String(msg['reason'] ?? 'no reason given').slice(0, 200)}`, false);
        return;
      }
      this.#onHello(msg);
      return;
    }
    switch (msg.type) {
      case 'ping':
        this.#egress.raw(encodeControl({ type: 'pong', t: msg['t'] }));
        return;
      case 'pong':
        this.#keepalive.pong(msg['t']);
        return;
      case 'bye':
        // The peer's own words win over what this end noted before.
        this.#setClose(`peer closed the link: ${String(msg['reason'] ?? '')}`, 'peer-bye', true);
        this.#egress.kill();
        this.#sock.end();
        return;
      case 'hello':
        this.#fail('a second hello');
        return;
      default:
        if (this.#handlers) this.#handlers.control(msg);
        else if (this.#earlyControls.length < EARLY_CONTROLS) this.#earlyControls.push(msg);
        else this.#fail(`more than ${EARLY_CONTROLS} control messages before the link was set up`);
    }
  }

  #onHello(msg: ControlMessage): void {
    const wait = this.#helloWait;
    const hello = parseHello(msg);
    if (typeof hello === 'string') {
      this.#fail(hello);
      return;
    }
    const refused = this.#opts.verify?.(hello);
    if (refused !== undefined) {
      this.#log.warn(
        { peer: this.remote, host: hello.host, reason: refused },
        `refused link peer ${this.remote}: ${refused}`,
      );
      this.#egress.raw(encodeControl({ type: 'bye', reason: `refused: ${refused}` }));
      this.#egress.flush();
      this.#setClose(`refused the peer: ${refused}`, 'refused-peer');
      this.#failed = true;
      this.#egress.kill();
      this.#sock.end();
      setTimeout(() => this.#sock.destroy(), 500).unref();
      return;
    }
    this.peer = hello;
    this.#offloads = hello.offloads === true && this.#opts.hello.offloads !== false;
    clearTimeout(this.#helloTimer);
    this.#helloWait = undefined;
    this.#keepalive.start(
      (t) => this.#egress.raw(encodeControl({ type: 'ping', t })),
      (ms) => {
        this.#log.warn({ peer: this.remote }, `link to ${this.remote}: nothing received for ${ms} ms`);
        this.destroy(`keepalive timeout: nothing received for ${ms} ms`, 'timeout');
      },
    );
    wait?.resolve();
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#helloTimer);
    this.#keepalive.stop();
    this.#egress.kill();
    if (this.#decoder.partial || this.#opts.reader?.partial) this.#setClose('connection lost mid-record', 'lost');
    else if (this.peer !== undefined) this.#setClose('connection closed by the peer', 'peer-closed');
    else if (this.kind === 'tls')
      // TLS 1.3: the server checks the client's certificate after the client is done, and just closes.
      this.#setClose(
        "peer closed the connection before its hello: it may have refused this host's certificate (is overlay.tls.cert issued by the CA in the peer's overlay.tls.ca?)",
        'cert-refused',
      );
    else this.#setClose('peer closed the connection before its hello', 'hung-up');
    const wait = this.#helloWait;
    this.#helloWait = undefined;
    if (wait) {
      wait.reject(new LinkProtocolError(this.remote, this.#closeReason, this.#closeCause));
      return;
    }
    this.#handlers?.closed(this.#closeReason, this.#closeCause);
  }
}
