/**
 * The Port contract: where one endpoint (a QEMU VM, a TAP device, a VDE plug,
 * ...) joins the switch. Every port kind implements it and is built by a
 * {@link PortFactory}; the switch never knows which kind it talks to, and a
 * port never knows any other port.
 */
import type { Logger } from '../log.js';
import type { OffloadMeta } from './offload/vnet-hdr.js';

/** Result of {@link Port.write}. Numbers, so the hot path compares Smis. */
export const WriteResult = {
  /** The frame was copied into the port's egress queue. */
  OK: 0,
  /** The egress queue is full: the frame was dropped (tail drop). */
  QUEUE_FULL: 1,
  /** The port has no peer right now (not connected): the frame was dropped. */
  DOWN: 2,
  /**
   * The frame was queued, but the port is full (it had to put the frame in
   * its overflow queue): it takes no more without loss until it calls
   * {@link PortContext.onRoom}, which it promises to do. The switch counts
   * the frame as sent and may hold the sender ({@link Port.hold}).
   */
  FULL: 3,
} as const;
export type WriteResult = (typeof WriteResult)[keyof typeof WriteResult];

/** Life-cycle state of a port's transport. */
export type PortState = 'closed' | 'listening' | 'connecting' | 'up' | 'down';

/**
 * Receives each frame a port reads from its transport.
 * `buf[off .. off+len)` is valid only for the duration of the call, and the
 * callee may modify those bytes in place (e.g. to strip a VLAN tag).
 *
 * `meta`: the frame's offload metadata (virtio_net_hdr fields), only from
 * ports whose transport has it (a TAP with vnet_hdr, vhost-user), and only
 * when it asks for work (`meta.active`: a large segment, or a checksum to
 * complete); undefined for a complete, ordinary frame. Like the bytes, the
 * object is valid only during the call (ports reuse one), and the callee may
 * modify it (the switch adjusts csum_start when it strips a VLAN tag).
 */
export type FrameSink = (buf: Buffer, off: number, len: number, meta?: OffloadMeta) => void;

/**
 * Receives a batch of complete, ordinary frames (no offload metadata) that a
 * port read at once, all in `buf`: frame k is at `frames[2k]` (offset),
 * `frames[2k+1]` (length), k < count. Same rules as {@link FrameSink}: the
 * bytes are valid only during the call and may be modified in place.
 */
export type BatchSink = (buf: Buffer, frames: Uint32Array, count: number) => void;

/** What {@link Port.writeBatch} did, added to by the port (the caller zeroes it). */
export interface BatchResult {
  /** Frames queued (also those counted in {@link blocked}), and their bytes. */
  ok: number;
  bytes: number;
  /** Of the frames queued, those for which the port said {@link WriteResult.FULL}. */
  blocked: number;
  /** Frames refused because the egress queue was full. */
  full: number;
  /** Frames refused because the transport is down. */
  down: number;
}

/** Counts one frame's {@link WriteResult} of `len` bytes into `res` (writeBatch implementations that fall back to write()). */
export function countWrite(res: BatchResult, r: WriteResult, len: number): void {
  if (r === WriteResult.OK) {
    res.ok++;
    res.bytes += len;
  } else if (r === WriteResult.FULL) {
    res.ok++;
    res.bytes += len;
    res.blocked++;
  } else if (r === WriteResult.QUEUE_FULL) res.full++;
  else res.down++;
}

/** A receiver that deferred copies until the end of the batch ({@link BatchContext.defer}). */
export interface DeferredCopies {
  /** Does the copies deferred from the batch ending now (`src` still holds the frames). */
  flushBatch(src: Buffer): void;
}

/**
 * What a port learns of the ingress batch its frames come from, passed with
 * each {@link Port.write} and {@link Port.writeBatch} of that batch. The
 * switch keeps one and refills it per batch: nothing is allocated per frame
 * or per batch. Valid only during the call; a port keeps no reference to
 * it, nor to any other port.
 */
export class BatchContext {
  /**
   * The buffer the frames of the batch lie in, or undefined outside a
   * batch. A frame written from it stays valid until the batch ends, so a
   * receiver may defer its copy ({@link defer}) and do all of them in one
   * call at the end.
   */
  src: Buffer | undefined = undefined;
  /** The port that sent the batch. */
  sender: Port | undefined = undefined;
  /** Ports that said {@link WriteResult.FULL} in this batch (filled by the switch). */
  readonly full: Port[] = [];
  /** Receivers with deferred copies, flushed at the end of the batch. */
  readonly #deferred: DeferredCopies[] = [];

  /** Registers `r`, whose copies from {@link src} wait for the end of the batch (once per batch). */
  defer(r: DeferredCopies): void {
    this.#deferred.push(r);
  }

  /** Starts a batch from `sender` whose frames lie in `src`. */
  begin(sender: Port, src: Buffer): void {
    this.src = src;
    this.sender = sender;
    this.full.length = 0;
  }

