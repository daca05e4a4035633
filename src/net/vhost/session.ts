/**
 * One vhost-user connection, back-end side (docs/interop/vhost-user.rst):
 * reads front-end messages from the control socket (the addon's recvmsg, so
 * SCM_RIGHTS fds arrive with their message; Node never reads this socket),
 * answers them, and owns what they set up: the negotiated features, the
 * mapped guest memory, the dirty log, the rings and their eventfds (the ring
 * messages are handled in session-rings.ts, the offered features are in
 * features.ts).
 *
 * The net device (what moves frames) sits on top, through {@link SessionHooks}.
 * Any protocol error closes the session: one reason, reported once through
 * `onClose`; the caller logs it.
 */
import { describeError } from '../../errors.js';
import type { NativeAddon, Poller } from '../../native/index.js';
import { F, FLAG_REPLY, has, MAX_QUEUE_PAIRS, ProtoF, Req } from './constants.js';
import { VhostMemoryFaultError, VhostProtocolError } from './errors.js';
import { watchFaults } from './fault-watch.js';
import { closeQuietly } from './fds.js';
import { OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, unoffered } from './features.js';
import { DirtyLog, GuestMemory, parseMemTable, readU64 } from './memory.js';
import { encodeMessage, encodeU64Reply, type Message, MessageReader, needsReply, validateMessage } from './message.js';
import { SessionRings } from './session-rings.js';
import type { Virtqueue } from './virtqueue.js';

/** What the net device hears from the session. */
export interface SessionHooks {
  /** A ring's kick eventfd fired (or the ring just started): process it. */
  onKick(q: Virtqueue): void;
  /** Rings were started, stopped or re-mapped. */
  onRings(): void;
  /** SEND_RARP after migration: announce this MAC. */
  onRarp(mac: Buffer): void;
  /** The session ended (peer closed, protocol error, or close()); called once. */
  onClose(reason: string, err?: Error): void;
}

export interface SessionOptions {
  /** Largest MTU NET_SET_MTU may set. */
  maxMtu: number;
}

const RECV_BYTES = 8192;

export class VhostSession {
  /** The rings, indexed as the front-end numbers them (rx even, tx odd). */
  readonly rings: Virtqueue[];
  /** Negotiated device features (SET_FEATURES). */
  features = 0;
  /** Negotiated protocol features. */
  protocolFeatures = 0;
  /** MTU set by NET_SET_MTU (0: none). */
  mtu = 0;
  mem: GuestMemory | undefined;
  /** Messages handled (for describe()). */
  messages = 0;
  /** SET_LOG_BASE messages (a migration each, for describe()). */
  logBases = 0;
  readonly #n: NativeAddon;
  readonly #fd: number;
  readonly #hooks: SessionHooks;
  readonly #opts: SessionOptions;
  readonly #reader = new MessageReader();
  readonly #buf = Buffer.allocUnsafe(RECV_BYTES);
  readonly #poller: Poller;
  readonly #rings: SessionRings;
  #log: DirtyLog | undefined;
  #closed = false;
  readonly #unwatch: () => void;

