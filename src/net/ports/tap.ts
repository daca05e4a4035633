/**
 * The `tap` port kind: a Linux TAP interface (Documentation/networking/tuntap.rst)
 * joined to a vmlink network, for network namespaces, containers and hosts.
 *
 * Data path: the fd is non-blocking and watched by a uv_poll {@link Poller};
 * each readable event reads a batch of frames into one buffer with one native
 * call and hands each to the sink in place. Egress frames are copied into one
 * arena and written as a batch (one writev per frame, many frames per native
 * call) once per event-loop turn (setImmediate); the queue holds at most
 * ctx.queueLen frames. A large frame (a 64 KB segment) that finds the queue
 * empty is written at once from where it lies, without the copy.
 *
 * Interface set-up (MTU, up) uses ioctls in the addon, not `ip link`: no tool
 * needed, no child process per port.
 *
 * vnet_hdr: the TAP carries a 12-byte virtio_net_hdr (virtio 1.2 §5.1.6) per
 * frame, and the port takes offloads (Port.offloads). Unless `offloads: false`,
 * TUNSETOFFLOAD asks the kernel for checksum, TSO4/6 (with ECN) and USO4/6
 * offloads, as much of that as it accepts: the kernel then hands the port
 * 64 KB TCP segments with partial checksums instead of MTU-sized frames. Each
 * frame's header goes to the switch as OffloadMeta with the frame: whole to
 * ports that take offloads, segmented in software for the others
 * (src/net/offload/). Frames written carry their metadata in the header (an
 * all-zero header for complete frames), so large segments pass from TAP to TAP
 * untouched (Menon et al.: per-packet cost dominates; carry large segments
 * across the virtualization boundary).
 */
