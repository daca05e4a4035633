/**
 * The layer-2 switch core: networks (isolated broadcast domains), the ports
 * joined to them, MAC learning and forwarding.
 *
 * It knows no socket: ports are reached only through the {@link Port}
 * interface. The per-frame path ({@link SwitchPort.ingress} -> #forward ->
 * #output) reads headers in place and allocates nothing in steady state.
 */
import type { Logger } from '../../log.js';
import { CLASS_BEST_EFFORT, classify, effectiveClass } from '../../qos/classes.js';
import { defaultPoliceBurst, type PortQosPolicy } from '../../qos/policy.js';
import { TokenBucket } from '../../qos/token-bucket.js';
import { formatMac } from '../../util/mac.js';
import {
  NetworkExistsError,
  NetworkInUseError,
  NetworkNotFoundError,
  PortExistsError,
  PortNotFoundError,
  VniInUseError,
} from '../errors.js';
import { ETH_HLEN, ETHERTYPE_VLAN, VLAN_HLEN } from '../frame.js';
import { describeOffloadReason, Segmenter } from '../offload/segmenter.js';
import { OffloadMeta, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../offload/vnet-hdr.js';
import {
  type BatchResult,
  type BatchSink,
  type FrameSink,
  MAX_FRAME_LEN,
  type Port,
  type PortState,
  WriteResult,
} from '../port.js';
import { type CountersSnapshot, countersSnapshot, PortCounters } from './counters.js';
import { Fdb, LEARN_FULL, LEARN_NEW } from './fdb.js';
import { Hold } from './hold.js'; // backpressure
import { type EgressTarget, QosEgress } from './qos-egress.js';

/** A network as the switch sees it. */
export interface NetworkSpec {
  /** Unique name. */
  name: string;
  /** 24-bit VXLAN network identifier, unique per fabric. */
  vni: number;
  /** Largest Ethernet payload in bytes (frame minus 14-byte header and tags). */
  mtu: number;
}

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

/** {@link SwitchPort.link}: not a link port. */
export const LINK_NONE = 0;
/** {@link SwitchPort.link}: an overlay link port (split horizon). */
export const LINK_EDGE = 1;
/** {@link SwitchPort.link}: an overlay link port of a hub, relaying to other relay ports. */
export const LINK_RELAY = 2;

/** Something watching a port's frames (capture). Called with both directions. */
export interface FrameTap {
  /** `dir` is 'rx' for frames the port received, 'tx' for frames it sent. */
  frame(buf: Buffer, off: number, len: number, dir: 'rx' | 'tx'): void;
}

export interface SwitchOptions {
  logger: Logger;
  /** Milliseconds clock; default `performance.now`-based wall clock. */
  clock?: () => number;
  /** MAC aging time in seconds; default 300. */
  agingSec?: number;
  /** Most MACs per network; default 65536. */
  maxMacsPerNetwork?: number;
}

const DEFAULT_MAX_MACS_PER_PORT = 1024;
/** Frames of one ingress batch one destination port collects before they are written (then it starts again). */
const BATCH_MAX = 256;

class Network {
  readonly fdb: Fdb;
  /** Member ports and the VLAN id to tag with on egress (0: untagged). */
  members: { sp: SwitchPort; vid: number }[] = [];
  constructor(
    readonly spec: NetworkSpec,
    maxMacs: number,
  ) {
    this.fdb = new Fdb(maxMacs);
  }
}

/** The networks a port is a member of (its MACs are learned in these only). */
function memberOf(sp: SwitchPort): Set<Network> {
  const nets = new Set<Network>(sp.vlans.values());
  if (sp.untagged) nets.add(sp.untagged);
  return nets;
}

/** One port attached to the switch: the Port plus the switch's state for it. */
export class SwitchPort {
  readonly counters = new PortCounters();
  /** Bound once: the sink handed to the port. */
  readonly ingress: FrameSink;
  /** Bound once: the batch sink handed to the port. */
  readonly ingressBatch: BatchSink;
  /** Bound once: the port's PortContext.onRoom (backpressure, hold.ts). */
  readonly onRoom: () => void;
  /** Frames of the ingress batch being forwarded that go to this port: offset, length pairs (made at first use). */
  batchFrames: Uint32Array | undefined;
  /** Frames in {@link batchFrames}. */
  batchN = 0;
  /** The transport; set right after construction by {@link Switch.addPort}. */
  port!: Port;
  state: PortState = 'closed';
  /** MACs currently learned on this port, across networks. */
  learned = 0;
  taps: FrameTap[] = [];
  /** Access network, or a trunk's native network. */
  untagged: Network | undefined;
  /** Trunk VLAN id -> network. */
  readonly vlans = new Map<number, Network>();
  /** Network -> VLAN id to tag with on egress (trunk networks only). */
  readonly vidByNet = new Map<Network, number>();
  /** Last time (ms) a malformed-input line was logged for this port (log rate limit). */
  lastMalformedLog = -Infinity;
  readonly allowed: Set<number> | undefined;
  readonly maxMacs: number;
  readonly storm: TokenBucket | undefined;
  /** QoS ingress policing (bytes), from {@link Switch.setPortQos}. */
  police: TokenBucket | undefined;
  /** QoS: the highest class this port may use (and of its unmarked frames), whether guest marks count, its weight and reservation (bytes/s). */
  qosClass = CLASS_BEST_EFFORT;
  qosTrust = true;
  qosWeight = 1;
  qosMin = 0;
  /** The shaped, scheduled egress when this port has a QoS capacity, or the shared one it joined ({@link Switch.shareEgress}). */
  egress: QosEgress | undefined;
  /** True when {@link egress} is shared with other ports (its owner closes it), and the tag of this port's frames in it. */
  egressShared = false;
  egressTag = 0;
  /** {@link LINK_NONE}, {@link LINK_EDGE} or {@link LINK_RELAY}: a number, compared per frame. */
  readonly link: number;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly binding: PortBinding,
    sw: Switch,
    now: number,
  ) {
    this.allowed = binding.allowedMacs?.length ? new Set(binding.allowedMacs) : undefined;
    this.maxMacs = binding.maxMacs ?? DEFAULT_MAX_MACS_PER_PORT;
    this.storm = binding.storm ? new TokenBucket(binding.storm.pps, binding.storm.burst, now) : undefined;
    this.link = binding.link === 'relay' ? LINK_RELAY : binding.link === 'link' ? LINK_EDGE : LINK_NONE;
    // backpressure: each ingress is one batch of the hold logic (hold.ts)
    this.ingress = sw.hold.sink(this, (buf, off, len, meta) => sw.ingress(this, buf, off, len, meta));
    this.ingressBatch = sw.hold.batchSink(this, (buf, frames, count) => sw.ingressBatch(this, buf, frames, count));
    this.onRoom = () => sw.hold.room(this); // backpressure
  }

  /** Networks this port belongs to. */
  networks(): string[] {
    const names = new Set<string>();
    if (this.untagged) names.add(this.untagged.spec.name);
    for (const n of this.vlans.values()) names.add(n.spec.name);
    return [...names];
  }

  counterSnapshot(): CountersSnapshot {
    return countersSnapshot(this.counters);
  }
}

