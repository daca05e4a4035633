/**
 * One port attached to the switch: the {@link Port} plus what the switch's
 * stages keep for it (counters, VLAN membership, MAC lock and limit, storm
 * control, QoS, split-horizon group, the frames of the current batch bound
 * for it). Built by `Switch.addPort`.
 */
import type { Logger } from '../../log.js';
import { CLASS_BEST_EFFORT } from '../../qos/classes.js';
import { TokenBucket } from '../../qos/token-bucket.js';
import { describeOffloadReason } from '../offload/segmenter.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { BatchSink, FrameSink, Port, PortState } from '../port.js';
import { type CountersSnapshot, countersSnapshot, PortCounters } from './counters.js';
import type { Hold } from './hold.js';
import { blockedGroups, HORIZON_LOCAL, horizonOf } from './horizon.js';
import type { Network } from './network.js';
import type { QosEgress } from './qos-egress.js';

/** How a port joins networks, and its per-port policies. */
export interface PortBinding {
  /** Access port: the one network, frames untagged. */
  network?: string | undefined;
  /** Trunk port: 802.1Q VLAN id -> network; `native` carries untagged frames. */
  trunk?: { vlans: Record<number, string>; native?: string | undefined } | undefined;
  /** Only these source MACs are accepted (empty or absent: any). */
  allowedMacs?: readonly number[] | undefined;
  /** Most MACs learned on this port across its networks; frames from further new MACs are dropped. Default 1024. */
  maxMacs?: number | undefined;
  /** Storm control for broadcast+multicast ingress: frames per second and burst in frames. */
  storm?: { pps: number; burst: number } | undefined;
  /**
   * The port is the far side of an overlay link (net/overlay): `link` ports
   * obey split horizon (a frame that came from a link never leaves through
   * another link); between two `relay` ports (a hub's links) frames pass.
   */
  link?: 'link' | 'relay' | undefined;
}

/** Something watching a port's frames (capture). Called with both directions. */
export interface FrameTap {
  /** `dir` is 'rx' for frames the port received, 'tx' for frames it sent. */
  frame(buf: Buffer, off: number, len: number, dir: 'rx' | 'tx'): void;
}

/** The switch's two entry points, which a port's bound sinks call. */
export interface SwitchIngress {
  ingress(sp: SwitchPort, buf: Buffer, off: number, len: number, meta?: OffloadMeta): void;
  ingressBatch(sp: SwitchPort, buf: Buffer, frames: Uint32Array, count: number): void;
  /** Backpressure: holds senders whose frames all went to full ports (hold.ts). */
  readonly hold: Hold;
}

const DEFAULT_MAX_MACS_PER_PORT = 1024;

