/**
 * The layer-2 switch: networks (isolated broadcast domains), the ports joined
 * to them, and one batch pipeline that forwards every frame.
 *
 * Every ingress is a batch (a single frame, with its offload metadata if any,
 * is a batch of one) through the same stages, each in its own module:
 *
 *   checks.ts   ingress checks: counters, runts, offload metadata, capture,
 *               policing, QoS class, VLAN, MTU, source MAC, MAC lock, storm
 *   learn.ts    learn the source (per-port MAC limit), look up the destination
 *   forward.ts  unicast, or flood to the split-horizon group's flood list
 *               (horizon.ts, network.ts: worked out when membership changes)
 *   egress.ts   VLAN tag, software segmentation, shaping, capture, delivery
 *
 * For a control plane: locations.ts (installed MAC locations), mac-events.ts.
 *
 * It knows no socket: ports are reached only through the {@link Port}
 * interface. The per-frame path reads headers in place (src/net/frame/) and
 * allocates nothing in steady state.
 */
import type { Logger } from '../../log.js';
import type { PortQosPolicy } from '../../qos/policy.js';
import {
  NetworkExistsError,
  NetworkInUseError,
  NetworkNotFoundError,
  PortExistsError,
  PortNotFoundError,
  VniInUseError,
} from '../errors.js';
import { dstHi, dstLo, isGroupDst, srcHi, srcLo } from '../frame/ethernet.js';
import { VLAN_HLEN } from '../frame/vlan.js';
import { Segmenter } from '../offload/segmenter.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import { type FrameSink, MAX_FRAME_LEN, type Port, type PortState, type WriteResult } from '../port.js';
import { ArpProxy } from './arp-proxy.js';
import { Capture } from './capture.js';
import { FrameCursor, IngressChecks } from './checks.js';
import { Egress } from './egress.js';
import { Forward } from './forward.js';
import { Hold } from './hold.js';
import { type FdbRow, LEARN_CHANGED, LEARN_REFUSED, Learner } from './learn.js';
import { type LocalMac, Locations, locationMac } from './locations.js';
import { MacEvents, type MacEventsLost, type MacListener } from './mac-events.js';
import { Network, type NetworkInfo, type NetworkSpec } from './network.js';
import type { QosEgress } from './qos-egress.js';
import { Shaping } from './shaping.js';
import { malformedInput, type PortBinding, SwitchPort } from './switch-port.js';

export type { FdbRow } from './learn.js';
export type { LocalMac } from './locations.js';
export type { MacEvent } from './mac-events.js';
export type { NetworkSpec } from './network.js';
export { type FrameTap, type PortBinding, SwitchPort } from './switch-port.js';

export interface SwitchOptions {
  logger: Logger;
  /** Milliseconds clock; default `performance.now`-based wall clock. */
  clock?: () => number;
  /** MAC aging time in seconds; default 300. */
  agingSec?: number;
  /** Most MACs per network; default 65536. */
  maxMacsPerNetwork?: number;
  /** Most MAC events held between two deliveries (see {@link Switch.onMacEvent}); default 4096. */
  macEventRing?: number;
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
  #timer: NodeJS.Timeout | undefined;
  /** The single frame of a batch of one (see {@link ingress}). */
  readonly #one = new Uint32Array(2);
  // The stages, and what travels between them.
  readonly #cur = new FrameCursor();
  readonly #checks: IngressChecks;
  readonly #learn: Learner;
  readonly #forward: Forward;
  readonly #egress: Egress;
  readonly #shaping: Shaping;
  readonly #events: MacEvents;
  readonly #locations: Locations;
  readonly #arp: ArpProxy;
  /** Backpressure: holds senders whose frames all went to full ports (hold.ts). */
  readonly hold = new Hold();

  constructor(opts: SwitchOptions) {
    this.#log = opts.logger;
    this.#clock = opts.clock ?? (() => performance.timeOrigin + performance.now());
    this.#agingMs = (opts.agingSec ?? 300) * 1000;
    this.#maxMacsPerNetwork = opts.maxMacsPerNetwork ?? 65536;
    // One segmenter: the checks validate a frame's metadata with it, the egress then cuts that frame.
    const seg = new Segmenter(MAX_FRAME_LEN + VLAN_HLEN);
    const capture = new Capture();
    this.#checks = new IngressChecks(this.#cur, seg, capture, this.#clock, this.#log);
    this.#events = new MacEvents(opts.macEventRing ?? 4096, this.#log);
    this.#learn = new Learner(this.#byId, this.#events);
    this.#locations = new Locations(this.#byId, this.#events, this.#log);
    this.#learn.now = this.#clock();
    this.#egress = new Egress(this.#cur, seg, capture, this.#clock, this.#log, this.hold);
    this.#forward = new Forward(this.#byId, this.#egress);
    this.#arp = new ArpProxy(this.#egress);
    this.#shaping = new Shaping(this.#egress, this.#clock, this.#checks);
  }