  constructor(n: NativeAddon, fd: number, hooks: SessionHooks, opts: SessionOptions) {
    this.#n = n;
    this.#fd = fd;
    this.#hooks = hooks;
    this.#opts = opts;
    this.#rings = new SessionRings(n, {
      mem: () => this.mem,
      closed: () => this.#closed,
      send: (b) => this.#send(b),
      onKick: (q) => hooks.onKick(q),
      onRings: () => hooks.onRings(),
    });
    this.rings = this.#rings.rings;
    this.#poller = new n.Poller(fd, (status) => this.#readable(status));
    this.#poller.start(n.READABLE);
    this.#unwatch = watchFaults(n, () => {
      const fault = this.memoryFault();
      if (fault) this.close('', fault);
    });
  }

  /**
   * Handles whatever the front-end has sent so far, now (not when the loop
   * next polls the socket); when it has closed the connection, the session
   * ends here. The port calls this before it refuses a new front-end: the old
   * one may have hung up just before.
   */
  drain(): void {
    this.#readable(0);
  }

  /** An error naming the memory that faulted (the front-end shrank a memory file under an access), else undefined. */
  memoryFault(): VhostMemoryFaultError | undefined {
    return this.mem?.fault() ?? this.#log?.fault();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Mergeable receive buffers negotiated (kept as a field: read per frame). */
  mrg = false;

  #readable(status: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.close(`control socket error ${status}`);
      return;
    }
    for (;;) {
      let r: ReturnType<NativeAddon['recvFds']>;
      try {
        r = this.#n.recvFds(this.#fd, this.#buf);
      } catch (err) {
        this.close(`control socket read failed: ${describeError(err)}`);
        return;
      }
      if (r === null) return;
      if (r.truncated) {
        for (const fd of r.fds) closeQuietly(fd);
        this.close('', new VhostProtocolError('a message carried more fds than fit (SCM_RIGHTS truncated)'));
        return;
      }
      if (r.bytes === 0) {
        this.close('the front-end closed the connection');
        return;
      }
      const err = this.#reader.feed(this.#buf, 0, r.bytes, r.fds, (m) => this.#message(m));
      if (err) this.close('', err);
      if (this.#closed) {
        // Closed by a message of this chunk (and perhaps a bad header after it): fds that came with the
        // chunk reached the reader after close() emptied it (found by a property test: they leaked).
        for (const fd of this.#reader.takeFds()) closeQuietly(fd);
        return;
      }
    }
  }

  #message(m: Message): void {
    if (this.#closed) {
      for (const fd of m.fds) closeQuietly(fd);
      return;
    }
    this.messages++;
    const bad = validateMessage(m);
    if (bad) {
      for (const fd of m.fds) closeQuietly(fd);
      this.close('', bad);
      return;
    }
    try {
      const replied = this.#handle(m);
      if (!replied && needsReply(m) && has(this.protocolFeatures, ProtoF.REPLY_ACK))
        this.#send(encodeU64Reply(m.request, 0));
    } catch (err) {
      if (needsReply(m) && has(this.protocolFeatures, ProtoF.REPLY_ACK) && !this.#closed) {
        try {
          this.#send(encodeU64Reply(m.request, 1));
        } catch {
          // the close below says why
        }
      }
      this.close('', err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Handles one valid message; true when it sent its own reply. */
  #handle(m: Message): boolean {
    const p = m.payload;
    switch (m.request) {
      case Req.GET_FEATURES:
        this.#send(encodeU64Reply(m.request, OFFERED_FEATURES));
        return true;
      case Req.SET_FEATURES:
        this.#setFeatures(readU64(p, 0));
        return false;
      case Req.GET_PROTOCOL_FEATURES:
        this.#send(encodeU64Reply(m.request, OFFERED_PROTOCOL_FEATURES));
        return true;
      case Req.SET_PROTOCOL_FEATURES: {
        const f = readU64(p, 0);
        const extra = unoffered(f, OFFERED_PROTOCOL_FEATURES);
        if (extra.length)
          throw new VhostProtocolError(`SET_PROTOCOL_FEATURES: bits ${extra.join(',')} were not offered`);
        this.protocolFeatures = f;
        return false;
      }
      case Req.GET_QUEUE_NUM:
        this.#send(encodeU64Reply(m.request, MAX_QUEUE_PAIRS));
        return true;
      case Req.SET_OWNER:
        return false;
      case Req.RESET_OWNER:
        this.#stopAll();
        this.features = 0;
        this.mrg = false;
        this.#hooks.onRings();
        return false;
      case Req.SET_MEM_TABLE:
        this.#setMemTable(parseMemTable(p), m.fds);
        return false;
      case Req.SET_LOG_BASE:
        this.#setLogBase(readU64(p, 0), readU64(p, 8), m.fds[0] as number);
        this.#send(encodeMessage(m.request, FLAG_REPLY));
        return true;
      case Req.SET_LOG_FD:
        closeQuietly(m.fds[0] as number);
        return false;
      case Req.NET_SET_MTU: {
        const mtu = readU64(p, 0);
        if (mtu < 68 || mtu > this.#opts.maxMtu)
          throw new VhostProtocolError(`NET_SET_MTU ${mtu}: must be 68-${this.#opts.maxMtu} on this port`);
        this.mtu = mtu;
        return false;
      }
      case Req.SEND_RARP:
        this.#hooks.onRarp(Buffer.from(p.subarray(0, 6)));
        return false;
      default:
        return this.#rings.message(m);
    }
  }

  #setFeatures(f: number): void {
    const extra = unoffered(f, OFFERED_FEATURES);
    if (extra.length) throw new VhostProtocolError(`SET_FEATURES: bits ${extra.join(',')} were not offered`);
    this.features = f;
    this.mrg = has(f, F.NET_MRG_RXBUF);
    const eventIdx = has(f, F.RING_EVENT_IDX);
    const logAll = has(f, F.LOG_ALL);
    for (const q of this.rings) {
      q.eventIdx = eventIdx;
      q.log = logAll ? this.#log : undefined;
      // Without protocol features a ring is enabled as soon as it starts (vhost-user.rst "Ring states").
      if (!has(f, F.PROTOCOL_FEATURES)) q.enabled = true;
    }
    this.#hooks.onRings();
  }

  /** The dirty log in use while VHOST_F_LOG_ALL is negotiated; undefined otherwise. */
  get log(): DirtyLog | undefined {
    return has(this.features, F.LOG_ALL) ? this.#log : undefined;
  }

  #setMemTable(regions: ReturnType<typeof parseMemTable>, fds: number[]): void {
    const mem = GuestMemory.map(this.#n, regions, fds);
    const old = this.mem;
    this.mem = mem;
    try {
      for (const q of this.rings) q.attach(mem);
    } finally {
      old?.unmap();
    }
    this.#hooks.onRings();
  }

  #setLogBase(size: number, offset: number, fd: number): void {
    if (!has(this.protocolFeatures, ProtoF.LOG_SHMFD)) {
      closeQuietly(fd);
      throw new VhostProtocolError('SET_LOG_BASE without the LOG_SHMFD protocol feature');
    }
    const log = new DirtyLog(this.#n, fd, size, offset);
    this.logBases++;
    this.#log?.unmap();
    this.#log = log;
    const logAll = has(this.features, F.LOG_ALL);
    for (const q of this.rings) q.log = logAll ? log : undefined;
  }

  #stopAll(): void {
    this.#rings.stopAll();
    this.mem?.unmap();
    this.mem = undefined;
    this.#log?.unmap();
    this.#log = undefined;
  }

  /** Interrupts the guest for ring `q` (eventfd write on its call fd). */
  call(q: Virtqueue): void {
    this.#rings.call(q);
  }

  #send(b: Buffer): void {
    const sent = this.#n.sendFds(this.#fd, b, []);
    if (sent !== b.length) throw new VhostProtocolError(`reply of ${b.length} bytes: only ${sent} sent`);
  }

  /**
   * Ends the session: unmaps memory, closes every fd it owns (the control
   * socket too) and reports `reason` (or `err`) once. Idempotent.
   */
  close(reason: string, err?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    // A fault explains whatever else went wrong after it (the access read zeros): report it instead.
    if (!(err instanceof VhostMemoryFaultError)) {
      const fault = this.memoryFault();
      if (fault) err = fault;
    }
    this.#poller.close();
    this.#stopAll();
    for (const fd of this.#reader.takeFds()) closeQuietly(fd);
    closeQuietly(this.#fd);
    this.#hooks.onClose(err ? err.message : reason, err);
  }
}