export class SwitchPort {
  readonly counters = new PortCounters();
  /** Bound once: the sink handed to the port (a batch of one). */
  readonly ingress: FrameSink;
  /** Bound once: the batch sink handed to the port. */
  readonly ingressBatch: BatchSink;
  /** Bound once: the port's PortContext.onRoom (backpressure, hold.ts). */
  readonly onRoom: () => void;
  /** Egress stage: frames of the batch being forwarded that go to this port, offset/length pairs (made at first use). */
  batchFrames: Uint32Array | undefined;
  /** Frames in {@link batchFrames}. */
  batchN = 0;
  /** The transport; set right after construction by `Switch.addPort`. */
  port!: Port;
  state: PortState = 'closed';
  /** MACs currently learned on this port, across networks. */
  learned = 0;
  /** Capture taps, fed by the ingress checks (rx) and the egress (tx). */
  taps: FrameTap[] = [];
  /** Access network, or a trunk's native network. */
  untagged: Network | undefined;
  /** Trunk VLAN id -> network. */
  readonly vlans = new Map<number, Network>();
  /** True when {@link vlans} has any (a trunk port): a field, read per frame. */
  trunk = false;
  /** Network -> VLAN id to tag with on egress (trunk networks only). */
  readonly vidByNet = new Map<Network, number>();
  /** Last time (ms) a malformed-input line was logged for this port (log rate limit). */
  lastMalformedLog = -Infinity;
  readonly allowed: Set<number> | undefined;
  readonly maxMacs: number;
  readonly storm: TokenBucket | undefined;
  /** QoS ingress policing (bytes), from `Switch.setPortQos`. */
  police: TokenBucket | undefined;
  /** QoS: the highest class this port may use (and of its unmarked frames), whether guest marks count, its weight and reservation (bytes/s). */
  qosClass = CLASS_BEST_EFFORT;
  qosTrust = true;
  qosWeight = 1;
  qosMin = 0;
  /** The shaped, scheduled egress when this port has a QoS capacity, or the shared one it joined (`Switch.shareEgress`). */
  egress: QosEgress | undefined;
  /** True when {@link egress} is shared with other ports (its owner closes it), and the tag of this port's frames in it. */
  egressShared = false;
  egressTag = 0;
  /** Split-horizon group (horizon.ts: HORIZON_LOCAL, _LINK, _RELAY), fixed by the binding. */
  readonly horizon: number;
  /** Bit g set: frames from this port never go to a port of group g (worked out once, from {@link horizon}). */
  readonly blocked: number;
  /** A local port (a VM, a TAP, ...), not an overlay link: its MACs are this host's (MAC events, locations). */
  readonly local: boolean;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly binding: PortBinding,
    sw: SwitchIngress,
    now: number,
  ) {
    this.allowed = binding.allowedMacs?.length ? new Set(binding.allowedMacs) : undefined;
    this.maxMacs = binding.maxMacs ?? DEFAULT_MAX_MACS_PER_PORT;
    this.storm = binding.storm ? new TokenBucket(binding.storm.pps, binding.storm.burst, now) : undefined;
    this.horizon = horizonOf(binding.link);
    this.blocked = blockedGroups(this.horizon);
    this.local = this.horizon === HORIZON_LOCAL;
    // Each ingress is one batch of the hold logic (backpressure, hold.ts).
    this.ingress = sw.hold.sink(this, (buf, off, len, meta) => sw.ingress(this, buf, off, len, meta));
    this.ingressBatch = sw.hold.batchSink(this, (buf, frames, count) => sw.ingressBatch(this, buf, frames, count));
    this.onRoom = () => sw.hold.room(this);
  }

  /** Networks this port belongs to. */
  networks(): string[] {
    const names = new Set<string>();
    if (this.untagged) names.add(this.untagged.spec.name);
    for (const n of this.vlans.values()) names.add(n.spec.name);
    return [...names];
  }

  /** The networks this port is a member of (its MACs are learned in these only). */
  memberOf(): Set<Network> {
    const nets = new Set<Network>(this.vlans.values());
    if (this.untagged) nets.add(this.untagged);
    return nets;
  }

  /** The VLAN id this port tags frames of `net` with on egress (0: untagged). */
  vidOf(net: Network): number {
    return this.untagged === net ? 0 : (this.vidByNet.get(net) ?? 0);
  }

  counterSnapshot(): CountersSnapshot {
    return countersSnapshot(this.counters);
  }
}

/** Counts a frame whose offload metadata cannot be honoured, and logs it (at most once a second per port). */
export function offloadDrop(sp: SwitchPort, reason: number, log: Logger, now: number): void {
  sp.counters.offload++;
  if (now - sp.lastMalformedLog < 1000) return;
  sp.lastMalformedLog = now;
  log.warn(
    { port: sp.name, reason: describeOffloadReason(reason), total: sp.counters.offload },
    'frame with bad offload metadata (virtio_net_hdr) dropped',
  );
}

/** Counts malformed transport input on a port, and logs it (at most once a second per port). */
export function malformedInput(sp: SwitchPort, reason: string, log: Logger, now: number): void {
  sp.counters.malformed++;
  if (now - sp.lastMalformedLog < 1000) return;
  sp.lastMalformedLog = now;
  log.warn({ port: sp.name, reason, total: sp.counters.malformed }, 'malformed input on port');
}