/** One FDB row as listed by {@link Switch.fdb}. */
export interface FdbRow {
  network: string;
  mac: string;
  port: string;
  /** Seconds since last seen. */
  age: number;
}

export class Switch {
  readonly #log: Logger;
  readonly #clock: () => number;
  readonly #agingMs: number;
  readonly #maxMacsPerNetwork: number;
  readonly #networks = new Map<string, Network>();
  /** VNI -> network name (addNetwork checks a VNI in O(1), also with thousands of networks). */
  readonly #byVni = new Map<number, string>();
  readonly #ports = new Map<string, SwitchPort>();
  /** Port id -> port, for FDB lookups. Ids are reused after removal. */
  readonly #byId: (SwitchPort | undefined)[] = [];
  /** Coarse time (ms) for FDB timestamps; refreshed per ingress batch by the clock tick. */
  #now: number;
  #timer: NodeJS.Timeout | undefined;
  /** QoS class and source port id of the frame being forwarded (forwarding is synchronous); set only while some port shapes its egress. */
  #cls = CLASS_BEST_EFFORT;
  #srcId = 0;
  /** Ports with a shaped egress. */
  #shaped = 0;
  /** Scratch for inserting an 802.1Q tag on egress; ports copy synchronously. */
  readonly #scratch = Buffer.allocUnsafe(MAX_FRAME_LEN + VLAN_HLEN);
  /** Segments and checksums frames with offload metadata toward ports without offloads. */
  readonly #seg = new Segmenter(MAX_FRAME_LEN + VLAN_HLEN);
  /** The same for capture taps (so a tap never disturbs #seg in the middle of a frame). */
  readonly #tapSeg = new Segmenter(MAX_FRAME_LEN + VLAN_HLEN);
  /** Metadata of a frame given a VLAN tag on egress (offsets moved by the tag). */
  readonly #taggedMeta = new OffloadMeta();
  /** Ports holding frames of the ingress batch being forwarded (see {@link ingressBatch}). */
  readonly #batchPorts: SwitchPort[] = [];
  readonly #batchRes: BatchResult = { ok: 0, bytes: 0, full: 0, down: 0, blocked: 0 };
  /** Backpressure: holds senders whose frames all went to full ports (hold.ts). */
  readonly hold = new Hold();

