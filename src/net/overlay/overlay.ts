/**
 * The overlay: links between this daemon and others (docs/overlay.md).
 *
 * A link either dials a peer (config `links:` or `vmlink link add`) and
 * re-dials with exponential backoff and jitter, or is accepted from a peer
 * (named after the peer's host id). When a channel comes up the link carries
 * every network both hosts have (by VNI): one link port per network on the
 * switch, with split horizon (switch.ts). At most one channel per peer host:
 * when two exist (both hosts dialled), the one initiated by the host with the
 * smaller id wins on both ends, so both ends agree without a message.
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Backoff } from '../ports/backoff.js';
import type { FrameSink } from '../ports/port.js';
import type { Switch, SwitchPort } from '../switch/switch.js';
import { LinkExistsError, LinkNotFoundError } from './errors.js';
import { LinkPort } from './link-port.js';
import type {
  ChannelStats,
  ControlMessage,
  LinkChannel,
  LinkTransport,
  PeerHello,
  TransportAddress,
} from './transport.js';

export type LinkState = 'connecting' | 'up' | 'standby' | 'down' | 'closed';
export type LinkSource = 'config' | 'api' | 'peer';

/** A link to dial. */
export interface LinkSpec {
  /** Unique link name on this host. */
  name: string;
  /** The peer's link listener. */
  connect: TransportAddress;
}

export interface OverlayOptions {
  logger: Logger;
  switch: Switch;
  /** This host's id. */
  hostId: string;
  /** This host relays between its links (a hub). */
  relay: boolean;
  transport: LinkTransport;
  /** Re-dial delays, ms. */
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  /** Random source for backoff jitter (tests). */
  random?: () => number;
  /** Called for control messages the overlay does not handle itself (topology). */
  onControl?: (link: string, msg: ControlMessage) => void;
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
  reason: string;
  transport: string;
  /** Peer host id (once known). */
  peer: string | undefined;
  /** Networks the link carries now. */
  networks: string[];
  rtt_ms: number | undefined;
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
}

