/**
 * Ingress checks, the first stage of the pipeline: for each frame of a batch,
 * the counters, runts, offload metadata, capture (rx), policing, the QoS
 * class, the VLAN (a trunk's tag is stripped), the MTU; then the source MAC
 * (group address, MAC lock) and storm control. A refused frame is counted on
 * its port under its reason and goes no further. Nothing allocates; what the
 * next stages need of a frame is left in the {@link FrameCursor}.
 */
import type { Logger } from '../../log.js';
import { CLASS_BEST_EFFORT, classify, effectiveClass } from '../../qos/classes.js';
import { ETH_HLEN, ETHERTYPE_VLAN, etherType, isGroupHi, macOf } from '../frame/ethernet.js';
import { dscpOf } from '../frame/ip.js';
import { isTagged, stripTag, VLAN_HLEN, vlanId, vlanPcp } from '../frame/vlan.js';
import type { Segmenter } from '../offload/segmenter.js';
import { type OffloadMeta, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../offload/vnet-hdr.js';
import type { Capture } from './capture.js';
import type { Network } from './network.js';
import { offloadDrop, type SwitchPort } from './switch-port.js';

/** The frame being forwarded, as the ingress checks left it (one object, reused for every frame). */
export class FrameCursor {
  /** Where the frame lies after the checks (a stripped tag moves it by 4). */
  off = 0;
  len = 0;
  /** Its offload metadata when it asks for work, else undefined. */
  meta: OffloadMeta | undefined;
  /** Its QoS class (set only while some port shapes its egress). */
  cls = CLASS_BEST_EFFORT;
}

/**
 * The class a frame is marked with (qos/classes.ts), from the marks read in
 * place: the outer tag's PCP and the IPv4/IPv6 DSCP. -1: unmarked.
 */
export function frameClass(buf: Buffer, off: number, len: number): number {
  const pcp = len >= ETH_HLEN + 2 && isTagged(buf, off) ? vlanPcp(buf, off) : -1;
  return classify(pcp, dscpOf(buf, off, len));
}

export class IngressChecks {
  /** True while some port shapes its egress: frames are classified then. */
  classify = false;

  constructor(
    readonly cur: FrameCursor,
    readonly seg: Segmenter,
    readonly capture: Capture,
    readonly clock: () => number,
    readonly log: Logger,
  ) {}

  /**
   * Checks frame `buf[off .. off+len)` from `sp` (with offload metadata
   * `meta` if any): the network it travels in, or undefined when it was
   * dropped (and counted). On success the cursor says where it lies now.
   * The common frame (no metadata, from an access port that nothing polices,
   * watches or classifies) needs only the network and MTU check: kept small
   * so it is inlined into the batch loop; the rest is {@link #admitFull}.
   */
  admit(
    sp: SwitchPort,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
    full: boolean,
  ): Network | undefined {
    const c = sp.counters;
    c.rxFrames++;
    c.rxBytes += len;
    if (len < ETH_HLEN) {
      c.runt++;
      return undefined;
    }
    if (full) return this.#admitFull(sp, buf, off, len, meta);
    const net = sp.untagged;
    if (!this.#fits(sp, net, len, etherType(buf, off) === ETHERTYPE_VLAN)) return undefined;
    const cur = this.cur;
    cur.off = off;
    cur.len = len;
    cur.meta = undefined;
    return net;
  }

  /** True when the frames of a batch from `sp` (with `meta`) need {@link #admitFull}; `full` of {@link admit}. */
  full(sp: SwitchPort, meta: OffloadMeta | undefined): boolean {
    return meta !== undefined || sp.trunk || sp.taps.length !== 0 || sp.police !== undefined || this.classify;
  }

  /** {@link admit} for a frame with metadata, or from a trunk, or a watched, policed or classified port. */
  #admitFull(
    sp: SwitchPort,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
  ): Network | undefined {
    const c = sp.counters;
    const m = meta?.active ? meta : undefined;
    if (m !== undefined) {
      if (!this.seg.check(buf, off, len, m)) {
        offloadDrop(sp, this.seg.reason, this.log, this.clock());
        return undefined;
      }
      if (m.isGso) c.rxGso++;
    }
    if (sp.taps.length !== 0) this.capture.frames(sp, buf, off, len, m, 'rx');
    if (sp.police !== undefined && !sp.police.take(len, this.clock())) {
      c.police++;
      return undefined;
    }
    // Classify before a trunk's tag (and its PCP) is stripped.
    if (this.classify) this.cur.cls = effectiveClass(frameClass(buf, off, len), sp.qosClass, sp.qosTrust);
    let net = sp.untagged;
    const tagged = etherType(buf, off) === ETHERTYPE_VLAN;
    // A large segment is checked against the MTU by the frames it will be cut into.
    const segLen = m?.isGso ? this.seg.hdrLen + Math.min(m.gsoSize, len - this.seg.hdrLen) : len;
    if (tagged && sp.trunk) {
      if (len < ETH_HLEN + VLAN_HLEN) {
        c.runt++;
        return undefined;
      }
      const vid = vlanId(buf, off);
      // IEEE 802.1Q §6.9.1: VID 0 is a priority tag on a frame of the port's native (untagged) VLAN.
      net = vid === 0 ? sp.untagged : sp.vlans.get(vid);
      if (net !== undefined) {
        off = stripTag(buf, off);
        len -= VLAN_HLEN;
        if (m !== undefined) shiftOffsets(m, -VLAN_HLEN);
      }
    }
    if (!this.#fits(sp, net, segLen, tagged)) return undefined;
    const cur = this.cur;
    cur.off = off;
    cur.len = len;
    cur.meta = m;
    return net;
  }

  /**
   * The frame has a network (else `vlan`) and fits its MTU (else `mtu`):
   * `len` bytes, of which a tag (`tagged`: a trunk's, stripped, or an access
   * port's guest's own, passed through) does not count.
   */
  #fits(sp: SwitchPort, net: Network | undefined, len: number, tagged: boolean): net is Network {
    if (net === undefined) {
      sp.counters.vlan++;
      return false;
    }
    if (len - ETH_HLEN - (tagged ? VLAN_HLEN : 0) > net.spec.mtu) {
      sp.counters.mtu++;
      return false;
    }
    return true;
  }

  /** The source MAC hi:lo is not a group address and the port's MAC lock allows it; else counted and false. */
  source(sp: SwitchPort, hi: number, lo: number): boolean {
    if (isGroupHi(hi)) {
      sp.counters.bad_src++;
      return false;
    }
    if (sp.allowed !== undefined && !sp.allowed.has(macOf(hi, lo))) {
      sp.counters.mac_locked++;
      return false;
    }
    return true;
  }

  /** A broadcast or multicast frame from `sp` is within its storm control; else counted and false. */
  storm(sp: SwitchPort): boolean {
    if (sp.storm === undefined || sp.storm.take(1, this.clock())) return true;
    sp.counters.storm++;
    return false;
  }
}

/**
 * Moves the header offsets of offload metadata by `by` bytes (a VLAN tag
 * stripped or inserted after the MACs). csum_start only means something with
 * NEEDS_CSUM, and hdr_len 0 means "not given": those stay as they are.
 */
export function shiftOffsets(m: OffloadMeta, by: number): void {
  if (m.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) m.csumStart += by;
  if (m.hdrLen !== 0) m.hdrLen = Math.max(0, m.hdrLen + by);
}