import { closeSync } from 'node:fs';
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon, native, type SyscallError } from '../../native/index.js';
import { PortOpenError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import { OffloadMeta, readVnetHdr, VNET_HDR_LEN, writeVnetHdr } from '../offload/vnet-hdr.js';
import { type PortContext, type PortFactory, WriteResult } from '../port.js';
import { FdPort } from './fd-port-base.js';
import { OFFLOAD_TRIES, offloadNames } from './tap-offloads.js';

/** A TAP port's validated config (see config/schema.ts). */
export interface TapSpec {
  name: string;
  /** Interface name (at most 15 bytes; `%d` lets the kernel pick a number). */
  ifname: string;
  /** true (default): create the TAP (or attach when it exists); false: it must exist (a persistent TAP). */
  create?: boolean | undefined;
  /** Interface MTU in bytes to set at open; default: leave it as it is. */
  mtu?: number | undefined;
  /** Bring the interface up at open; default true. */
  up?: boolean | undefined;
  /** Carry a virtio_net_hdr per frame (IFF_VNET_HDR); default false. */
  vnet_hdr?: boolean | undefined;
  /** With vnet_hdr: ask the kernel for checksum/TSO/USO offloads (TUNSETOFFLOAD); default true. Ignored without vnet_hdr. */
  offloads?: boolean | undefined;
}

/** A TAP interface could not be opened or set up. */
export class TapError extends PortOpenError {}

/** Valid Linux interface names (dev_valid_name), with `%d` allowed once. */
const IFNAME_RE = /^(?!\.{1,2}$)[^\s/:%]*(?:%d)?[^\s/:%]*$/;

export { VNET_HDR_LEN };

/** Frames at least this long are written from where they lie when nothing is queued (no copy into the arena). */
const DIRECT_MIN = 16 * 1024;
/** Frames read per native call at most. */
const RX_BATCH = 256;
/** Receive buffer (frames are packed, each read needs room for the largest frame). */
const RX_BYTES = 1 << 20;
/** Egress arena (frames queued in one event-loop turn). */
const TX_BYTES = 2 << 20;
/** The same with vnet_hdr, where frames may be 64 KB segments (about 60 per read). */
const RX_BYTES_VNET = 4 << 20;
const TX_BYTES_VNET = 8 << 20;

export class TapPort extends FdPort {
  readonly kind = 'tap';
  readonly #spec: TapSpec;
  readonly #ctx: PortContext;
  readonly #hdr: number;
  #ifname = '';
  // receive
  #rx: Buffer | undefined;
  readonly #rxOffs = new Uint32Array(RX_BATCH);
  readonly #rxLens = new Uint32Array(RX_BATCH);
  readonly #txErrs = new Int32Array(2);
  /** Offset and length of a frame written directly, and its virtio_net_hdr. */
  readonly #direct = { offs: new Uint32Array(1), lens: new Uint32Array(1) };
  readonly #directHdr = Buffer.alloc(VNET_HDR_LEN);
  /** TUNSETOFFLOAD bits the kernel accepted (0: none). */
  #offload = 0;
  /** Metadata of the frame being handed to the sink (reused). */
  readonly #meta = new OffloadMeta();
  /** Frames [#rxNext, #rxCount) of the last read wait in #rx: the switch held the port while they were handed on. */
  #rxNext = 0;
  #rxCount = 0;
  #resuming: NodeJS.Immediate | undefined;
  readonly #resumeBound = (): void => this.#resume();
  // counters for describe()
  #txErrors = 0;
  #lastTxErrno = 0;
  #lastTxLog = -Infinity;

  constructor(spec: TapSpec, ctx: PortContext) {
    const txBytes = spec.vnet_hdr ? TX_BYTES_VNET : TX_BYTES;
    super(spec.name, ctx, new FrameArena(ctx.queueLen, Math.max(txBytes, 2 * ctx.maxFrameLen)));
    this.#spec = spec;
    this.#ctx = ctx;
    this.#hdr = spec.vnet_hdr ? VNET_HDR_LEN : 0;
  }

  /** A vnet_hdr TAP takes large segments and partial checksums (the kernel finishes them). */
  get offloads(): boolean {
    return this.#hdr > 0;
  }

  /** The interface name the kernel gave (differs from the spec with `%d`); '' before open. */
  get ifname(): string {
    return this.#ifname;
  }

  async open(): Promise<void> {
    if (this.core.fd >= 0) return;
    if (this.core.closed) throw new TapError('ERR_TAP_CLOSED', `port "${this.name}" was closed; create a new port`);
    const { ifname } = this.#spec;
    const n = native();
    if (Buffer.byteLength(ifname) >= n.IFNAMSIZ || ifname === '' || !IFNAME_RE.test(ifname)) {
      throw new TapError(
        'ERR_TAP_IFNAME',
        `port "${this.name}": "${ifname}" is not a valid interface name; use 1-15 characters without '/', ':' or spaces (e.g. vmtap0, or vmtap%d to let the kernel number it)`,
      );
    }
    const attach = this.#spec.create === false;
    const fd = this.#openTap(n, ifname, attach);
    try {
      if (this.#spec.mtu !== undefined) n.ifSetMtu(this.#ifname, this.#spec.mtu);
      if (this.#spec.up !== false) n.ifSetUp(this.#ifname, true);
    } catch (err) {
      closeSync(fd);
      const what =
        isSyscallError(err) && err.syscall === 'ioctl SIOCSIFMTU' ? `set MTU ${this.#spec.mtu} on` : 'set up';
      throw new TapError(
        'ERR_TAP_SETUP',
        `port "${this.name}": cannot ${what} ${this.#ifname}: ${describeError(err)}`,
        {
          cause: err,
        },
      );
    }
    this.#rx ??= Buffer.allocUnsafe(
      Math.max(this.#hdr ? RX_BYTES_VNET : RX_BYTES, 4 * (this.#ctx.maxFrameLen + this.#hdr + 1)),
    );
    this.core.attach(n, fd);
    this.core.setState('up', `TAP ${this.#ifname} open`);
  }
  /** tapOpen with the largest offload set the kernel accepts (none without vnet_hdr); returns the fd. */
  #openTap(n: NativeAddon, ifname: string, attach: boolean): number {
    const tries: readonly number[] = this.#hdr === 0 ? [-1] : this.#spec.offloads === false ? [0] : OFFLOAD_TRIES;
    for (let i = 0; ; i++) {
      const flags = tries[i] as number;
      try {
        const r = n.tapOpen(ifname, attach, this.#hdr, flags);
        this.#ifname = r.name;
        this.#offload = Math.max(flags, 0);
        return r.fd;
      } catch (err) {
        const refused = isSyscallError(err) && err.syscall === 'ioctl TUNSETOFFLOAD' && err.code === 'EINVAL';
        if (!refused || i + 1 >= tries.length) throw this.#openError(err, ifname, attach);
      }
    }
  }

  #openError(err: unknown, ifname: string, attach: boolean): Error {
    const code = isSyscallError(err) ? (err as SyscallError).code : '';
    const p = `port "${this.name}"`;
    if (code === 'ENODEV' && attach)
      return new TapError(
        'ERR_TAP_NOT_FOUND',
        `${p}: TAP interface "${ifname}" does not exist; create it first (ip tuntap add dev ${ifname} mode tap) or set create: true`,
        { cause: err },
      );
    if (code === 'EPERM' || code === 'EACCES')
      return new TapError(
        'ERR_TAP_PERMISSION',
        `${p}: not allowed to open TAP "${ifname}" (${code}); run vmlink as root or with CAP_NET_ADMIN, or create the TAP persistent with your user as owner (ip tuntap add dev ${ifname} mode tap user USER)`,
        { cause: err },
      );
    if (code === 'EBUSY')
      return new TapError(
        'ERR_TAP_BUSY',
        `${p}: TAP "${ifname}" is already in use by another process; close it there or pick another ifname`,
        {
          cause: err,
        },
      );
    if (code === 'EINVAL')
      return new TapError(
        'ERR_TAP_IFNAME',
        `${p}: cannot use "${ifname}" as a TAP: the name is invalid or taken by an interface that is not a TAP with matching flags (vnet_hdr ${this.#hdr ? 'on' : 'off'}); choose another ifname`,
        { cause: err },
      );
    return new TapError('ERR_TAP_OPEN', `${p}: cannot open TAP "${ifname}": ${describeError(err)}`, { cause: err });
  }

  override write(buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    const c = this.core;
    if (c.state !== 'up' || c.closing) return WriteResult.DOWN;
    if (len >= DIRECT_MIN && this.core.tx.queued === 0 && !c.waitingWritable && this.#writeDirect(buf, off, len, meta))
      return WriteResult.OK;
    if (!this.#enqueue(buf, off, len, meta)) {
      // Full within one event-loop turn (e.g. large segments cut into many frames for this TAP): send what is
      // queued now rather than drop, unless the TAP itself pushes back (EAGAIN: waiting for POLLOUT).
      if (c.waitingWritable) return WriteResult.QUEUE_FULL;
      c.cancelFlush();
      c.flush();
      if (!this.#enqueue(buf, off, len, meta)) return WriteResult.QUEUE_FULL;
    }
    c.schedule();
    return WriteResult.OK;
  }

  /**
   * Writes one large frame (a 64 KB segment) from where it lies, with its
   * virtio_net_hdr, in one writev: no copy into the arena. Only with nothing
   * queued (order). False when the TAP would block: the caller queues it.
   */
  #writeDirect(buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): boolean {
    const c = this.core;
    const h = this.#hdr;
    if (h > 0) writeVnetHdr(meta, this.#directHdr, 0, h);
    const d = this.#direct;
    d.offs[0] = off;
    d.lens[0] = len;
    const errs = this.#txErrs;
    errs[0] = 0;
    const hdr = h > 0 ? this.#directHdr : null;
    if ((c.n as NativeAddon).writeBatch(c.fd, buf, d.offs, d.lens, 0, 1, hdr, errs) === 0) return false;
    c.txBatches++;
    c.txFrames++;
    if (errs[0]) this.#txFailed(errs[0], errs[1] as number);
    return true;
  }

  /** Copies a frame (after its virtio_net_hdr, with vnet_hdr) into the egress arena; false when it is full. */
  #enqueue(buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): boolean {
    const h = this.#hdr;
    if (h === 0) return this.core.tx.push(buf, off, len);
    const at = this.core.tx.pushAfter(h, buf, off, len);
    if (at < 0) return false;
    writeVnetHdr(meta, this.core.tx.buf, at, h);
    return true;
  }

  protected override pollError(status: number): void {
    this.#down(`poll error ${status} (the interface was probably deleted)`);
  }

  /** FdIo.send: one writev per queued frame, many per native call; refused frames are counted, not thrown. */
  protected sendBatch(tx: FrameArena): number {
    const c = this.core;
    const errs = this.#txErrs;
    errs[0] = 0;
    const next = (c.n as NativeAddon).writeBatch(c.fd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null, errs);
    if (errs[0]) this.#txFailed(errs[0], errs[1] as number);
    return next;
  }

  /** Frames the kernel refused (EIO while the interface is down, ...): counted, logged at most once a second. */
  #txFailed(count: number, errno: number): void {
    this.#txErrors += count;
    this.#lastTxErrno = errno;
    const now = performance.now();
    if (now - this.#lastTxLog < 1000) return;
    this.#lastTxLog = now;
    this.#ctx.logger.warn(
      { ifname: this.#ifname, errno, total: this.#txErrors },
      errno === 5 ? 'TAP interface is down: frames to it are dropped (ip link set dev IF up)' : 'TAP refused frames',
    );
  }

  /** FdIo.read: one batch from the TAP into the sink. Hot path: no allocation per frame. */
  protected readBatch(): void {
    const c = this.core;
    // What a hold left of the last read goes first (and alone: the port may be held again).
    if (this.#rxNext < this.#rxCount) {
      this.#deliver(this.#rxNext, this.#rxCount);
      return;
    }
    const rx = this.#rx as Buffer;
    const offs = this.#rxOffs;
    const lens = this.#rxLens;
    const h = this.#hdr;
    const max = this.#ctx.maxFrameLen + h;
    let count: number;
    try {
      // One byte of room beyond the largest frame: a longer frame shows as longer, not cut to fit.
      count = (c.n as NativeAddon).readBatch(c.fd, rx, max + 1, offs, lens);
    } catch (err) {
      this.#down(`read failed: ${describeError(err)}`);
      return;
    }
    if (count < 0) {
      this.#down('end of file on the TAP fd');
      return;
    }
    c.rxBatches++;
    c.rxFrames += count;
    this.#deliver(0, count);
  }

  /**
   * Hands frames [from, count) of the last read to the sink. When the switch
   * holds the port meanwhile (backpressure), the rest waits in the read
   * buffer for {@link release}, so it does not overrun the full receiver.
   */
  #deliver(from: number, count: number): void {
    const rx = this.#rx as Buffer;
    const offs = this.#rxOffs;
    const lens = this.#rxLens;
    const h = this.#hdr;
    const max = this.#ctx.maxFrameLen + h;
    const sink = this.#ctx.sink;
    const c = this.core;
    this.#rxCount = count;
    this.#rxNext = count;
    try {
      for (let i = from; i < count; i++) {
        if (c.held) {
          this.#rxNext = i;
          return;
        }
        const off = offs[i] as number;
        const len = lens[i] as number;
        if (len > max) {
          this.#ctx.onMalformed(`TAP read of ${len - h} bytes is longer than the largest frame of ${max - h}`);
        } else if (h === 0) {
          sink(rx, off, len);
        } else if (len < h) {
          this.#ctx.onMalformed(`TAP read of ${len} bytes is shorter than the ${h}-byte virtio_net_hdr`);
        } else {
          // The header's fields go with the frame; the switch checks them (src/net/offload/).
          const m = this.#meta;
          readVnetHdr(rx, off, m);
          if (m.active) sink(rx, off + h, len - h, m);
          else sink(rx, off + h, len - h);
        }
      }
    } catch (err) {
      // The sink never throws by contract; if it does, keep the port alive and say so.
      this.#ctx.logger.error({ err: describeError(err) }, 'frame sink threw; frames of this batch were lost');
    }
  }

  /** Backpressure: hands on what the hold left of the last read (next turn: not inside the receiver's call), then reads again. */
  override release(): void {
    if (!this.core.held) return;
    this.#resuming ??= setImmediate(this.#resumeBound);
  }

  #resume(): void {
    this.#resuming = undefined;
    const c = this.core;
    if (!c.held) return;
    c.release();
    if (c.fd >= 0 && this.#rxNext < this.#rxCount) this.#deliver(this.#rxNext, this.#rxCount);
  }

  #down(reason: string): void {
    if (this.core.state === 'down' || this.core.fd < 0) return;
    this.#ctx.logger.warn({ ifname: this.#ifname, reason }, 'TAP port down');
    this.core.down(reason);
  }

  describe(): Record<string, unknown> {
    return {
      ifname: this.#ifname || this.#spec.ifname,
      create: this.#spec.create !== false,
      vnet_hdr: this.#hdr > 0,
      offloads: offloadNames(this.#offload),
      mtu: this.#spec.mtu,
      ...this.core.counters(),
      tx_errors: this.#txErrors,
      last_tx_errno: this.#lastTxErrno || undefined,
    };
  }
}

/** Factory registered as kind `tap`. */
export const tapPort: PortFactory<TapSpec> = (spec, ctx) => new TapPort(spec, ctx);
