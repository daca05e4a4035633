/**
 * One link's state and statistics, as the overlay (overlay.ts) keeps it:
 * its channel, link ports, counters that survive reconnects, throughput
 * samples, relay accounting and what its peer reported; and its listing.
 */
import type { Backoff } from '../../util/backoff.js';
import type { FrameSink } from '../port.js';
import type { SwitchPort } from '../switch/switch.js';
import type { LinkQosPolicy, LinkQosView, LinkShaper } from './link-qos.js';
import type { PeerNetworks } from './network-sync.js';
import type { ChannelStats, LinkChannel, TransportAddress } from './transport.js';

export type LinkState = 'connecting' | 'up' | 'standby' | 'down' | 'closed';
/** `cluster`: a link the fabric made (fabric-links.ts), not a hand link. */
export type LinkSource = 'config' | 'api' | 'peer' | 'direct' | 'cluster';

/** A link to dial. */
export interface LinkSpec {
  /** Unique link name on this host. */
  name: string;
  /** The peer's link listener. */
  connect: TransportAddress;
  /** Kind of the transport to use (e.g. `vxlan`); default the overlay's main transport. */
  transport?: string | undefined;
  /** The link's QoS: its capacity shapes everything it sends (link-qos.ts); none by default. */
  qos?: LinkQosPolicy | undefined;
}

/** A link came up (`up`) or lost its channel: its listing, with the state it goes to and why (Overlay.onLinkState). */
export interface LinkStateChange {
  up: boolean;
  link: LinkView;
}

/** One link as listed by `vmlink link list --json`. */
export interface LinkView {
  name: string;
  source: LinkSource;
  /** `dial` (we connect) or `accept` (the peer connected). */
  mode: 'dial' | 'accept';
  /** What we dial, or where the peer came from. */
  address: string | undefined;
  state: LinkState;
  /** Why the link is in its state, e.g. the error of the last attempt and when it re-dials. */
  reason: string;
  /** The last reason the link failed to come up or went down (kept after it is up again), or null. */
  last_error: string | null;
  /** When {@link last_error} happened, ISO 8601, or null. */
  last_error_at: string | null;
  transport: string;
  /** Peer host id (once known). */
  peer: string | undefined;
  /** Networks the link carries now. */
  networks: string[];
  rtt_ms: number | undefined;
  /** `relay`: the peer is a hub that relays this host's traffic toward other hosts; `direct`: the peer is the other end. */
  path: 'direct' | 'relay';
  /** Throughput over the last second, bits per second. */
  tx_bps: number;
  rx_bps: number;
  tx_frames: number;
  tx_bytes: number;
  rx_frames: number;
  rx_bytes: number;
  /** Kernel writes (aggregation: tx_frames / tx_writes frames per write). */
  tx_writes: number;
  drops: { queue_full: number; too_big: number; unknown_vni: number; down: number; split_horizon: number };
  connects: number;
  /** Seconds the current channel has been up. */
  up_s: number | undefined;
  /** On a relaying host: bytes that came in on this link and were relayed to other links. */
  relayed_bytes: number;
  /** The same per destination host. */
  relayed_to: Record<string, number>;
  /** On a relaying host: hosts this link's peer reports a direct link with (relay between them stops). */
  direct_peers: string[];
  /** The link's QoS (configured capacity; `tx_bps` is what it measured), when it has some. */
  qos?: LinkQosView;
}

