/**
 * The `vhost-user` port kind: vmlink as a vhost-user switch
 * (QEMU docs/interop/vhost-user.rst). The guest's virtio-net rings live in
 * memory QEMU shares with vmlink, so a frame between two co-resident VMs is
 * one copy, guest memory to guest memory, with no socket and no syscall per
 * frame; frames for any other port go through the switch like any frame.
 *
 * Control socket: `listen` (vmlink listens, QEMU `-chardev socket,reconnect=N`
 * connects; one front-end at a time) or `connect` (QEMU listens with
 * `server=on`; vmlink dials and re-dials with backoff). The socket is the
 * addon's (accept4, recvmsg with SCM_RIGHTS) watched by a Poller: Node never
 * reads it, so no fd is ever lost in a Node stream.
 *
 * A front-end that breaks the protocol or a guest that breaks its rings is
 * disconnected alone with one log line; the port then waits (or re-dials)
 * for the next one.
 */
import { closeSync } from 'node:fs';
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../native/index.js';
import type { Address } from '../../util/address.js';
import { Backoff } from '../../util/backoff.js';
import { PortAddressError } from '../errors.js';
import { describeOffloadReason, Segmenter } from '../offload/segmenter.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import {
  type BatchContext,
  type BatchResult,
  type Port,
  type PortContext,
  type PortFactory,
  type PortState,
  WriteResult,
} from '../port.js';
import { createPortSocket, prepareUnixPath, removeUnixPath, type SocketAccessSpec } from '../unix-path.js';
import { F, has } from './constants.js';
import { DEFAULT_HOLD_MS, rarpFrame, VhostNetDevice } from './net-device.js';
import { VhostSession } from './session.js';

/** A vhost-user port's validated config (see config/schema.ts). */
export interface VhostUserSpec {
  name: string;
  /** vmlink listens here; QEMU connects (`-chardev socket,path=...,reconnect=N`). */
  listen?: Extract<Address, { type: 'unix' }> | undefined;
  /** vmlink dials QEMU's `server=on` chardev socket, re-dialling with backoff. */
  connect?: Extract<Address, { type: 'unix' }> | undefined;
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  /** The VM's RAM in MiB, for `vmlink qemu-args` (the shared memory backend's size). */
  memory_mb?: number | undefined;
  /** Queue pairs for `vmlink qemu-args` (`queues=N`, `mq=on`); default 1. */
  queues?: number | undefined;
  /** Backpressure: how long a full receive ring may hold up senders without progress (ms); 0 off; default 100. */
  hold_ms?: number | undefined;
  /** Mode, owner and group of the listening socket; default mode 0600. */
  socket?: SocketAccessSpec | undefined;
}

export class VhostUserPort implements Port {
  readonly kind = 'vhost-user';
  readonly name: string;
  readonly #spec: VhostUserSpec;
  readonly #ctx: PortContext;
  readonly #backoff: Backoff;
  #n: NativeAddon | undefined;
  #state: PortState = 'closed';
  #listenFd = -1;
  #listenPoller: Poller | undefined;
  #session: VhostSession | undefined;
  #dev: VhostNetDevice | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #opened = false;
  // counters over all sessions
  #sessions = 0;
  #refused = 0;
  #disconnects = 0;
  #lastError = '';
  #rxFrames = 0;
  #txFrames = 0;
  #rxDropped = 0;
  #txPauses = 0;
  /** Cuts large segments of a kind the guest did not negotiate (UDP, ECN); made at the first one. */
  #seg: Segmenter | undefined;
  /** Offload counters of past sessions. */
  #off = { txGso: 0, txCsum: 0, rxGso: 0, rxCsum: 0, badHeaders: 0, cut: 0 };

  constructor(spec: VhostUserSpec, ctx: PortContext) {
    this.name = spec.name;
    this.#spec = spec;
    this.#ctx = ctx;
    this.#backoff = new Backoff(spec.reconnect?.min_ms ?? 100, spec.reconnect?.max_ms ?? 5000);
  }

  get state(): PortState {
    return this.#state;
  }

  /** True while the guest negotiated GUEST_CSUM, GUEST_TSO4 and GUEST_TSO6: the switch then passes large segments whole. */
  get offloads(): boolean {
    return this.#dev?.offloads.guestTakesOffloads === true;
  }

  get queued(): number {
    return this.#dev?.queued ?? 0;
  }