  /** Starts the one periodic sweep (clock refresh every 250 ms, aging sweep every second). */
  start(): void {
    if (this.#timer) return;
    let n = 0;
    this.#timer = setInterval(() => {
      this.#learn.now = this.#clock();
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
    const now = this.#clock();
    this.#learn.now = now;
    return this.#learn.age(this.#networks.values(), now, this.#agingMs);
  }

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

  networks(): NetworkInfo[] {
    return [...this.#networks.values()].map((n) => n.info());
  }

  /** One network as {@link networks} lists it, or undefined when there is none of that name. */
  network(name: string): NetworkInfo | undefined {
    return this.#networks.get(name)?.info();
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
      untaggedNet.join(sp, 0);
    }
    for (const [vid, net] of vlans) {
      sp.vlans.set(vid, net);
      sp.trunk = true;
      sp.vidByNet.set(net, vid);
      net.join(sp, vid);
    }
    return sp;
  }

  /** Detaches a port, forgets its MACs and the locations installed toward it, and closes its transport. */
  async removePort(name: string): Promise<void> {
    const sp = this.port(name);
    this.#ports.delete(name);
    this.#learn.forget(sp, true);
    // Only the port's own networks: with thousands of networks, every link port goes one by one.
    for (const net of sp.memberOf()) net.leave(sp);
    this.#byId[sp.id] = undefined;
    this.hold.forget(sp);
    sp.taps = [];
    if (sp.egress) this.#shaping.unshape(sp);
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

  /** Forgets every MAC learned on the port (locations installed toward it stay). */
  flushPort(sp: SwitchPort): void {
    this.#learn.forget(sp);
  }

  /** The learned MACs of one network, or of all. */
  fdb(network?: string): FdbRow[] {
    const nets = network === undefined ? this.#networks.values() : [this.#network(network)];
    return this.#learn.rows(nets, this.#clock());
  }

  // ---- locations and MAC events (locations.ts, mac-events.ts) --------------------

  /**
   * Installs `mac`'s location in `network` toward `port` (a cluster: the link toward its host), or
   * removes it (undefined). Throws for a bad name or MAC; false: the table is full. See locations.ts.
   */
  setLocation(network: string, mac: string, port: string | undefined): boolean {
    const net = this.#network(network);
    const sp = port === undefined ? undefined : this.port(port);
    return this.#locations.set(net, locationMac(mac), sp, this.#clock());
  }

  /**
   * Tells `fn` of local ports' MACs learned, moved and forgotten, once per turn (mac-events.ts);
   * `lost`: events were dropped, read {@link localMacs} again. Returns the function that stops it.
   */
  onMacEvent(fn: MacListener, lost?: MacEventsLost): () => void {
    return this.#events.listen(fn, lost);
  }

  /** Every MAC behind a local port (learned or installed), for a full resync of what this host publishes. */
  localMacs(): LocalMac[] {
    return this.#locations.localMacs(this.#networks.values());
  }

  /** ARP suppression: answers local ports' ARP requests for `ip` in `network` with `mac` (undefined: stops). See arp-proxy.ts. */
  setArpProxy(network: string, ip: string, mac: string | undefined): boolean {
    return this.#arp.set(this.#network(network), ip, mac, this.#maxMacsPerNetwork);
  }

  /** The name of the port with id `id`, if it exists. */
  portName(id: number): string | undefined {
    return this.#byId[id]?.name;
  }

  // ---- QoS (shaping.ts) -------------------------------------------------------

  /**
   * Applies a port's QoS policy (undefined: none): ingress policing, its
   * class and trust, its weight and reservation on every shaped egress, and
   * with a capacity its own shaped egress. Admission is the caller's job.
   */
  setPortQos(name: string, p: PortQosPolicy | undefined): void {
    this.#shaping.setPortQos(this.port(name), p, this.#ports.values());
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
    this.#shaping.shareEgress(this.port(name), egress, tag, this.#ports.values());
  }

  /** Counts a frame that a shared egress's target handed to `sp`'s transport (tx counters, capture). */
  countSent(sp: SwitchPort, r: WriteResult, buf: Buffer, off: number, len: number): void {
    this.#egress.sent(sp, r, buf, off, len, undefined);
  }

  // ---- data path ----------------------------------------------------------------

  /**
   * One frame received on `sp`, with its offload metadata if it has any
   * (see FrameSink): a batch of one. No exceptions for any input (bad frames
   * are dropped and counted on `sp`).
   */
  ingress(sp: SwitchPort, buf: Buffer, off: number, len: number, meta?: OffloadMeta): void {
    const one = this.#one;
    one[0] = off;
    one[1] = len;
    this.#batch(sp, buf, one, 1, meta);
  }

  /** A batch of frames received on `sp` (see BatchSink): frame k at `frames[2k]`, length `frames[2k+1]`. */
  ingressBatch(sp: SwitchPort, buf: Buffer, frames: Uint32Array, count: number): void {
    this.#batch(sp, buf, frames, count, undefined);
  }

  #batch(sp: SwitchPort, buf: Buffer, frames: Uint32Array, count: number, meta: OffloadMeta | undefined): void {
    const eg = this.#egress;
    // A port may feed the switch from within a write: the enclosing batch gets its state back after.
    const { source, buf: outerBuf, collect } = eg.batch;
    eg.begin(sp, buf, count);
    try {
      this.#frames(sp, buf, frames, count, meta);
    } finally {
      eg.end(source, outerBuf, collect);
    }
  }

  /**
   * The pipeline over one batch: checks, learn, look up, forward or flood
   * (egress collects per destination port). The source and destination of
   * the previous frame are remembered, so a run of frames between the same
   * two MACs costs one learn and one lookup. Hot path: one loop, no allocation.
   */
  #frames(sp: SwitchPort, buf: Buffer, frames: Uint32Array, count: number, meta: OffloadMeta | undefined): void {
    const checks = this.#checks;
    const learn = this.#learn;
    const fwd = this.#forward;
    const cur = this.#cur;
    const eg = this.#egress;
    const arp = this.#arp;
    let sNet: Network | undefined;
    let sHi = -1;
    let sLo = -1;
    let dNet: Network | undefined;
    let dHi = -1;
    let dLo = -1;
    let dst = -1;
    let out: SwitchPort | undefined;
    let blocked = false;
    let collect = false;
    // Whether frames of this batch need the full ingress checks depends on the port and the batch only.
    const full = checks.full(sp, meta);
    for (let k = 0; k < count; k++) {
      const net = checks.admit(sp, buf, frames[2 * k] as number, frames[2 * k + 1] as number, meta, full);
      if (net === undefined) continue;
      const off = cur.off;
      const len = cur.len;
      const m = cur.meta;
      const hi = srcHi(buf, off);
      const lo = srcLo(buf, off);
      if (hi !== sHi || lo !== sLo || net !== sNet) {
        sHi = -1;
        if (!checks.source(sp, hi, lo)) continue;
        const r = learn.learn(sp, net, hi, lo);
        if (r === LEARN_REFUSED) {
          sp.counters.mac_limit++;
          continue;
        }
        if (r === LEARN_CHANGED) dHi = -1; // a MAC moved: look up again
        sHi = hi;
        sLo = lo;
        sNet = net;
      }
      if (isGroupDst(buf, off)) {
        if (checks.storm(sp) && (net.arp === undefined || !arp.answer(sp, net, buf, off, len)))
          fwd.flood(sp, net, buf, off, len, m);
        continue;
      }
      const h = dstHi(buf, off);
      const l = dstLo(buf, off);
      if (h !== dHi || l !== dLo || net !== dNet) {
        dst = learn.lookup(net, h, l);
        dHi = h;
        dLo = l;
        dNet = net;
        out = dst < 0 ? undefined : fwd.resolve(sp, dst);
        blocked = fwd.blocked;
        // Decided once per destination: its frames of this batch are collected straight away.
        collect = out !== undefined && eg.collects(out, out.vidOf(net), m);
      }
      if (collect) eg.collect(out as SwitchPort, off, len);
      else if (dst < 0) fwd.flood(sp, net, buf, off, len, m);
      else fwd.unicast(sp, out, blocked, net, buf, off, len, m);
    }
  }

  /** Counts malformed transport input on a port, and logs it (at most once a second per port). */
  malformed(sp: SwitchPort, reason: string): void {
    malformedInput(sp, reason, this.#log, this.#clock());
  }
}
