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
import { isSyscallError, type NativeAddon, native } from '../../native/index.js';
import { PortOpenError } from '../errors.js';
import { FrameArena } from '../frame-arena.js';
import type { PortContext, PortFactory } from '../port.js';
import { FdPort } from './fd-port-base.js';

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

export class HostPort extends FdPort {
  readonly kind = 'host';
  readonly #ifname: string;
  readonly #ctx: PortContext;
  readonly #slot: number;
  #rx: Buffer | undefined;
  readonly #rxLens: Uint32Array;
  #linkTimer: NodeJS.Timeout | undefined;

  constructor(spec: HostSpec, ctx: PortContext) {
    super(spec.name, ctx, new FrameArena(ctx.queueLen, Math.max(TX_BYTES, 2 * ctx.maxFrameLen)));
    this.#ifname = spec.ifname;
    this.#ctx = ctx;
    this.#slot = (Math.min(ctx.maxFrameLen, 65536) + 7) & ~7;
    this.#rxLens = new Uint32Array(Math.max(4, Math.min(RX_BATCH_MAX, Math.floor(RX_BYTES / this.#slot))));
  }

  async open(): Promise<void> {
    if (this.core.fd >= 0) return;
    const p = `port "${this.name}"`;
    if (this.core.closed) throw new HostPortError('ERR_HOST_PORT_CLOSED', `${p} was closed; create a new port`);
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
    this.#rx ??= Buffer.allocUnsafe(this.#rxLens.length * this.#slot);
    this.core.attach(n, fd);
    this.core.setState('up', `bridged to host interface ${this.#ifname}`);
  }

  /** FdIo.send: sendmmsg; a frame the kernel refuses (too big, device down) throws: the core skips and counts it. */
  protected sendBatch(tx: FrameArena): number {
    return (this.core.n as NativeAddon).sendBatch(this.core.fd, tx.buf, tx.offs, tx.lens, tx.head, tx.count, null);
  }

  /** libuv stops the watcher on POLLERR: the socket has ENETDOWN pending (the interface went down or away). */
  protected override pollError(): void {
    if (!this.core.held) this.readBatch(); // takes the pending error (held: the next read does)
    if (this.core.fd >= 0 && this.core.state === 'up') this.core.arm();
  }

  /** FdIo.read: one recvmmsg batch into the sink. Hot path: nothing allocated per frame. */
  protected readBatch(): void {
    const c = this.core;
    const rx = this.#rx as Buffer;
    const lens = this.#rxLens;
    const slot = this.#slot;
    let count: number;
    try {
      count = (c.n as NativeAddon).recvBatch(c.fd, rx, slot, lens, null);
    } catch (err) {
      // ENETDOWN: the interface went down (the port stays) or was deleted (the port is down for good).
      c.lastError = describeError(err);
      this.#watchLink();
      return;
    }
    c.rxBatches++;
    c.rxFrames += count;
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
    const c = this.core;
    const rx = c.rxFrames;
    const check = (): void => {
      this.#linkTimer = undefined;
      const n = c.n;
      if (n === undefined || c.fd < 0 || c.rxFrames !== rx) return;
      if (n.ifIndex(this.#ifname) === 0) {
        c.down(`host interface ${this.#ifname} was deleted`);
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
      ...this.core.counters(),
      tx_errors: this.core.sendErrors,
      last_error: this.core.lastError || undefined,
    };
  }

  protected override freeResources(): void {
    clearTimeout(this.#linkTimer);
  }
}

/** Factory registered as kind `host`. */
export const hostPort: PortFactory<HostSpec> = (spec, ctx) => new HostPort(spec, ctx);
