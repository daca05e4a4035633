/**
 * QoS of an overlay link: one shaper for the link as a whole (docs/qos.md
 * "Overlay links", docs/overlay.md "QoS: a link's capacity").
 *
 * A link carries every network both hosts have, through one switch port per
 * (link, network). Those ports share ONE {@link QosEgress}: the switch
 * queues a frame bound for any of them by (source port, class), as it does
 * for a shaped port, and tags it with the link's member slot and the
 * network's VNI ({@link Switch.shareEgress}; a spoke's direct links join
 * the shaper of its uplink as further members). The egress's scheduler then serves the
 * latency class first (capped), the sources below their reservation next,
 * and DWRR by source weight over the rest, at the link's capacity; the
 * target built here hands each frame to the link's current channel under its
 * VNI and reports it to the switch's counters of that network's link port.
 * So all the networks a link carries share its capacity, and a sender's
 * weight and reservation count across them.
 *
 * The shaper lives as long as the link (not its channel): frames queued when
 * the channel goes down are dropped as `down` when they leave, and a new
 * channel is used as soon as it is up.
 */

import { ETH_HLEN } from '../frame/ethernet.js';
import { WriteResult } from '../port.js';
import { QosEgress } from '../switch/qos-egress.js';
import type { Switch, SwitchPort } from '../switch/switch.js';
import { HEADER_LEN } from './codec.js';
import type { LinkChannel } from './transport.js';
import { VXLAN_OVERHEAD } from './vxlan-transport.js';

/** A link's QoS as the overlay applies it; rates in bytes per second. */
export interface LinkQosPolicy {
  /** The link's capacity: everything it sends, over all its networks, is shaped to it. */
  capacity: number;
  /** Cap of the latency class over the link; default a tenth of capacity. */
  latencyCap?: number | undefined;
  /** Shaper burst in bytes; default max(50 ms at capacity, 64 KiB). */
  burst?: number | undefined;
}

/**
 * Bytes a frame costs on the link beyond its own length, charged to the
 * shaper: a TCP/TLS link's record header (TCP, IP and TLS headers are
 * spread over large aggregated writes and not counted); a VXLAN link's
 * outer Ethernet, IP, UDP and VXLAN headers.
 */
export function linkOverhead(transport: string | undefined): number {
  return transport === 'vxlan' ? ETH_HLEN + VXLAN_OVERHEAD : HEADER_LEN;
}

/** A link's QoS in `vmlink link list --json`; rates in bits per second. */
export interface LinkQosView {
  /** Configured capacity. */
  capacity: number;
  latency_cap: number;
  /** Shaper burst, bytes. */
  burst: number | undefined;
  /** Frames waiting in the shaper now. */
  queued: number;
  /** Frames dropped because their (source, class) queue was full. */
  drops_queue_full: number;
  /** Frames that left the shaper after the link went down or lost that network's port. */
  drops_down: number;
  /** The link whose shaper (and capacity) this one shares: a spoke's direct link shares its uplink's. */
  shared_with?: string;
}

/** What the shaper needs of its link (supplied by the overlay). */
export interface LinkQosHooks {
  /** The link's channel now, if up. */
  channel(): LinkChannel | undefined;
  /** The link's switch port of network `vni`, if it has one now. */
  port(vni: number): SwitchPort | undefined;
  /**
   * On a relaying host: false to drop a frame from switch port `source`
   * (its link's peer has a direct link to this link's peer); it also counts
   * relayed bytes. Undefined elsewhere.
   */
  relayed?: ((source: number, len: number) => boolean) | undefined;
}

/** Frames a link's channel may hold (in 2 KiB units of its queued bytes) before the shaper waits for it. */
const CHANNEL_BACKLOG_UNIT = 2048;
/** Links one shaper can serve: a tag is (member slot << 24 | VNI), slots are never reused. */
const MAX_MEMBERS = 256;

export class LinkShaper {
  readonly egress: QosEgress;
  /** The link that owns it (its QoS); other members share its capacity (a spoke's direct links). */
  readonly owner: string;
  #policy: LinkQosPolicy;
  #dropsDown = 0;
  /** Member slot -> its link's hooks; undefined once it left. */
  readonly #members: (LinkQosHooks | undefined)[] = [];

  /** @param overhead bytes charged per frame beyond its length ({@link linkOverhead}) */
  constructor(sw: Switch, owner: string, policy: LinkQosPolicy, overhead = 0, clock?: () => number) {
    this.owner = owner;
    this.#policy = policy;
    const members = this.#members;
    this.egress = new QosEgress(
      {
        write: (buf, off, len, tag, source) => {
          const h = members[tag >>> 24];
          const ch = h?.channel();
          if (ch === undefined) return WriteResult.DOWN;
          // A relayed frame whose two hosts now talk directly is not sent (as LinkPort.write does).
          if (h?.relayed !== undefined && !h.relayed(source, len)) return WriteResult.OK;
          return ch.send(tag & 0xffffff, buf, off, len);
        },
        get queued() {
          // Every member's channel goes out over the same uplink.
          let bytes = 0;
          for (let i = 0; i < members.length; i++) bytes += members[i]?.channel()?.queuedBytes ?? 0;
          return Math.floor(bytes / CHANNEL_BACKLOG_UNIT);
        },
        after: (r, buf, off, len, tag) => {
          const sp = members[tag >>> 24]?.port(tag & 0xffffff);
          // Counted on the network's link port (its `down` counter too); a port gone meanwhile: here.
          if (sp !== undefined) sw.countSent(sp, r, buf, off, len);
          else if (r === WriteResult.DOWN) this.#dropsDown++;
        },
      },
      { rate: policy.capacity, latencyCap: policy.latencyCap, burst: policy.burst, overhead, clock },
    );
  }

  /**
   * Adds a link; returns the base of its tags (a port of network `vni` uses
   * `base + vni`), or -1 when the shaper has served {@link MAX_MEMBERS} links.
   */
  join(hooks: LinkQosHooks): number {
    if (this.#members.length >= MAX_MEMBERS) return -1;
    this.#members.push(hooks);
    return ((this.#members.length - 1) << 24) >>> 0;
  }

  /** A member leaves: frames still queued for it are dropped as `down` when they leave. */
  leave(base: number): void {
    this.#members[base >>> 24] = undefined;
  }

  get policy(): LinkQosPolicy {
    return this.#policy;
  }

  /** Changes the capacity, latency cap and burst; queued frames stay. */
  set(policy: LinkQosPolicy): void {
    this.#policy = policy;
    this.egress.setRate(policy.capacity, policy.latencyCap, policy.burst);
  }

  view(): LinkQosView {
    let queueFull = 0;
    for (const f of this.egress.flows()) queueFull += f.drops;
    return {
      capacity: this.egress.rate * 8,
      latency_cap: this.egress.latencyCap * 8,
      burst: this.#policy.burst,
      queued: this.egress.queued,
      drops_queue_full: queueFull,
      drops_down: this.#dropsDown,
    };
  }

  /** Drops what is queued and stops. Idempotent. */
  close(): void {
    this.egress.close();
  }
}