  async open(): Promise<void> {
    if (this.#opened) return;
    if (this.#closed) throw new PortAddressError(this.name, this.#where(), 'the port was closed; create a new port');
    const n = native();
    this.#n = n;
    this.#opened = true;
    if (this.#spec.listen) await this.#listen(n, this.#spec.listen.path);
    else this.#dial();
  }

  #where(): string {
    return `unix:${(this.#spec.listen ?? this.#spec.connect)?.path ?? '?'}`;
  }

  async #listen(n: NativeAddon, path: string): Promise<void> {
    await prepareUnixPath(this.name, path);
    const fd = n.socket(n.SOCK_STREAM);
    try {
      // Bound and listening with its mode, owner and group in place before QEMU can reach it.
      await createPortSocket(
        this.name,
        path,
        this.#spec.socket,
        (at) => {
          n.bind(fd, at);
          n.listen(fd, 4);
        },
        () => undefined,
      );
    } catch (err) {
      closeSync(fd);
      this.#opened = false;
      if (err instanceof PortAddressError) throw err;
      throw new PortAddressError(this.name, `unix:${path}`, describeError(err), { cause: err });
    }
    this.#listenFd = fd;
    this.#listenPoller = new n.Poller(fd, () => this.#accept());
    this.#listenPoller.start(n.READABLE);
    this.#setState('listening', `waiting for QEMU on unix:${path}`);
  }

  #accept(): void {
    const n = this.#n as NativeAddon;
    for (;;) {
      let fd: number;
      try {
        fd = n.accept(this.#listenFd);
      } catch (err) {
        this.#ctx.logger.warn({ err: describeError(err) }, 'vhost-user accept failed');
        return;
      }
      if (fd < 0) return;
      // The front-end attached may have hung up just before this one connected (a reconnect): its socket's
      // end may not have been read yet. Read it now; a session that ended is gone, not a reason to refuse.
      this.#session?.drain();
      if (this.#session) {
        // One front-end per port: a second one is refused, the first carries on.
        this.#refused++;
        this.#ctx.logger.warn({}, 'vhost-user: a second front-end connected while one is attached; refused');
        closeSync(fd);
        continue;
      }
      this.#attach(n, fd);
    }
  }

  #dial(): void {
    if (this.#closed) return;
    const n = this.#n as NativeAddon;
    const path = (this.#spec.connect as { path: string }).path;
    this.#setState('connecting', `dialling unix:${path}`);
    let fd = -1;
    try {
      fd = n.socket(n.SOCK_STREAM);
      n.connect(fd, path);
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      const delay = this.#backoff.next();
      if (!isSyscallError(err, 'ENOENT') && !isSyscallError(err, 'ECONNREFUSED'))
        this.#ctx.logger.warn({ err: describeError(err), retry_ms: delay }, 'vhost-user dial failed');
      this.#timer = setTimeout(() => this.#dial(), delay);
      return;
    }
    this.#backoff.reset();
    this.#attach(n, fd);
  }

  #attach(n: NativeAddon, fd: number): void {
    this.#sessions++;
    const ctx = this.#ctx;
    let dev: VhostNetDevice | undefined;
    const session = new VhostSession(
      n,
      fd,
      {
        onKick: (q) => dev?.kick(q),
        onRings: () => {
          dev?.ringsChanged();
          this.#setState('up', dev?.rxReady ? 'rings running' : 'front-end attached');
        },
        onRarp: (mac) => ctx.sink(rarpFrame(mac), 0, 60),
        onClose: (reason, err) => this.#detached(session, reason, err),
      },
      { maxMtu: ctx.maxFrameLen - 14 },
    );
    dev = new VhostNetDevice(session, {
      sink: ctx.sink,
      sinkBatch: ctx.sinkBatch,
      onMalformed: ctx.onMalformed,
      maxFrameLen: ctx.maxFrameLen,
      queueLen: ctx.queueLen,
      holdMs: this.#spec.hold_ms ?? DEFAULT_HOLD_MS,
      onRoom: () => ctx.onRoom?.(),
      onError: (err) => session.close('', err),
    });
    this.#session = session;
    this.#dev = dev;
    this.#setState('up', 'front-end attached');
  }

  #detached(session: VhostSession, reason: string, err?: Error): void {
    if (this.#session !== session) return;
    const dev = this.#dev;
    if (dev) {
      dev.stop();
      this.#rxFrames += dev.rxFrames;
      this.#txFrames += dev.txFrames;
      this.#rxDropped += dev.rxDropped;
      this.#txPauses += dev.txPauses;
      const o = dev.offloads;
      this.#off.txGso += o.txGso;
      this.#off.txCsum += o.txCsum;
      this.#off.rxGso += o.rxGso;
      this.#off.rxCsum += o.rxCsum;
      this.#off.badHeaders += o.badHeaders;
    }
    this.#session = undefined;
    this.#dev = undefined;
    this.#disconnects++;
    if (this.#closed) return;
    if (err) {
      this.#lastError = reason;
      this.#ctx.logger.warn({ code: (err as { code?: string }).code }, `vhost-user front-end disconnected: ${reason}`);
    } else {
      this.#ctx.logger.info({}, `vhost-user front-end disconnected: ${reason}`);
    }
    if (this.#spec.listen) this.#setState('listening', reason);
    else {
      this.#setState('connecting', reason);
      this.#timer = setTimeout(() => this.#dial(), this.#backoff.next());
    }
  }

  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta, batch?: BatchContext): WriteResult {
    const dev = this.#dev;
    if (dev === undefined) return WriteResult.DOWN;
    if (meta === undefined || dev.offloads.accepts(meta)) return dev.write(buf, off, len, meta, batch);
    return this.#cut(dev, buf, off, len, meta);
  }

  writeBatch(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult): void {
    const dev = this.#dev;
    if (dev === undefined) res.down += count;
    else dev.writeBatch(buf, frames, count, res);
  }

  /** Backpressure: the switch holds this guest's transmit rings (every frame went to full receivers). */
  hold(): void {
    this.#dev?.hold();
  }

  /** Backpressure: read the transmit rings again. */
  release(): void {
    this.#dev?.release();
  }

  /** A frame with metadata the guest cannot take (a large segment of a type it did not negotiate): cut here. */
  #cut(dev: VhostNetDevice, buf: Buffer, off: number, len: number, meta: OffloadMeta): WriteResult {
    this.#seg ??= new Segmenter(this.#ctx.maxFrameLen + 4);
    const seg = this.#seg;
    if (!seg.start(buf, off, len, meta)) {
      this.#ctx.onMalformed(`offload metadata refused: ${describeOffloadReason(seg.reason)}`);
      return WriteResult.OK;
    }
    this.#off.cut++;
    let r: WriteResult = WriteResult.OK;
    for (let l = seg.next(); l > 0; l = seg.next()) {
      const w = dev.write(seg.out, 0, l);
      if (w !== WriteResult.OK && r !== WriteResult.QUEUE_FULL && r !== WriteResult.DOWN) r = w;
    }
    return r;
  }

  describe(): Record<string, unknown> {
    const s = this.#session;
    const d = this.#dev;
    return {
      ...(this.#spec.listen ? { listen: this.#where() } : { connect: this.#where() }),
      memory_mb: this.#spec.memory_mb,
      attached: s !== undefined,
      features: s ? `0x${s.features.toString(16)}` : undefined,
      protocol_features: s ? `0x${s.protocolFeatures.toString(16)}` : undefined,
      event_idx: s ? has(s.features, F.RING_EVENT_IDX) : undefined,
      mrg_rxbuf: s ? s.mrg : undefined,
      offloads: d ? d.offloads.describe() : undefined,
      offload_frames: this.#offloadCounters(d),
      queued: this.queued,
      mtu: s?.mtu || undefined,
      guest_memory_bytes: s?.mem?.bytes,
      guest_memory_sealed: s?.mem ? s.mem.allSealed : undefined,
      rings: s?.rings
        .filter((q) => q.num > 0)
        .map((q) => ({ index: q.index, num: q.num, ready: q.ready, last_avail: q.lastAvail, used: q.usedIdx })),
      migrating: s ? s.log !== undefined : undefined,
      dirty_logs: s?.logBases,
      rx_frames: this.#rxFrames + (d?.rxFrames ?? 0),
      tx_frames: this.#txFrames + (d?.txFrames ?? 0),
      rx_dropped: this.#rxDropped + (d?.rxDropped ?? 0),
      tx_pauses: this.#txPauses + (d?.txPauses ?? 0),
      tx_paused: d?.paused,
      kicks: d?.kicks,
      calls: d?.calls,
      sessions: this.#sessions,
      disconnects: this.#disconnects,
      refused: this.#refused,
      last_error: this.#lastError || undefined,
    };
  }

  /** Offload counters over all sessions: large segments and partial checksums each way, bad headers, frames cut here. */
  #offloadCounters(d: VhostNetDevice | undefined): Record<string, number> {
    const o = this.#off;
    const c = d?.offloads;
    return {
      tx_gso: o.txGso + (c?.txGso ?? 0),
      tx_csum: o.txCsum + (c?.txCsum ?? 0),
      rx_gso: o.rxGso + (c?.rxGso ?? 0),
      rx_csum: o.rxCsum + (c?.rxCsum ?? 0),
      bad_headers: o.badHeaders + (c?.badHeaders ?? 0),
      segmented_here: o.cut,
    };
  }

  #setState(state: PortState, reason: string): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#ctx.onState(state, reason);
  }

  close(): Promise<void> {
    return this.#teardown('closed');
  }

  destroy(err?: Error): Promise<void> {
    return this.#teardown(err ? `destroyed: ${err.message}` : 'destroyed');
  }

  async #teardown(reason: string): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#session?.close(reason);
    this.#listenPoller?.close();
    this.#listenPoller = undefined;
    if (this.#listenFd >= 0) {
      closeSync(this.#listenFd);
      this.#listenFd = -1;
      if (this.#spec.listen) await removeUnixPath(this.#spec.listen.path);
    }
    this.#state = 'closed';
    this.#ctx.onState('closed', reason);
  }
}

/** Factory registered as kind `vhost-user`. */
export const vhostUserPort: PortFactory<VhostUserSpec> = (spec, ctx) => new VhostUserPort(spec, ctx);