  /** Ends the batch: the deferred copies are done now, while `src` still holds the frames. */
  end(): void {
    const d = this.#deferred;
    const src = this.src;
    if (src !== undefined) for (let i = 0; i < d.length; i++) (d[i] as DeferredCopies).flushBatch(src);
    d.length = 0;
    this.full.length = 0;
    this.src = undefined;
    this.sender = undefined;
  }
}

/** What a factory hands a port: its collaborators. */
export interface PortContext {
  /** Where received frames go (the switch's ingress for this port). */
  sink: FrameSink;
  /**
   * Where a batch of received frames may go at once (the switch's batch
   * ingress: one call, and one {@link Port.writeBatch} per destination).
   * Optional: absent, the port calls {@link sink} per frame.
   */
  sinkBatch?: BatchSink;
  /** Called on every state change, with a short human reason. */
  onState: (state: PortState, reason: string) => void;
  /** Logger already bound to this port's name. */
  logger: Logger;
  /**
   * Largest frame the transport accepts or sends, in bytes (Ethernet header
   * included). Default {@link MAX_FRAME_LEN}. Longer input closes a stream
   * connection or is dropped and counted for datagram transports.
   */
  maxFrameLen: number;
  /** Egress queue bound in frames (tail drop beyond it). Default 1024. */
  queueLen: number;
  /** Counts input the transport rejected before it was a frame (bad length prefix, runt datagram). */
  onMalformed: (reason: string) => void;
  /**
   * Backpressure: the port said {@link WriteResult.FULL} and can take frames
   * again (it emptied its overflow queue, or gave up waiting for its peer
   * and drops from now on). The switch releases the senders it held for it.
   * Optional: a port that never says FULL does not call it.
   */
  onRoom?: (() => void) | undefined;
}

/** Largest frame QEMU's stream/socket netdevs send: NET_BUFSIZE (4096 + 65536). */
export const MAX_FRAME_LEN = 4096 + 65536;
/** Default egress queue length in frames (like a NIC's txqueuelen). */
export const DEFAULT_QUEUE_LEN = 1024;

export interface Port {
  /** Port name, unique on the host. */
  readonly name: string;
  /** Port kind, e.g. `stream`. */
  readonly kind: string;
  /** Current transport state. */
  readonly state: PortState;

  /**
   * Starts the transport: binds/listens, or begins dialling (dialling ports
   * resolve at once and keep re-dialling with backoff). Rejects with a clear
   * error when the address cannot be used (in use, bad path, permission).
   */
  open(): Promise<void>;

  /**
   * True when {@link write} takes frames with offload metadata: large
   * segments (up to {@link MAX_FRAME_LEN}, beyond the network MTU) and
   * partial checksums, handed on to the transport as they are (a TAP with
   * vnet_hdr; vhost-user with the guest's offload features). Absent or false:
   * the switch segments such frames and completes their checksums in
   * software (src/net/offload/) before calling write(), so the port only ever
   * sees complete frames within the MTU.
   */
  readonly offloads?: boolean;

  /**
   * Queues `buf[off .. off+len)` for sending. The bytes are copied before
   * this returns: the caller may reuse the buffer at once. Never throws for
   * transport trouble; reports it in the result.
   *
   * `meta` is given only to ports with {@link offloads} true, and only for
   * frames that need it; it is valid during the call only (copy its fields,
   * e.g. with writeVnetHdr()).
   *
   * `batch`: the ingress batch the frame belongs to, when it comes from
   * one (see {@link BatchContext}).
   */
  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta, batch?: BatchContext): WriteResult;

  /**
   * Optional: {@link write} for frames `frames[2k]` (offset), `frames[2k+1]`
   * (length) in `buf`, k < count, in order, none with offload metadata;
   * adds what happened to each to `res`. The switch uses it for the frames
   * of one ingress batch bound for this port.
   */
  writeBatch?(buf: Buffer, frames: Uint32Array, count: number, res: BatchResult, batch?: BatchContext): void;

  /**
   * Optional, for ports whose sender can wait (a guest's transmit ring, a
   * stream socket, a TAP's read side): stop reading frames from the
   * transport until {@link release}. Called by the switch when every frame
   * of a batch went to ports that said {@link WriteResult.FULL}; frames
   * already read go on (the current read or ring call finishes). Idempotent.
   */
  hold?(): void;

  /** Optional: read from the transport again after {@link hold}. Idempotent. */
  release?(): void;

  /** Frames currently queued and not yet handed to the kernel. */
  readonly queued: number;

  /** Transport details for status listings (addresses, peer, reconnects). */
  describe(): Record<string, unknown>;

  /** Flushes queued frames, then closes the transport and removes listening sockets. Idempotent. */
  close(): Promise<void>;

  /** Closes at once, dropping anything queued. Idempotent. */
  destroy(err?: Error): Promise<void>;
}

/** Builds a port of one kind from its validated spec. */
export type PortFactory<Spec = unknown> = (spec: Spec, ctx: PortContext) => Port;