const addr = (a: TransportAddress) => `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;

class Link {
  channel: LinkChannel | undefined;
  state: LinkState = 'connecting';
  reason = 'not started';
  peer: string | undefined;
  readonly ports = new Map<number, { sp: SwitchPort; sink: FrameSink }>();
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
  constructor(
    readonly name: string,
    readonly source: LinkSource,
    readonly spec: LinkSpec | undefined,
    readonly backoff: Backoff,
  ) {}
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

export class Overlay {
  readonly #o: OverlayOptions;
  readonly #log: Logger;
  readonly #links = new Map<string, Link>();
  /** Peer host id -> the link whose channel is up to it. */
  readonly #byPeer = new Map<string, Link>();
  #sampler: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Bound listener address, when listening. */
  listening: TransportAddress | undefined;

  constructor(opts: OverlayOptions) {
    this.#o = opts;
    this.#log = opts.logger;
  }

  /** This host's hello: its id, every network it has, whether it relays. */
  hello(): PeerHello {
    return {
      host: this.#o.hostId,
      networks: this.#o.switch.networks().map((n) => ({ vni: n.vni, name: n.name })),
      relay: this.#o.relay,
    };
  }

  /** Starts listening (when an address is given) and the one-second statistics sampler. */
  async start(listen: TransportAddress | undefined): Promise<void> {
    if (listen) this.listening = await this.#o.transport.listen(listen, (ch) => this.#accepted(ch));
    this.#sampler = setInterval(() => this.#sample(), 1000);
    this.#sampler.unref();
  }

  /** Adds a link to dial; it starts dialling at once. */
  add(spec: LinkSpec, source: 'config' | 'api'): void {
    if (this.#links.has(spec.name)) throw new LinkExistsError(spec.name);
    const r = this.#o.reconnect;
    const link = new Link(spec.name, source, spec, new Backoff(r?.min_ms ?? 100, r?.max_ms ?? 5000, this.#o.random));
    this.#links.set(spec.name, link);
    this.#dial(link);
  }

  has(name: string): boolean {
    return this.#links.has(name);
  }

  source(name: string): LinkSource | undefined {
    return this.#links.get(name)?.source;
  }

  /** Closes a link and forgets it. */
  async delete(name: string): Promise<void> {
    const link = this.#links.get(name);
    if (!link) throw new LinkNotFoundError(name);
    this.#links.delete(name);
    await this.#closeLink(link, 'the link was deleted');
  }

  /** Sends a control message on a link's channel; false when it is not up. */
  sendControl(name: string, msg: ControlMessage): boolean {
    return this.#links.get(name)?.channel?.sendControl(msg) ?? false;
  }

  /** The up link to a peer host, if any. */
  linkToHost(host: string): string | undefined {
    return this.#byPeer.get(host)?.name;
  }

  list(): LinkView[] {
    return [...this.#links.values()].map((l) => this.#view(l));
  }

  view(name: string): LinkView {
    const l = this.#links.get(name);
    if (!l) throw new LinkNotFoundError(name);
    return this.#view(l);
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#sampler);
    await Promise.all([...this.#links.values()].map((l) => this.#closeLink(l, 'the daemon is stopping')));
    await this.#o.transport.close();
  }

  // ---- dialling ------------------------------------------------------------------

  #dial(link: Link): void {
    link.timer = undefined;
    if (link.closed || this.#stopped || !link.spec) return;
    // A channel to the same peer host carried by another link (it dialled us): stand by.
    const other = link.peer === undefined ? undefined : this.#byPeer.get(link.peer);
    if (other && other !== link) {
      this.#setState(link, 'standby', `host "${link.peer}" is reached through link "${other.name}"`);
      link.timer = setTimeout(() => this.#dial(link), this.#o.reconnect?.max_ms ?? 5000);
      link.timer.unref();
      return;
    }
    const where = `${this.#o.transport.kind}:${addr(link.spec.connect)}`;
    if (link.state !== 'connecting') this.#setState(link, 'connecting', `dialling ${where}`);
    link.abort = new AbortController();
    this.#o.transport.dial(link.spec.connect, link.abort.signal).then(
      (ch) => {
        link.abort = undefined;
        if (link.closed || this.#stopped) {
          void ch.close('the link was deleted');
          return;
        }
        link.backoff.reset();
        this.#up(link, ch);
      },
      (err: unknown) => {
        link.abort = undefined;
        this.#retry(link, describeError(err));
      },
    );
  }

  #retry(link: Link, why: string): void {
    if (link.closed || this.#stopped || !link.spec || link.timer) return;
    const first = link.backoff.attempt === 0;
    const delay = link.backoff.next();
    if (first) this.#log.info({ link: link.name, delay_ms: delay }, `link "${link.name}": ${why}`);
    this.#setState(link, 'connecting', `${why}; re-dialling in ${delay} ms`, first);
    link.timer = setTimeout(() => this.#dial(link), delay);
    link.timer.unref();
  }

  // ---- channels ------------------------------------------------------------------

  #accepted(ch: LinkChannel): void {
    if (this.#stopped) {
      void ch.close('the daemon is stopping');
      return;
    }
    const host = ch.peer.host;
    if (host === this.#o.hostId) {
      this.#log.warn({ peer: ch.remote }, `refused a link from ${ch.remote}: it has this host's own id "${host}"`);
      void ch.close(`host id "${host}" is this host's own`);
      return;
    }
    let link = this.#links.get(host);
    if (link && link.source !== 'peer') {
      // A dial link has the peer's name: the accepted channel goes to a link named after both.
      link = this.#links.get(`${host}~in`);
    }
    if (!link) {
      const name = this.#links.has(host) ? `${host}~in` : host;
      link = new Link(name, 'peer', undefined, new Backoff());
      this.#links.set(name, link);
    }
    this.#up(link, ch);
  }

  /** True when channel `a` should be kept over `b` (both to the same host). */
  #wins(a: LinkChannel, b: LinkChannel): boolean {
    const ia = a.outbound ? this.#o.hostId : a.peer.host;
    const ib = b.outbound ? this.#o.hostId : b.peer.host;
    if (ia === ib) return true; // same initiator: the newer one (a) replaces a stale one
    return ia < ib;
  }

  #up(link: Link, ch: LinkChannel): void {
    const host = ch.peer.host;
    const current = this.#byPeer.get(host);
    if (current?.channel && current.channel !== ch) {
      if (!this.#wins(ch, current.channel)) {
        this.#log.info(
          { link: link.name, peer: host },
          `link "${link.name}": host "${host}" is already reached through "${current.name}"`,
        );
        void ch.close('duplicate: another connection between these hosts is kept');
        link.peer = host;
        if (link.spec) this.#retry(link, `host "${host}" is already reached through link "${current.name}"`);
        else this.#forget(link);
        return;
      }
      void this.#drop(current, 'replaced by a newer connection', true);
    }
    if (link.channel) void this.#drop(link, 'replaced by a newer connection', false);
    link.channel = ch;
    link.peer = host;
    link.connects++;
    link.upSince = performance.now();
    this.#byPeer.set(host, link);
    const sw = this.#o.switch;
    const offered = new Set(ch.peer.networks.map((n) => n.vni));
    const carried: string[] = [];
    for (const net of sw.networks()) {
      if (!offered.has(net.vni)) continue;
      const name = `link/${link.name}/${net.name}`;
      let sink: FrameSink = () => undefined;
      const sp = sw.addPort(
        name,
        { network: net.name, link: this.#o.relay ? 'relay' : 'link', maxMacs: 65536 },
        (s) => {
          sink = s;
          return new LinkPort(name, net.vni, ch);
        },
      );
      sw.portState(sp, 'up');
      link.ports.set(net.vni, { sp, sink });
      carried.push(net.name);
    }
    const ports = link.ports;
    ch.attach({
      frame: (vni, buf, off, len) => {
        const p = ports.get(vni);
        if (p === undefined) (ch as { unknownVni?: () => void }).unknownVni?.();
        else p.sink(buf, off, len);
      },
      control: (msg) => this.#o.onControl?.(link.name, msg),
      closed: (reason) => {
        if (link.channel !== ch) return;
        void this.#drop(link, reason, true);
      },
    });
    const reason = `${ch.kind} to host "${host}" at ${ch.remote}, carrying ${carried.length ? carried.join(', ') : 'no shared network'}`;
    this.#setState(link, 'up', reason, true);
  }

  /** Takes a link's channel down: its link ports go (their MACs are forgotten); dial links re-dial. */
  async #drop(link: Link, reason: string, redial: boolean): Promise<void> {
    const ch = link.channel;
    if (!ch) return;
    link.channel = undefined;
    if (link.peer !== undefined && this.#byPeer.get(link.peer) === link) this.#byPeer.delete(link.peer);
    this.#accumulate(link, ch);
    const removing = [...link.ports.values()].map((p) => {
      link.pastDown += p.sp.counters.down;
      link.pastSplit += p.sp.counters.split_horizon;
      return this.#o.switch.removePort(p.sp.name).catch(() => undefined);
    });
    link.ports.clear();
    await Promise.all([ch.close(reason), ...removing]);
    // Closed, or a newer channel took the link over meanwhile: nothing more to do.
    if (link.closed || this.#stopped || link.channel) return;
    this.#log.warn({ link: link.name, reason }, `link "${link.name}" down: ${reason}`);
    if (!link.spec) {
      this.#forget(link);
      return;
    }
    this.#setState(link, 'down', reason);
    if (redial) this.#retry(link, reason);
    else this.#dial(link);
  }

  #forget(link: Link): void {
    if (this.#links.get(link.name) === link) this.#links.delete(link.name);
  }

  async #closeLink(link: Link, reason: string): Promise<void> {
    link.closed = true;
    clearTimeout(link.timer);
    link.abort?.abort();
    await this.#drop(link, reason, false);
    link.state = 'closed';
  }

  #accumulate(link: Link, ch: LinkChannel): void {
    const s = ch.stats();
    const p = link.past;
    p.tx_frames += s.tx_frames;
    p.tx_bytes += s.tx_bytes;
    p.rx_frames += s.rx_frames;
    p.rx_bytes += s.rx_bytes;
    p.tx_writes += s.tx_writes;
    p.drops_queue_full += s.drops_queue_full;
    p.drops_too_big += s.drops_too_big;
    p.drops_unknown_vni += s.drops_unknown_vni;
    p.rtt_ms = s.rtt_ms ?? p.rtt_ms;
  }

  #setState(link: Link, state: LinkState, reason: string, force = false): void {
    const changed = link.state !== state || force;
    link.state = state;
    link.reason = reason;
    if (changed) this.#log.info({ link: link.name, state, reason }, `link "${link.name}" ${state}: ${reason}`);
  }

  #totals(link: Link): ChannelStats {
    const t = { ...link.past };
    const s = link.channel?.stats();
    if (s) {
      t.tx_frames += s.tx_frames;
      t.tx_bytes += s.tx_bytes;
      t.rx_frames += s.rx_frames;
      t.rx_bytes += s.rx_bytes;
      t.tx_writes += s.tx_writes;
      t.drops_queue_full += s.drops_queue_full;
      t.drops_too_big += s.drops_too_big;
      t.drops_unknown_vni += s.drops_unknown_vni;
      t.rtt_ms = s.rtt_ms;
    }
    return t;
  }

  #sample(): void {
    const now = performance.now();
    for (const l of this.#links.values()) {
      const t = this.#totals(l);
      const dt = (now - l.prevAt) / 1000;
      if (dt <= 0) continue;
      l.txBps = Math.round(((t.tx_bytes - l.prevTx) * 8) / dt);
      l.rxBps = Math.round(((t.rx_bytes - l.prevRx) * 8) / dt);
      l.prevTx = t.tx_bytes;
      l.prevRx = t.rx_bytes;
      l.prevAt = now;
    }
  }

  #view(l: Link): LinkView {
    const t = this.#totals(l);
    let down = l.pastDown;
    let split = l.pastSplit;
    for (const p of l.ports.values()) {
      down += p.sp.counters.down;
      split += p.sp.counters.split_horizon;
    }
    return {
      name: l.name,
      source: l.source,
      mode: l.spec ? 'dial' : 'accept',
      address: l.spec ? `${this.#o.transport.kind}:${addr(l.spec.connect)}` : l.channel?.remote,
      state: l.state,
      reason: l.reason,
      transport: this.#o.transport.kind,
      peer: l.peer,
      networks: [...l.ports.values()].map((p) => p.sp.networks()[0] as string),
      rtt_ms: l.channel ? t.rtt_ms : undefined,
      tx_bps: l.txBps,
      rx_bps: l.rxBps,
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
      connects: l.connects,
      up_s: l.channel ? Math.floor((performance.now() - l.upSince) / 1000) : undefined,
    };
  }
}