export const addr = (a: TransportAddress) => `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;

export class Link {
  channel: LinkChannel | undefined;
  state: LinkState = 'connecting';
  reason = 'not started';
  peer: string | undefined;
  readonly ports = new Map<number, { sp: SwitchPort; sink: FrameSink }>();
  /** The link's shaper, shared by its ports, when it has a QoS capacity (its own, or its uplink's: a spoke's direct link). */
  shaper: LinkShaper | undefined;
  /** True when {@link shaper} is this link's own; the base of its ports' tags in it. */
  shaperOwned = false;
  shaperTag = 0;
  timer: NodeJS.Timeout | undefined;
  abort: AbortController | undefined;
  connects = 0;
  upSince = 0;
  /** Totals of channels that closed, so counters survive reconnects. */
  readonly past: ChannelStats = zeroStats();
  pastDown = 0;
  pastSplit = 0;
  prevTx = 0;
  prevRx = 0;
  prevAt = performance.now();
  txBps = 0;
  rxBps = 0;
  closed = false;
  /** Peer host -> bytes relayed from this link to the link of that host, since the last sample. */
  readonly relayBytes = new Map<string, number>();
  relayedTotal = 0;
  /** Peer host -> bytes relayed from this link to that host's link, in total. */
  readonly relayedTo = new Map<string, number>();
  /** Hosts the peer of this link has direct links with (its reports). */
  readonly directPeers = new Set<string>();
  /** The peer's hello says it relays. */
  peerRelays = false;
  /** Peer's remote IP and listen port, for direct links. */
  remoteHost: string | undefined;
  listen: number | undefined;
  /** VNIs the peer has (last known, kept while down); undefined: every local network (VXLAN, or never heard). */
  offered: Set<number> | undefined;
  /** The peer's network list as it arrives on the current stream channel (undefined: VXLAN, or no channel). */
  peerNets: PeerNetworks | undefined;
  /** VNIs this host told the peer it has on the current channel (undefined: VXLAN, or no channel). */
  announced: Set<number> | undefined;
  /** Closes the channel when the peer's network list does not come in time. */
  syncTimer: NodeJS.Timeout | undefined;
  lastError: string | undefined;
  lastErrorAt: Date | undefined;
  constructor(
    readonly name: string,
    readonly source: LinkSource,
    readonly spec: LinkSpec | undefined,
    readonly backoff: Backoff,
  ) {}

  /** Remembers why the link failed (a dial error, or why its channel went down). */
  failed(why: string): void {
    this.lastError = why;
    this.lastErrorAt = new Date();
  }

  /** Adds a closing channel's counters to the link's totals. */
  accumulate(ch: LinkChannel): void {
    const s = ch.stats();
    addCounters(this.past, s);
    this.past.rtt_ms = s.rtt_ms ?? this.past.rtt_ms;
  }

  /** Counters of the past channels and the current one. */
  totals(): ChannelStats {
    const t = { ...this.past };
    const s = this.channel?.stats();
    if (s) {
      addCounters(t, s);
      t.rtt_ms = s.rtt_ms;
    }
    return t;
  }

  /** The listing of this link; `kind` and `address` come from its transport. */
  view(kind: string, address: string | undefined): LinkView {
    const t = this.totals();
    let down = this.pastDown;
    let split = this.pastSplit;
    for (const p of this.ports.values()) {
      down += p.sp.counters.down;
      split += p.sp.counters.split_horizon;
    }
    return {
      name: this.name,
      source: this.source,
      mode: this.spec ? 'dial' : 'accept',
      address,
      state: this.state,
      reason: this.reason,
      last_error: this.lastError ?? null,
      last_error_at: this.lastErrorAt?.toISOString() ?? null,
      transport: kind,
      peer: this.peer,
      networks: [...this.ports.values()].map((p) => p.sp.networks()[0] as string),
      rtt_ms: this.channel ? t.rtt_ms : undefined,
      path: this.peerRelays ? 'relay' : 'direct',
      tx_bps: this.txBps,
      rx_bps: this.rxBps,
      tx_frames: t.tx_frames,
      tx_bytes: t.tx_bytes,
      rx_frames: t.rx_frames,
      rx_bytes: t.rx_bytes,
      tx_writes: t.tx_writes,
      drops: {
        queue_full: t.drops_queue_full,
        too_big: t.drops_too_big,
        unknown_vni: t.drops_unknown_vni,
        down,
        split_horizon: split,
      },
      connects: this.connects,
      up_s: this.channel ? Math.floor((performance.now() - this.upSince) / 1000) : undefined,
      relayed_bytes: this.relayedTotal,
      relayed_to: Object.fromEntries(this.relayedTo),
      direct_peers: [...this.directPeers],
      ...(this.shaper
        ? { qos: { ...this.shaper.view(), ...(this.shaperOwned ? {} : { shared_with: this.shaper.owner }) } }
        : {}),
    };
  }
}

function zeroStats(): ChannelStats {
  return {
    rtt_ms: undefined,
    tx_frames: 0,
    tx_bytes: 0,
    rx_frames: 0,
    rx_bytes: 0,
    tx_writes: 0,
    drops_queue_full: 0,
    drops_too_big: 0,
    drops_unknown_vni: 0,
  };
}

/** Adds the frame, byte, write and drop counters of `s` to `into` (not the RTT). */
function addCounters(into: ChannelStats, s: ChannelStats): void {
  into.tx_frames += s.tx_frames;
  into.tx_bytes += s.tx_bytes;
  into.rx_frames += s.rx_frames;
  into.rx_bytes += s.rx_bytes;
  into.tx_writes += s.tx_writes;
  into.drops_queue_full += s.drops_queue_full;
  into.drops_too_big += s.drops_too_big;
  into.drops_unknown_vni += s.drops_unknown_vni;
}
