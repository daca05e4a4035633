/**
 * The life cycle of links (docs/overlay.md "Links"): a link either dials a
 * peer and re-dials with exponential backoff and jitter, or is accepted from
 * a peer (named after the peer's host id). When a channel comes up, the
 * link carries the networks both hosts have (link-networks.ts); when it
 * goes down, its link ports go and a dial link re-dials. At most one
 * channel per peer host: when two exist (both hosts dialled), the one
 * initiated by the host with the smaller id wins on both ends, so both ends
 * agree without a message.
 */
import { describeError } from '../../errors.js';
import { Backoff } from '../../util/backoff.js';
import { addr, Link, type LinkSource, type LinkSpec, type LinkState } from './link.js';
import { carrying, type LinkNetworks } from './link-networks.js';
import type { LinkShaping } from './link-shaping.js';
import { NETWORK_LIST_TIMEOUT_MS, type OverlayContext } from './overlay-context.js';
import { type RelayTopology, remoteHostOf } from './relay-topology.js';
import type { ControlMessage, LinkChannel } from './transport.js';

/** How long a channel must stay up before the re-dial backoff starts again at its minimum, ms. */
function stableMs(maxMs = 5000): number {
  return Math.max(10_000, 2 * maxMs);
}

export class LinkLifecycle {
  readonly #ctx: OverlayContext;
  readonly #networks: LinkNetworks;
  readonly #shaping: LinkShaping;
  readonly #topology: RelayTopology;
  /** Where control messages other than hello, keepalives and bye go (overlay.ts). */
  readonly #control: (link: Link, msg: ControlMessage) => void;

  constructor(
    ctx: OverlayContext,
    parts: { networks: LinkNetworks; shaping: LinkShaping; topology: RelayTopology },
    control: (link: Link, msg: ControlMessage) => void,
  ) {
    this.#ctx = ctx;
    this.#networks = parts.networks;
    this.#shaping = parts.shaping;
    this.#topology = parts.topology;
    this.#control = control;
  }

  /** Makes a link to dial and starts dialling. The caller checked that the name is free. */
  add(spec: LinkSpec, source: LinkSource): Link {
    const link = new Link(spec.name, source, spec, this.#ctx.backoff());
    this.#ctx.links.set(spec.name, link);
    return link;
  }

  // ---- dialling ------------------------------------------------------------------

  dial(link: Link): void {
    const ctx = this.#ctx;
    link.timer = undefined;
    if (link.closed || ctx.stopped || !link.spec) return;
    // A channel to the same peer host carried by another link (it dialled us): stand by.
    const other = link.peer === undefined ? undefined : ctx.byPeer.get(link.peer);
    if (other && other !== link) {
      this.#setState(link, 'standby', `host "${link.peer}" is reached through link "${other.name}"`);
      link.timer = setTimeout(() => this.dial(link), ctx.o.reconnect?.max_ms ?? 5000);
      link.timer.unref();
      return;
    }
    const transport = ctx.transportOf(link.spec);
    const where = `${transport.kind}:${addr(link.spec.connect)}`;
    if (link.state !== 'connecting') this.#setState(link, 'connecting', `dialling ${where}`);
    link.abort = new AbortController();
    transport.dial(link.spec.connect, link.abort.signal).then(
      (ch) => {
        link.abort = undefined;
        if (link.closed || ctx.stopped) {
          void ch.close('the link was deleted');
          return;
        }
        // The backoff is reset only once the channel has stayed up (#drop): a peer that
        // takes the connection and closes it at once is re-dialled ever more slowly.
        this.#up(link, ch);
      },
      (err: unknown) => {
        link.abort = undefined;
        this.#retry(link, describeError(err));
      },
    );
  }

  #retry(link: Link, why: string): void {
    const ctx = this.#ctx;
    if (link.closed || ctx.stopped || !link.spec || link.timer) return;
    if (link.source === 'direct') {
      // A direct link that cannot be made is not retried: the relay carries the traffic.
      ctx.log.info(
        { link: link.name, reason: why },
        `direct link "${link.name}" failed (${why}); staying on the relay`,
      );
      link.closed = true;
      this.#forget(link);
      return;
    }
    const first = link.backoff.attempt === 0;
    const delay = link.backoff.next();
    link.failed(why);
    if (first) ctx.log.info({ link: link.name, delay_ms: delay }, `link "${link.name}": ${why}`);
    this.#setState(link, 'connecting', `${why}; re-dialling in ${delay} ms`, first);
    link.timer = setTimeout(() => this.dial(link), delay);
    link.timer.unref();
  }

