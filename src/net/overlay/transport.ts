/**
 * The contract between the overlay (links between daemons) and the ways
 * frames travel between hosts. A {@link LinkTransport} reaches peers and
 * accepts them; each established connection to one peer is a
 * {@link LinkChannel} that carries Ethernet frames tagged with their
 * network's 24-bit VNI, both ways.
 *
 * The overlay (overlay.ts) never knows which transport it talks to: TCP,
 * TLS over TCP (tcp-transport.ts) and UDP/VXLAN (RFC 7348) implement the same
 * two interfaces and are swapped without touching the switch, the link ports
 * or the link manager. docs/overlay.md describes the contract for people
 * writing a transport.
 */
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { WriteResult } from '../port.js';
import type { LinkCloseCause } from './errors.js';

/** A network as a host offers it on a link. */
export interface OfferedNetwork {
  /** 24-bit VXLAN network identifier: what tags the network's frames on the wire. */
  vni: number;
  /** The network's name on the offering host (informational: VNIs match networks, names need not). */
  name: string;
}

/**
 * What each end tells the other when a channel opens (the hello): who it is
 * and what it speaks. Which networks it has follows after the hello was
 * checked (network-sync.ts), so the hello stays small whatever their number.
 */
export interface PeerHello {
  /** Host id of the peer (with TLS: checked against its certificate). */
  host: string;
  /** The peer relays between its links (a hub). */
  relay: boolean;
  /** TCP port where the peer accepts links, if it listens (a hub may ask another host to dial it directly). */
  listen?: number | undefined;
  /**
   * The peer takes frames with offload metadata (link records of type 3:
   * large segments and partial checksums). Absent or false on an older peer:
   * such frames are cut and completed before they are sent to it.
   */
  offloads?: boolean | undefined;
}

/** Receives what arrives on a channel. Set once with {@link LinkChannel.attach}. */
export interface ChannelHandlers {
  /**
   * One frame of network `vni`. `buf[off .. off+len)` is valid only during
   * the call and may be modified in place (the switch strips tags there).
   * `meta`: the frame's offload metadata when the peer sent some (valid
   * during the call only; the switch checks it like a TAP's).
   */
  frame(vni: number, buf: Buffer, off: number, len: number, meta?: OffloadMeta): void;
  /**
   * A control message (a JSON object with a string `type`) other than hello
   * and keepalives. Those that arrive before attach() are held and handed over then.
   */
  control(msg: ControlMessage): void;
  /**
   * True when the link carries network `vni`; a transport that asks drops
   * other frames as `unknown_vni` without counting them as received.
   */
  carries?(vni: number): boolean;
  /**
   * The channel closed (peer gone, keepalive timeout, protocol error,
   * close()). Called once. `reason` is for people; `cause` says the same typed.
   */
  closed(reason: string, cause: LinkCloseCause): void;
}

/** A control message between two daemons. */
export interface ControlMessage {
  type: string;
  [key: string]: unknown;
}

/** Counters and measurements of one channel, for `vmlink link list`. */
export interface ChannelStats {
  /** Smoothed round-trip time of keepalive probes, ms; undefined before the first answer. */
  rtt_ms: number | undefined;
  tx_frames: number;
  tx_bytes: number;
  rx_frames: number;
  rx_bytes: number;
  /** Writes handed to the kernel (each carries many frames: aggregation). */
  tx_writes: number;
  /** Frames dropped because the channel's egress queue was full. */
  drops_queue_full: number;
  /** Frames dropped because they do not fit the transport (VXLAN over a small underlay MTU). */
  drops_too_big: number;
  /** Received frames for a VNI this host does not carry on the link. */
  drops_unknown_vni: number;
}

/** One established connection to one peer, after the hello (and authentication). */
export interface LinkChannel {
  /** `tcp`, `tls`, `vxlan`, ... */
  readonly kind: string;
  /** What the peer announced. */
  readonly peer: PeerHello;
  /** Remote transport address, e.g. `tcp:10.0.0.2:7400`. */
  readonly remote: string;
  /** True when this end dialled (the connection's initiator). */
  readonly outbound: boolean;
  /** Frames and bytes accepted but not yet handed to the kernel. */
  readonly queuedBytes: number;
  /**
   * True when {@link send} takes offload metadata (both ends announced
   * offloads in their hello). Absent or false: send() is given complete frames only.
   */
  readonly offloads?: boolean;

  /** Starts delivering what arrives to `h`. Frames that arrive before are held by the transport. */
  attach(h: ChannelHandlers): void;

  /**
   * Queues one frame of network `vni` (copied before this returns). Never
   * throws for transport trouble: QUEUE_FULL when the egress bound is
   * reached, DOWN when the channel is closed. Frames are aggregated: many
   * per kernel write. `meta` only when {@link offloads} is true.
   */
  send(vni: number, buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult;

  /** Sends a control message; false when the transport has no control path (VXLAN) or is closed. */
  sendControl(msg: ControlMessage): boolean;

  stats(): ChannelStats;

  /** Flushes what is queued (bounded wait) and closes; `reason` is logged by the peer. Idempotent. */
  close(reason: string): Promise<void>;
}

/** Where a transport listens or what it dials: the address forms of util/address.ts. */
export interface TransportAddress {
  host: string;
  port: number;
}

/** Reaches peers and accepts them. One instance per transport kind per daemon. */
export interface LinkTransport {
  /** `tcp`, `tls`, `vxlan`. */
  readonly kind: string;

  /**
   * Starts accepting peers on `address` (port 0: any). Each peer that passes
   * the handshake (and authentication) is handed to `onChannel`; a peer that
   * fails is refused with one log line. Resolves with the bound address.
   */
  listen(address: TransportAddress, onChannel: (ch: LinkChannel) => void): Promise<TransportAddress>;

  /**
   * One attempt to reach the peer at `address`; resolves after the hello
   * exchange (and authentication), rejects with a {@link import('./errors.js').OverlayError}
   * saying why. The caller retries with backoff.
   */
  dial(address: TransportAddress, signal?: AbortSignal): Promise<LinkChannel>;

  /** Stops listening and closes every channel it made. Idempotent. */
  close(): Promise<void>;
}
