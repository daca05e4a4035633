/**
 * The `host` port kind: bridges an existing host interface (a NIC, a veth,
 * a VLAN device) and a vmlink network into one Ethernet segment, like VNET's
 * proxy on the home network.
 *
 * Transport: an AF_PACKET raw socket (packet(7)) bound to the interface,
 * promiscuous (PACKET_MR_PROMISC, undone by the kernel when the socket
 * closes), with PACKET_IGNORE_OUTGOING so the frames it sends (and the
 * host's own) are not read back: the port never loops its transmissions
 * into the switch. Receive: recvmmsg batches into one buffer, each frame to
 * the sink in place. Egress: copied into one arena, sent with sendmmsg once
 * per event-loop turn, at most ctx.queueLen frames queued; when the device
 * queue is full (EAGAIN) the rest waits for POLLOUT.
 *
 * Caveats (docs/ports.md): the host's own traffic on the interface is not
 * seen (use another interface, or a TAP port, for host <-> VM traffic);
 * GRO/LRO on the interface must be off (they merge frames beyond the MTU
 * before a packet socket sees them; such frames are dropped by the switch as
 * mtu); VLAN tags the NIC strips (rx-vlan-offload) do not reach vmlink.
 */
import { describeError } from '../../errors.js';
import { isSyscallError, type NativeAddon, native, type Poller } from '../../native/index.js';
import { PortOpenError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import { type Port, type PortContext, type PortFactory, type PortState, WriteResult } from '../port.js';
import { destroyReason, FdPortCore, releaseFd } from './fd-port.js';

/** A host port's validated config (see config/schema.ts). */
export interface HostSpec {
  name: string;
  /** The existing interface to bridge (at most 15 bytes). */
  ifname: string;
}

/** The interface could not be used (missing, no permission). */
export class HostPortError extends PortOpenError {}

const RX_BYTES = 2 << 20;
const RX_BATCH_MAX = 64;
const TX_BYTES = 2 << 20;
/** How often a port whose interface went down looks whether it was deleted, ms. */
const LINK_CHECK_MS = 500;

export class HostPort implements Port {
  readonly kind = 'host';
  readonly name: string;
  readonly #ifname: string;
  readonly #ctx: PortContext;
  readonly #slot: number;
  #n: NativeAddon | undefined;
  #fd = -1;
  #poller: Poller | undefined;
  #rx: Buffer | undefined;
  readonly #rxLens: Uint32Array;
  readonly #tx: FrameArena;
  /** State, flush scheduling, batch counters and teardown order shared with the other fd ports. */
  readonly #core: FdPortCore;
  #watchingWrite = false;
  readonly #onPoll = (status: number, events: number): void => this.#ready(status, events);
  #txErrors = 0;
  #linkTimer: NodeJS.Timeout | undefined;

  constructor(spec: HostSpec, ctx: PortContext) {
    this.name = spec.name;
    this.#ifname = spec.ifname;
    this.#ctx = ctx;
    this.#slot = (Math.min(ctx.maxFrameLen, 65536) + 7) & ~7;
    this.#rxLens = new Uint32Array(Math.max(4, Math.min(RX_BATCH_MAX, Math.floor(RX_BYTES / this.#slot))));
    this.#tx = new FrameArena(ctx.queueLen, Math.max(TX_BYTES, 2 * ctx.maxFrameLen));
    this.#core = new FdPortCore(ctx, this.#tx, () => this.#flush());
  }

  get state(): PortState {
    return this.#core.state;
  }

  get queued(): number {
    return this.#tx.queued;
  }

  async open(): Promise<void> {
    if (this.#fd >= 0) return;
    const p = `port "${this.name}"`;
    if (this.#core.closed) throw new HostPortError('ERR_HOST_PORT_CLOSED', `${p} was closed; create a new port`);
    const n = native();
    let fd: number;
    try {
      ({ fd } = n.packetOpen(this.#ifname, true));
    } catch (err) {
      if (isSyscallError(err, 'ENODEV'))
        throw new HostPortError(
          'ERR_HOST_IF_NOT_FOUND',
          `${p}: host interface "${this.#ifname}" does not exist in this network namespace; check the name with \`ip link\``,
          { cause: err },
        );
      if (isSyscallError(err, 'EPERM') || isSyscallError(err, 'EACCES'))
        throw new HostPortError(
          'ERR_HOST_PERMISSION',
          `${p}: not allowed to open a packet socket on "${this.#ifname}"; run vmlink as root or with CAP_NET_RAW`,
          { cause: err },
        );
      throw new HostPortError('ERR_HOST_OPEN', `${p}: cannot bridge "${this.#ifname}": ${describeError(err)}`, {
        cause: err,
      });
    }
    this.#n = n;
    this.#fd = fd;
    this.#rx ??= Buffer.allocUnsafe(this.#rxLens.length * this.#slot);
    this.#poller = new n.Poller(fd, this.#onPoll);
    this.#poller.start(n.READABLE);
    this.#core.setState('up', `bridged to host interface ${this.#ifname}`);
  }

  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.#fd < 0) return WriteResult.DOWN;
    if (!this.#tx.push(buf, off, len)) return WriteResult.QUEUE_FULL;
    const c = this.#core;
    if (c.scheduled === undefined && !this.#watchingWrite) c.scheduled = setImmediate(c.flushBound);
    return WriteResult.OK;
  }

  /** sendmmsg of the queue; a frame the kernel refuses (too big, device down) is skipped and counted. */
  #flush(): void {
    this.#core.scheduled = undefined;
    const n = this.#n;
    if (n === undefined || this.#fd < 0) return;
    const tx = this.#tx;
    let done = tx.queued === 0;
    while (!done) {
      let next: number;
      try {
        next = n.sendBatch(this.#fd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null);
      } catch (err) {
        this.#txErrors++;
        this.#core.lastError = describeError(err);
        done = tx.advance(tx.head + 1);
        continue;
      }
      this.#core.txBatches++;
      this.#core.txFrames += next - tx.head;
      if (next === tx.head) break; // EAGAIN
      done = tx.advance(next);
    }
    if (done === this.#watchingWrite) {
      this.#watchingWrite = !done;
      this.#poller?.start(done ? n.READABLE : n.READABLE | n.WRITABLE);
    }
  }

  #ready(status: number, events: number): void {
    const n = this.#n;
    if (n === undefined || this.#fd < 0) return;
    if (status < 0) {
      // libuv stops the watcher on POLLERR: the socket has ENETDOWN pending (the interface went down or away).
      this.#read(n); // takes the pending error
      if (this.#fd >= 0 && this.#core.state === 'up')
        this.#poller?.start(this.#watchingWrite ? n.READABLE | n.WRITABLE : n.READABLE);
      return;
    }
    if (events & n.WRITABLE) this.#flush();
    if (events & n.READABLE) this.#read(n);
  }

  /** One recvmmsg batch into the sink. Hot path: nothing allocated per frame. */
  #read(n: NativeAddon): void {
    const rx = this.#rx as Buffer;
    const lens = this.#rxLens;
    const slot = this.#slot;
    let count: number;
    try {
      count = n.recvBatch(this.#fd, rx, slot, lens, null);
    } catch (err) {
      // ENETDOWN: the interface went down (the port stays) or was deleted (the port is down for good).
      this.#core.lastError = describeError(err);
      this.#watchLink();
      return;
    }
    this.#core.rxBatches++;
    this.#core.rxFrames += count;
    const sink = this.#ctx.sink;
    for (let i = 0; i < count; i++) {
      const len = lens[i] as number;
      if (len > slot) this.#ctx.onMalformed(`frame of ${len} bytes from ${this.#ifname} (GRO/LRO on?)`);
      else sink(rx, i * slot, len);
    }
  }

  /**
   * After ENETDOWN: the kernel reports an interface going down and one being
   * deleted alike, and only once (while the name still resolves). So look
   * again twice a second until the name is gone (the port is down for good)
   * or a frame arrives (the interface is back; the socket resumes by itself).
   */
  #watchLink(): void {
    if (this.#linkTimer !== undefined) return;
    const rx = this.#core.rxFrames;
    const check = (): void => {
      this.#linkTimer = undefined;
      const n = this.#n;
      if (n === undefined || this.#fd < 0 || this.#core.rxFrames !== rx) return;
      if (n.ifIndex(this.#ifname) === 0) {
        this.#poller?.stop();
        this.#core.setState('down', `host interface ${this.#ifname} was deleted`);
        return;
      }
      this.#linkTimer = setTimeout(check, LINK_CHECK_MS);
      this.#linkTimer.unref();
    };
    this.#linkTimer = setTimeout(check, 0);
    this.#linkTimer.unref();
  }

  describe(): Record<string, unknown> {
    return {
      ifname: this.#ifname,
      ...this.#core.counters(),
      tx_errors: this.#txErrors,
      last_error: this.#core.lastError || undefined,
    };
  }

  async close(): Promise<void> {
    if (this.#fd >= 0) this.#flush();
    this.#teardown('closed');
  }

  async destroy(err?: Error): Promise<void> {
    this.#teardown(destroyReason(err));
  }

  #teardown(reason: string): void {
    this.#core.teardown(reason, () => {
      clearTimeout(this.#linkTimer);
      this.#fd = releaseFd(this.#poller, this.#fd);
      this.#poller = undefined;
    });
  }
}

/** Factory registered as kind `host`. */
export const hostPort: PortFactory<HostSpec> = (spec, ctx) => new HostPort(spec, ctx);
