/**
 * Per-port counters. Plain number fields, bumped on the data path without
 * allocation; {@link countersSnapshot} turns them into JSON for listings and metrics.
 */

/** Why a frame was dropped. Each reason has its own counter on the port that dropped it. */
export const DROP_REASONS = [
  /** Shorter than an Ethernet header (ingress). */
  'runt',
  /** Longer than the network MTU allows (ingress). */
  'mtu',
  /** Source MAC not in the port's allowed_macs (ingress). */
  'mac_locked',
  /** Port already learned its maximum number of MACs (ingress). */
  'mac_limit',
  /** Source MAC is a group address: invalid (ingress). */
  'bad_src',
  /** Broadcast/multicast over the port's storm-control rate (ingress). */
  'storm',
  /** VLAN tag not mapped to a network on this port, or no native network (ingress). */
  'vlan',
  /** Egress queue full: tail drop (egress). */
  'queue_full',
  /** Port had no peer connected (egress). */
  'down',
  /** Malformed transport input: bad length prefix, truncated frame (ingress). */
  'malformed',
  /** Offload metadata (virtio_net_hdr) that cannot be honoured: unknown gso_type, checksum outside the frame, headers that do not parse (ingress). */
  'offload',
  /** Over the port's QoS ingress policing rate (ingress). */
  'police',
  /** Known unicast from an overlay link toward another link: split horizon (ingress). */
  'split_horizon',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export class PortCounters {
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  runt = 0;
  mtu = 0;
  mac_locked = 0;
  mac_limit = 0;
  bad_src = 0;
  storm = 0;
  vlan = 0;
  queue_full = 0;
  down = 0;
  malformed = 0;
  offload = 0;
  /** Large segments (GSO frames) received with offload metadata. */
  rxGso = 0;
  /** Large segments handed to this port whole, with their metadata (the port takes offloads). */
  txGso = 0;
  /** Large segments cut into frames in software for this port (it takes no offloads). */
  txSegmented = 0;
  /** Frames whose partial checksum was completed in software for this port. */
  txCsum = 0;
  police = 0;
  split_horizon = 0;
}

export interface CountersSnapshot {
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  /** Offload counters: large segments received, passed on whole, cut in software; checksums completed in software. */
  offload: { rx_gso: number; tx_gso: number; tx_segmented: number; tx_csum: number };
  drops: Record<DropReason, number>;
}

export function countersSnapshot(c: PortCounters): CountersSnapshot {
  const drops = {} as Record<DropReason, number>;
  for (const r of DROP_REASONS) drops[r] = c[r];
  return {
    rx_frames: c.rxFrames,
    rx_bytes: c.rxBytes,
    tx_frames: c.txFrames,
    tx_bytes: c.txBytes,
    offload: { rx_gso: c.rxGso, tx_gso: c.txGso, tx_segmented: c.txSegmented, tx_csum: c.txCsum },
    drops,
  };
}