  constructor(opts: SwitchOptions) {
    this.#log = opts.logger;
    this.#clock = opts.clock ?? (() => performance.timeOrigin + performance.now());
    this.#agingMs = (opts.agingSec ?? 300) * 1000;
    this.#maxMacsPerNetwork = opts.maxMacsPerNetwork ?? 65536;
    this.#now = this.#clock();
  }

  /** Starts the one periodic sweep (clock refresh every 250 ms, aging sweep every second). */
  start(): void {
    if (this.#timer) return;
    let n = 0;
    this.#timer = setInterval(() => {
      this.#now = this.#clock();
      if (++n % 4 === 0) this.sweep();
    }, 250);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    // Shaped egresses drop what they still hold (their drain timers would keep the process alive).
    for (const sp of this.#ports.values()) sp.egress?.close();
  }

  /** Ages out MACs not seen for the aging time. Returns how many were removed. */
  sweep(): number {
    this.#now = this.#clock();
    let removed = 0;
    for (const net of this.#networks.values()) removed += net.fdb.sweep(this.#now, this.#agingMs, this.#unlearn);
    return removed;
  }

  readonly #unlearn = (portId: number): void => {
    const sp = this.#byId[portId];
    if (sp) sp.learned--;
  };

  // ---- networks -------------------------------------------------------------