  // ---- channels ------------------------------------------------------------------

  /** A channel the listener accepted: it goes to the link named after the peer host. */
  accepted(ch: LinkChannel): void {
    const ctx = this.#ctx;
    if (ctx.stopped) {
      void ch.close('the daemon is stopping');
      return;
    }
    const host = ch.peer.host;
    if (host === ctx.o.hostId) {
      ctx.log.warn({ peer: ch.remote }, `refused a link from ${ch.remote}: it has this host's own id "${host}"`);
      void ch.close(`host id "${host}" is this host's own`);
      return;
    }
    let link = ctx.links.get(host);
    // A dial link has the peer's name: the accepted channel goes to a link named after both.
    if (link && link.source !== 'peer') link = ctx.links.get(`${host}~in`);
    if (!link) {
      const name = ctx.links.has(host) ? `${host}~in` : host;
      link = new Link(name, 'peer', undefined, new Backoff());
      ctx.links.set(name, link);
    }
    this.#shaping.accepted(link, ch.peer);
    this.#up(link, ch);
  }

  /** True when channel `a` should be kept over `b` (both to the same host). */
  #wins(a: LinkChannel, b: LinkChannel): boolean {
    const me = this.#ctx.o.hostId;
    const ia = a.outbound ? me : a.peer.host;
    const ib = b.outbound ? me : b.peer.host;
    if (ia === ib) return true; // same initiator: the newer one (a) replaces a stale one
    return ia < ib;
  }

  #up(link: Link, ch: LinkChannel): void {
    const ctx = this.#ctx;
    const host = ch.peer.host;
    if (host === ctx.o.hostId) {
      // A link to this host itself (its own listener, or a peer with the same id) would loop frames back.
      void ch.close(`host id "${host}" is this host's own`);
      if (link.spec) this.#retry(link, `the peer at ${ch.remote} has this host's own id "${host}"`);
      else this.#forget(link);
      return;
    }
    const current = ctx.byPeer.get(host);
    if (current?.channel && current.channel !== ch) {
      if (!this.#wins(ch, current.channel)) {
        ctx.log.info(
          { link: link.name, peer: host },
          `link "${link.name}": host "${host}" is already reached through "${current.name}"`,
        );
        void ch.close('duplicate: another connection between these hosts is kept');
        link.peer = host;
        if (link.spec) this.#retry(link, `host "${host}" is already reached through link "${current.name}"`);
        else this.#forget(link);
        return;
      }
      void this.drop(current, 'replaced by a newer connection', true);
    }
    if (link.channel) void this.drop(link, 'replaced by a newer connection', false);
    link.channel = ch;
    link.peer = host;
    link.connects++;
    link.upSince = performance.now();
    link.peerRelays = ch.peer.relay;
    link.listen = ch.peer.listen;
    link.remoteHost = remoteHostOf(ch.remote);
    link.directPeers.clear();
    ctx.byPeer.set(host, link);
    const carried = this.#networks.begin(link, ch);
    if (ch.kind !== 'vxlan') this.#awaitNetworks(link, ch);
    this.#attach(link, ch);
    if (ch.kind === 'vxlan')
      this.#setState(link, 'up', `${ch.kind} to host "${host}" at ${ch.remote}, carrying ${carrying(carried)}`, true);
    this.#topology.linkUp(link);
  }

  /** A stream link is up once the peer's network list is here (#peerNetworks), within the deadline. */
  #awaitNetworks(link: Link, ch: LinkChannel): void {
    const ms = this.#ctx.o.networkListTimeoutMs ?? NETWORK_LIST_TIMEOUT_MS;
    this.#setState(
      link,
      'connecting',
      `connected to host "${ch.peer.host}" at ${ch.remote}; waiting for its network list`,
    );
    link.syncTimer = setTimeout(() => {
      if (link.channel === ch && link.peerNets?.offered === undefined)
        void this.drop(link, `protocol error: no network list within ${ms / 1000} s after the hello`, true);
    }, ms);
    link.syncTimer.unref();
  }

  /** Hands what arrives on `ch` to the link's ports and the overlay. */
  #attach(link: Link, ch: LinkChannel): void {
    const ports = link.ports;
    const topology = this.#topology;
    ch.attach({
      carries: (vni) => ports.has(vni),
      frame: (vni, buf, off, len, meta) => {
        const p = ports.get(vni);
        if (p === undefined) {
          (ch as { unknownVni?: (len: number) => void }).unknownVni?.(len);
          return;
        }
        topology.rxLink = link;
        p.sink(buf, off, len, meta);
        topology.rxLink = undefined;
      },
      control: (msg) => {
        if (msg.type === 'networks' || msg.type === 'networks-update') this.#peerNetworks(link, msg);
        else this.#control(link, msg);
      },
      closed: (reason) => {
        if (link.channel !== ch) return;
        void this.drop(link, reason, true);
      },
    });
  }

  /** The peer's network list or a change of it: the link is up at the first full list. */
  #peerNetworks(link: Link, msg: ControlMessage): void {
    const r = this.#networks.peerMessage(link, msg);
    const ch = link.channel;
    if (r.kind === 'pending' || !ch) return;
    if (r.kind === 'error') {
      void this.drop(link, `protocol error: ${r.reason}`, true);
      return;
    }
    const reason = `${ch.kind} to host "${link.peer}" at ${ch.remote}, carrying ${carrying(r.carried)}`;
    if (r.first) {
      this.#setState(link, 'up', reason, true);
      return;
    }
    link.reason = reason;
    this.#ctx.log.info(
      { link: link.name, networks: r.carried.length },
      `link "${link.name}" now carries ${carrying(r.carried)}`,
    );
  }

  /** Takes a link's channel down: its link ports go (their MACs are forgotten); dial links re-dial. */
  async drop(link: Link, reason: string, redial: boolean): Promise<void> {
    const ctx = this.#ctx;
    const ch = link.channel;
    if (!ch) return;
    link.channel = undefined;
    clearTimeout(link.syncTimer);
    if (link.state === 'up') {
      // Told now, before the close is awaited: a channel that comes back at once is seen going too.
      const gone = link.closed || ctx.stopped || !link.spec || link.source === 'direct';
      ctx.linkState(link, false, gone ? 'closed' : 'down', reason);
    }
    if (link.peer !== undefined && ctx.byPeer.get(link.peer) === link) ctx.byPeer.delete(link.peer);
    if (performance.now() - link.upSince >= stableMs(ctx.o.reconnect?.max_ms)) link.backoff.reset();
    link.accumulate(ch);
    const removing = this.#networks.end(link);
    if (!ctx.stopped) this.#topology.reportPeers(undefined);
    await Promise.all([ch.close(reason), ...removing]);
    // Closed, or a newer channel took the link over meanwhile: nothing more to do.
    if (link.closed || ctx.stopped || link.channel) return;
    ctx.log.warn({ link: link.name, reason }, `link "${link.name}" down: ${reason}`);
    link.failed(reason);
    if (!link.spec || link.source === 'direct') {
      if (link.source === 'direct')
        ctx.log.info({ link: link.name }, `direct link "${link.name}" closed; traffic goes through the relay again`);
      this.#forget(link);
      return;
    }
    this.#setState(link, 'down', reason);
    if (redial) this.#retry(link, reason);
    else this.dial(link);
  }

  #forget(link: Link): void {
    // A peer's or direct link is made anew when it comes back: its shaper goes with it (unless it still carries a channel).
    if (!link.channel) this.#shaping.release(link);
    if (this.#ctx.links.get(link.name) === link) this.#ctx.links.delete(link.name);
  }

  /** Closes a link for good (deleted, or the daemon stopping). */
  async close(link: Link, reason: string): Promise<void> {
    link.closed = true;
    this.#shaping.release(link);
    clearTimeout(link.timer);
    link.abort?.abort();
    await this.drop(link, reason, false);
    link.state = 'closed';
  }

  #setState(link: Link, state: LinkState, reason: string, force = false): void {
    const changed = link.state !== state || force;
    link.state = state;
    link.reason = reason;
    if (changed) this.#ctx.log.info({ link: link.name, state, reason }, `link "${link.name}" ${state}: ${reason}`);
    if (state === 'up') this.#ctx.linkState(link, true, state, reason);
  }
}