  addNetwork(spec: NetworkSpec): void {
    if (this.#networks.has(spec.name)) throw new NetworkExistsError(spec.name);
    const other = this.#byVni.get(spec.vni);
    if (other !== undefined) throw new VniInUseError(spec.vni, other);
    this.#networks.set(spec.name, new Network({ ...spec }, this.#maxMacsPerNetwork));
    this.#byVni.set(spec.vni, spec.name);
  }

  removeNetwork(name: string): void {
    const net = this.#network(name);
    if (net.members.length)
      throw new NetworkInUseError(
        name,
        net.members.map((m) => m.sp.name),
      );
    this.#networks.delete(name);
    this.#byVni.delete(net.spec.vni);
  }

  networks(): (NetworkSpec & { ports: string[]; macs: number })[] {
    return [...this.#networks.values()].map(networkInfo);
  }

  /** One network as {@link networks} lists it, or undefined when there is none of that name. */
  network(name: string): (NetworkSpec & { ports: string[]; macs: number }) | undefined {
    const n = this.#networks.get(name);
    return n && networkInfo(n);
  }

  hasNetwork(name: string): boolean {
    return this.#networks.has(name);
  }

  #network(name: string): Network {
    const net = this.#networks.get(name);
    if (!net) throw new NetworkNotFoundError(name, [...this.#networks.keys()]);
    return net;
  }

  // ---- ports ----------------------------------------------------------------

  /**
   * Attaches a port. `make` builds the transport given the sink that feeds
   * this switch; the port is not opened here (the caller opens it).
   */
  addPort(name: string, binding: PortBinding, make: (sink: FrameSink, sp: SwitchPort) => Port): SwitchPort {
    if (this.#ports.has(name)) throw new PortExistsError(name);
    // Resolve every network first, so a bad binding changes nothing.
    const untagged = binding.network ?? binding.trunk?.native;
    const untaggedNet = untagged === undefined ? undefined : this.#network(untagged);
    const vlans: [number, Network][] = Object.entries(binding.trunk?.vlans ?? {}).map(([vid, net]) => [
      Number(vid),
      this.#network(net),
    ]);
    let id = this.#byId.indexOf(undefined);
    if (id < 0) id = this.#byId.length;
    const sp = new SwitchPort(id, name, binding, this, this.#clock());
    sp.port = make(sp.ingress, sp);
    this.#byId[id] = sp;
    this.#ports.set(name, sp);
    if (untaggedNet) {
      sp.untagged = untaggedNet;
      untaggedNet.members.push({ sp, vid: 0 });
    }
    for (const [vid, net] of vlans) {
      sp.vlans.set(vid, net);
      sp.vidByNet.set(net, vid);
      net.members.push({ sp, vid });
    }
    return sp;
  }

  /** Detaches a port, forgets its MACs and closes its transport. */
  async removePort(name: string): Promise<void> {
    const sp = this.port(name);
    this.#ports.delete(name);
    // Only the port's own networks: with thousands of networks, every link port goes one by one.
    for (const net of memberOf(sp)) {
      net.members = net.members.filter((m) => m.sp !== sp);
      net.fdb.sweep(this.#now, 0, undefined, sp.id);
    }
    this.#byId[sp.id] = undefined;
    this.hold.forget(sp); // backpressure
    sp.taps = [];
    if (sp.egress) this.#unshape(sp);
    for (const o of this.#ports.values()) o.egress?.removeSource(sp.id);
    await sp.port.close();
  }

  port(name: string): SwitchPort {
    const sp = this.#ports.get(name);
    if (!sp) throw new PortNotFoundError(name);
    return sp;
  }

  ports(): SwitchPort[] {
    return [...this.#ports.values()];
  }

  /** Records a port's transport state; a port that is not up forgets its MACs (traffic floods until re-learned). */
  portState(sp: SwitchPort, state: PortState): void {
    sp.state = state;
    if (state !== 'up') this.flushPort(sp);
  }

  /** Forgets every MAC learned on the port. */
  flushPort(sp: SwitchPort): void {
    for (const net of memberOf(sp)) net.fdb.sweep(this.#now, 0, this.#unlearn, sp.id);
  }

  fdb(network?: string): FdbRow[] {
    const nets = network === undefined ? [...this.#networks.values()] : [this.#network(network)];
    const now = this.#clock();
    const rows: FdbRow[] = [];
    for (const net of nets) {
      for (const e of net.fdb.entries()) {
        rows.push({
          network: net.spec.name,
          mac: formatMac(e.mac),
          port: this.#byId[e.port]?.name ?? '?',
          age: Math.max(0, Math.round((now - e.seen) / 1000)),
        });
      }
    }
    return rows;
  }

  // ---- QoS ------------------------------------------------------------------------

  /**
   * Applies a port's QoS policy (undefined: none): ingress policing, its
   * class and trust, its weight and reservation on every shaped egress, and
   * with a capacity its own shaped egress. Admission is the caller's job.
   */
  setPortQos(name: string, p: PortQosPolicy | undefined): void {
    const sp = this.port(name);
    const now = this.#clock();
    if (p?.max === undefined) sp.police = undefined;
    else {
      const burst = p.burst ?? defaultPoliceBurst(p.max);
      if (sp.police) sp.police.reconfigure(p.max, burst, now);
      else sp.police = new TokenBucket(p.max, burst, now);
    }
    sp.qosClass = p?.cls ?? CLASS_BEST_EFFORT;
    sp.qosTrust = p?.trust ?? true;
    sp.qosWeight = p?.weight ?? 1;
    sp.qosMin = p?.min ?? 0;
    if (sp.egressShared) {
      // A port in a shared egress (an overlay link's) is shaped by its owner, not by its own capacity.
    } else if (p?.capacity === undefined) {
      if (sp.egress) this.#unshape(sp);
    } else if (sp.egress) {
      sp.egress.setRate(p.capacity, p.latencyCap);
    } else {
      const target: EgressTarget = {
        write: (b, o, l) => sp.port.write(b, o, l),
        get queued() {
          return sp.port.queued;
        },
        after: (r, b, o, l) => {
          this.#sent(sp, r, b, o, l, undefined);
        },
      };
      sp.egress = new QosEgress(target, { rate: p.capacity, latencyCap: p.latencyCap, clock: this.#clock });
      this.#shaped++;
      for (const o of this.#ports.values())
        if (o !== sp) sp.egress.setSource(o.id, { weight: o.qosWeight, min: o.qosMin });
    }
    for (const o of this.#ports.values())
      if (o !== sp && o.egress) o.egress.setSource(sp.id, { weight: sp.qosWeight, min: sp.qosMin });
  }

  #unshape(sp: SwitchPort): void {
    if (!sp.egressShared) sp.egress?.close();
    sp.egress = undefined;
    sp.egressShared = false;
    this.#shaped--;
  }

  /**
   * Makes port `name` send through `egress`, an egress shared with other
   * ports and owned (closed) by the caller: an overlay link's shaper, shared
   * by its per-network link ports. Frames to the port queue in it by (source
   * port, class) like a shaped port's, carrying `tag`; the egress's target
   * sends them and reports each with {@link countSent}. Undefined: the port
   * leaves it (frames it holds for the port stay the owner's).
   */
  shareEgress(name: string, egress: QosEgress | undefined, tag = 0): void {
    const sp = this.port(name);
    if (sp.egress) this.#unshape(sp);
    if (egress === undefined) return;
    sp.egress = egress;
    sp.egressShared = true;
    sp.egressTag = tag;
    this.#shaped++;
    for (const o of this.#ports.values()) if (o !== sp) egress.setSource(o.id, { weight: o.qosWeight, min: o.qosMin });
  }

  /** Counts a frame that a shared egress's target handed to `sp`'s transport (tx counters, capture). */
  countSent(sp: SwitchPort, r: WriteResult, buf: Buffer, off: number, len: number): void {
    this.#sent(sp, r, buf, off, len, undefined);
  }

  /** The name of the port with id `id`, if it exists. */
  portName(id: number): string | undefined {
    return this.#byId[id]?.name;
  }

  // ---- data path --------------------------------------------------------------

  /**
   * One frame received on `sp`, with its offload metadata if it has any
   * (see FrameSink). Hot path: no allocation, no exceptions for any input
   * (bad frames are dropped and counted on `sp`).
   */
  ingress(sp: SwitchPort, buf: Buffer, off: number, len: number, meta?: OffloadMeta): void {
    const c = sp.counters;
    c.rxFrames++;
    c.rxBytes += len;
    if (len < ETH_HLEN) {
      c.runt++;
      return;
    }
    const m = meta?.active ? meta : undefined;
    if (m !== undefined) {
      if (!this.#seg.check(buf, off, len, m)) {
        this.#offloadDrop(sp, this.#seg.reason);
        return;
      }
      if (m.isGso) c.rxGso++;
    }
    if (sp.taps.length) this.#tapFrames(sp, buf, off, len, m, 'rx');
    if (sp.police !== undefined && !sp.police.take(len, this.#clock())) {
      c.police++;
      return;
    }
    // Classify before a trunk's tag (and its PCP) is stripped.
    if (this.#shaped > 0) {
      this.#cls = effectiveClass(classify(buf, off, len), sp.qosClass, sp.qosTrust);
      this.#srcId = sp.id;
    }
    let net = sp.untagged;
    const type = buf.readUInt16BE(off + 12);
    // A large segment is checked against the MTU by the frames it will be cut into.
    const segLen = m?.isGso ? this.#seg.hdrLen + Math.min(m.gsoSize, len - this.#seg.hdrLen) : len;
    // A trunk's tag is stripped below; an access port passes a guest's own tags through. Neither counts against the MTU.
    const tagLen = type === ETHERTYPE_VLAN ? VLAN_HLEN : 0;
    if (type === ETHERTYPE_VLAN && sp.vlans.size) {
      if (len < ETH_HLEN + VLAN_HLEN) {
        c.runt++;
        return;
      }
      const vid = buf.readUInt16BE(off + 14) & 0x0fff;
      // IEEE 802.1Q §6.9.1: VID 0 is a priority tag on a frame of the port's native (untagged) VLAN.
      net = vid === 0 ? sp.untagged : sp.vlans.get(vid);
      if (net) {
        // Strip the tag in place: move the two MACs forward over it.
        buf.copyWithin(off + VLAN_HLEN, off, off + 12);
        off += VLAN_HLEN;
        len -= VLAN_HLEN;
        if (m !== undefined) shiftOffsets(m, -VLAN_HLEN);
      }
    }
    if (!net) {
      c.vlan++;
      return;
    }
    if (segLen - ETH_HLEN - tagLen > net.spec.mtu) {
      c.mtu++;
      return;
    }
    const srcHi = buf.readUInt16BE(off + 6);
    const srcLo = buf.readUInt32BE(off + 8);
    if (srcHi & 0x100) {
      c.bad_src++;
      return;
    }
    if (sp.allowed !== undefined && !sp.allowed.has(srcHi * 0x1_0000_0000 + srcLo)) {
      c.mac_locked++;
      return;
    }
    if (!this.#learn(sp, net, srcHi, srcLo)) {
      c.mac_limit++;
      return;
    }
    if (buf.readUInt8(off) & 1) {
      if (sp.storm !== undefined && !sp.storm.take(1, this.#clock())) {
        c.storm++;
        return;
      }
      this.#flood(sp, net, buf, off, len, m);
      return;
    }
    const dst = net.fdb.lookup(buf.readUInt16BE(off), buf.readUInt32BE(off + 2));
    if (dst < 0) {
      this.#flood(sp, net, buf, off, len, m);
      return;
    }
    if (dst === sp.id) return; // the destination is behind the port it came from: filter
    const out = this.#byId[dst];
    if (out === undefined) return;
    if (sp.link !== LINK_NONE && out.link !== LINK_NONE && !(sp.link === LINK_RELAY && out.link === LINK_RELAY)) {
      c.split_horizon++;
      return;
    }
    this.#output(out, this.#vidOf(out, net), buf, off, len, m);
  }

  /**
   * A batch of frames received on `sp` (see BatchSink). The common frame,
   * untagged unicast to a learned MAC behind a port that takes batches,
   * costs an FDB lookup (skipped when the MAC is the previous frame's) and
   * a learn (likewise), and is collected per destination port; each
   * destination then gets one writeBatch. Any other frame, and every frame
   * of a port whose ingress is policed, tapped or classified, goes through
   * {@link ingress} one by one, after the collected frames were written, so
   * the order of frames to each port is kept. Hot path: one function on
   * purpose, no allocation.
   */
  ingressBatch(sp: SwitchPort, buf: Buffer, frames: Uint32Array, count: number): void {
    if (sp.taps.length !== 0 || sp.police !== undefined || this.#shaped > 0) {
      for (let k = 0; k < count; k++) this.ingress(sp, buf, frames[2 * k] as number, frames[2 * k + 1] as number);
      return;
    }
    const c = sp.counters;
    const net = sp.untagged;
    const trunk = sp.vlans.size !== 0;
    const mtu = net === undefined ? 0 : net.spec.mtu;
    let srcHi = -1;
    let srcLo = -1;
    let dstHi = -1;
    let dstLo = -1;
    let out: SwitchPort | undefined;
    for (let k = 0; k < count; k++) {
      const off = frames[2 * k] as number;
      const len = frames[2 * k + 1] as number;
      let fast = net !== undefined && len >= ETH_HLEN && ((buf[off] as number) & 1) === 0;
      if (fast) {
        const type = u16(buf, off + 12);
        const tagged = type === ETHERTYPE_VLAN;
        fast = !(tagged && trunk) && len - ETH_HLEN - (tagged ? VLAN_HLEN : 0) <= mtu;
      }
      if (fast) {
        const hi = u16(buf, off + 6);
        const lo = u32(buf, off + 8);
        if (hi !== srcHi || lo !== srcLo) {
          // A new source: checked and learned as ingress() would (a refusal is counted there).
          fast =
            (hi & 0x100) === 0 &&
            (sp.allowed === undefined || sp.allowed.has(hi * 0x1_0000_0000 + lo)) &&
            this.#learn(sp, net as Network, hi, lo);
          srcHi = fast ? hi : -1;
          srcLo = lo;
          dstHi = -1; // learning may have moved a MAC
        }
      }
      if (fast) {
        const hi = u16(buf, off);
        const lo = u32(buf, off + 2);
        if (hi !== dstHi || lo !== dstLo) {
          dstHi = hi;
          dstLo = lo;
          out = this.#batchTarget(sp, net as Network, hi, lo);
        }
        fast = out !== undefined;
      }
      if (!fast) {
        this.#batchFlush(buf);
        this.ingress(sp, buf, off, len);
        srcHi = dstHi = -1; // that frame may have changed the FDB
        continue;
      }
      const o = out as SwitchPort;
      c.rxFrames++;
      c.rxBytes += len;
      let f = o.batchFrames;
      if (f === undefined) f = o.batchFrames = new Uint32Array(2 * BATCH_MAX);
      if (o.batchN === 0) this.#batchPorts.push(o);
      else if (o.batchN === BATCH_MAX) this.#batchWrite(o, buf);
      f[2 * o.batchN] = off;
      f[2 * o.batchN + 1] = len;
      o.batchN++;
    }
    this.#batchFlush(buf);
  }

  /** The port a unicast frame from `sp` to MAC hi:lo goes to in a batch, or undefined when it needs {@link ingress}. */
  #batchTarget(sp: SwitchPort, net: Network, hi: number, lo: number): SwitchPort | undefined {
    const dst = net.fdb.lookup(hi, lo);
    if (dst < 0 || dst === sp.id) return undefined;
    const o = this.#byId[dst];
    if (o === undefined || o.port.writeBatch === undefined || o.egress !== undefined || o.taps.length !== 0)
      return undefined;
    if (sp.link !== LINK_NONE && o.link !== LINK_NONE) return undefined; // split horizon: decided per frame
    return this.#vidOf(o, net) === 0 ? o : undefined;
  }

  /** Writes the frames collected for every port in the current batch. */
  #batchFlush(buf: Buffer): void {
    const ps = this.#batchPorts;
    for (let i = 0; i < ps.length; i++) this.#batchWrite(ps[i] as SwitchPort, buf);
    ps.length = 0;
  }

  #batchWrite(o: SwitchPort, buf: Buffer): void {
    const n = o.batchN;
    if (n === 0) return;
    o.batchN = 0;
    const r = this.#batchRes;
    r.ok = r.bytes = r.full = r.down = r.blocked = 0; // backpressure: blocked
    (o.port.writeBatch as NonNullable<Port['writeBatch']>)(buf, o.batchFrames as Uint32Array, n, r, this.hold.ctx); // backpressure: ctx
    this.hold.wroteBatch(o, r); // backpressure
    const c = o.counters;
    c.txFrames += r.ok;
    c.txBytes += r.bytes;
    c.queue_full += r.full;
    c.down += r.down;
  }

  /** Learns the source MAC; false when the port's MAC limit forbids it. */
  #learn(sp: SwitchPort, net: Network, hi: number, lo: number): boolean {
    if (net.fdb.touch(hi, lo, sp.id, this.#now) === sp.id) return true;
    if (sp.learned >= sp.maxMacs) return false;
    const r = net.fdb.learn(hi, lo, sp.id, this.#now);
    if (r === LEARN_FULL) return true; // table full: forward without learning (floods)
    sp.learned++;
    if (r !== LEARN_NEW) {
      // The MAC moved here from another port (a migrated VM): re-learned at once.
      const old = this.#byId[r];
      if (old) old.learned--;
    }
    return true;
  }

  #vidOf(sp: SwitchPort, net: Network): number {
    return sp.untagged === net ? 0 : (sp.vidByNet.get(net) ?? 0);
  }

  #flood(from: SwitchPort, net: Network, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): void {
    const members = net.members;
    // Split horizon: what came from a link goes to local ports only, except hub to hub (relay to relay).
    const fromLink = from.link;
    for (let i = 0; i < members.length; i++) {
      const m = members[i] as { sp: SwitchPort; vid: number };
      if (m.sp === from) continue;
      if (fromLink !== LINK_NONE && m.sp.link !== LINK_NONE && !(fromLink === LINK_RELAY && m.sp.link === LINK_RELAY))
        continue;
      this.#output(m.sp, m.vid, buf, off, len, meta);
    }
  }

  /**
   * A frame to one port. A frame with offload metadata goes whole to a port
   * that takes offloads, and is cut into segments (or has its checksum
   * completed) in software for any other port.
   */
  #output(sp: SwitchPort, vid: number, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): void {
    if (meta === undefined) {
      this.#outputOne(sp, vid, buf, off, len, undefined);
      return;
    }
    const c = sp.counters;
    // A shaped port queues plain frames (its queues keep no metadata): large segments are cut for it.
    if (sp.port.offloads === true && sp.egress === undefined) {
      let m = meta;
      if (vid !== 0) {
        // The tag inserted after the MACs moves every header offset by 4.
        m = this.#taggedMeta;
        m.copyFrom(meta);
        shiftOffsets(m, VLAN_HLEN);
      }
      if (this.#outputOne(sp, vid, buf, off, len, m) && meta.isGso) c.txGso++;
      return;
    }
    const seg = this.#seg;
    if (!seg.start(buf, off, len, meta)) {
      // Checked at ingress; only a port changing the bytes under the switch gets here.
      this.#offloadDrop(sp, seg.reason);
      return;
    }
    if (meta.isGso) c.txSegmented++;
    else c.txCsum++;
    for (let l = seg.next(); l > 0; l = seg.next()) this.#outputOne(sp, vid, seg.out, 0, l, undefined);
  }

  /** Feeds the capture taps of `sp`; a frame with offload metadata is shown as the frames it stands for. */
  #tapFrames(
    sp: SwitchPort,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
    dir: 'rx' | 'tx',
  ): void {
    const taps = sp.taps;
    if (meta === undefined) {
      for (const t of taps) t.frame(buf, off, len, dir);
      return;
    }
    const seg = this.#tapSeg;
    if (!seg.start(buf, off, len, meta)) return;
    for (let l = seg.next(); l > 0; l = seg.next()) for (const t of taps) t.frame(seg.out, 0, l, dir);
  }

  #offloadDrop(sp: SwitchPort, reason: number): void {
    sp.counters.offload++;
    const now = this.#clock();
    if (now - sp.lastMalformedLog < 1000) return;
    sp.lastMalformedLog = now;
    this.#log.warn(
      { port: sp.name, reason: describeOffloadReason(reason), total: sp.counters.offload },
      'frame with bad offload metadata (virtio_net_hdr) dropped',
    );
  }

  /** Hands one frame to the port (inserting the egress VLAN tag); true when it was queued. */
  #outputOne(
    sp: SwitchPort,
    vid: number,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
  ): boolean {
    let b = buf;
    let o = off;
    let l = len;
    if (vid !== 0) {
      // Insert an 802.1Q tag (TPID 0x8100, PCP 0) after the MACs.
      b = this.#scratch;
      buf.copy(b, 0, off, off + 12);
      b.writeUInt16BE(ETHERTYPE_VLAN, 12);
      b.writeUInt16BE(vid, 14);
      buf.copy(b, 16, off + 12, off + len);
      o = 0;
      l = len + VLAN_HLEN;
    }
    if (sp.egress !== undefined) {
      // Shaped (never with metadata, see #output): the frame waits in its (source, class) flow; counted when it leaves (#sent).
      if (sp.egress.enqueue(this.#srcId, this.#cls, b, o, l, sp.egressTag)) return true;
      sp.counters.queue_full++;
      return false;
    }
    const r = sp.port.write(b, o, l, meta, this.hold.ctx); // backpressure: ctx
    this.hold.wrote(sp, r, 1); // backpressure
    return this.#sent(sp, r, b, o, l, meta);
  }

  /** Counts one frame handed to a port's transport; true when it was queued. */
  #sent(sp: SwitchPort, r: WriteResult, b: Buffer, o: number, l: number, meta: OffloadMeta | undefined): boolean {
    const c = sp.counters;
    if (r === WriteResult.OK || r === WriteResult.FULL) {
      // backpressure: FULL is queued too
      c.txFrames++;
      c.txBytes += l;
      if (sp.taps.length) this.#tapFrames(sp, b, o, l, meta, 'tx');
      return true;
    }
    if (r === WriteResult.QUEUE_FULL) c.queue_full++;
    else c.down++;
    return false;
  }

  /** Counts malformed transport input on a port, and logs it (at most once a second per port). */
  malformed(sp: SwitchPort, reason: string): void {
    sp.counters.malformed++;
    const now = this.#clock();
    if (now - sp.lastMalformedLog < 1000) return;
    sp.lastMalformedLog = now;
    this.#log.warn({ port: sp.name, reason, total: sp.counters.malformed }, 'malformed input on port');
  }
}

/**
 * Big-endian reads for the batch path, bounds already checked by the caller
 * (Buffer's readUInt16BE/readUInt32BE validate their offset on every call:
 * a few percent of the switch's time at 64-byte frames).
 */
function u16(b: Buffer, at: number): number {
  return ((b[at] as number) << 8) | (b[at + 1] as number);
}

function u32(b: Buffer, at: number): number {
  return (
    (b[at] as number) * 0x100_0000 +
    (((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number))
  );
}

/**
 * Moves the header offsets of offload metadata by `by` bytes (a VLAN tag
 * stripped or inserted after the MACs). csum_start only means something with
 * NEEDS_CSUM, and hdr_len 0 means "not given": those stay as they are.
 */
function shiftOffsets(m: OffloadMeta, by: number): void {
  if (m.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) m.csumStart += by;
  if (m.hdrLen !== 0) m.hdrLen = Math.max(0, m.hdrLen + by);
}

function networkInfo(n: Network): NetworkSpec & { ports: string[]; macs: number } {
  return { ...n.spec, ports: [...new Set(n.members.map((m) => m.sp.name))], macs: n.fdb.size };
}
