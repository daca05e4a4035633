/**
 * What the parts of the overlay share (overlay.ts composes them): the
 * options, every link by name, the link whose channel is up to each peer
 * host, and whether the overlay is stopping. Each part keeps its own state
 * apart: life cycle (link-lifecycle.ts), the networks a link carries
 * (link-networks.ts), shared shaping (link-shaping.ts) and the relay
 * topology (relay-topology.ts).
 */
import type { Logger } from '../../log.js';
import { Backoff } from '../../util/backoff.js';
import type { Switch } from '../switch/switch.js';
import type { Link, LinkSpec, LinkState } from './link.js';
import type { LinkQosPolicy } from './link-qos.js';
import type { LinkTransport } from './transport.js';

export interface OverlayOptions {
  logger: Logger;
  switch: Switch;
  /** This host's id. */
  hostId: string;
  /** This host relays between its links (a hub). */
  relay: boolean;
  transport: LinkTransport;
  /** More transports, chosen per link by {@link LinkSpec.transport} (e.g. VXLAN). */
  transports?: LinkTransport[] | undefined;
  /** Re-dial delays, ms. */
  reconnect?: { min_ms: number; max_ms: number } | undefined;
  /** Random source for backoff jitter (tests). */
  random?: () => number;
  /**
   * On a relaying host: spoke-to-spoke traffic (bits per second over a
   * second) above which the two spokes are asked to open a direct link.
   * 0 or undefined: never.
   */
  directThresholdBps?: number | undefined;
  /** QoS of the links accepted from these peer hosts (by host id), applied whenever they dial in. */
  peerQos?: ReadonlyMap<string, LinkQosPolicy> | undefined;
  /**
   * Time a TCP/TLS peer has to send its whole network list after the hello,
   * ms; a link whose peer is late is closed as a protocol error. Default
   * 30000 (docs/overlay.md "Network sync").
   */
  networkListTimeoutMs?: number | undefined;
}

/** Default of {@link OverlayOptions.networkListTimeoutMs}, ms. */
export const NETWORK_LIST_TIMEOUT_MS = 30_000;

export class OverlayContext {
  readonly o: OverlayOptions;
  readonly log: Logger;
  readonly sw: Switch;
  /** Every link by name: dialled, accepted and direct ones. */
  readonly links = new Map<string, Link>();
  /** Peer host id -> the link whose channel is up to it. */
  readonly byPeer = new Map<string, Link>();
  /** Told the peer host whose link ports were added or removed (Overlay.onPortsChanged). */
  readonly portWatchers = new Set<(host: string) => void>();
  /** Told when a link comes up or its channel goes (Overlay.onLinkState). */
  readonly stateWatchers = new Set<(link: Link, up: boolean, state: LinkState, reason: string) => void>();
  stopped = false;

  constructor(opts: OverlayOptions) {
    this.o = opts;
    this.log = opts.logger;
    this.sw = opts.switch;
  }

  /** The transport a dialled link uses (its spec's kind, else the main one); the main one for accepted links. */
  transportOf(spec: LinkSpec | undefined): LinkTransport {
    const main = this.o.transport;
    if (spec?.transport === undefined || spec.transport === main.kind) return main;
    return this.o.transports?.find((t) => t.kind === spec.transport) ?? main;
  }

  /** Tells the watchers that the link ports toward `host` changed; a watcher that throws is logged. */
  portsChanged(host: string | undefined): void {
    if (host === undefined) return;
    for (const fn of this.portWatchers) {
      try {
        fn(host);
      } catch (err) {
        this.log.error({ err, host }, 'a watcher of link ports failed');
      }
    }
  }

  /** Tells the state watchers that `link` came up (`up`) or lost its channel; a watcher that throws is logged. */
  linkState(link: Link, up: boolean, state: LinkState, reason: string): void {
    for (const fn of this.stateWatchers) {
      try {
        fn(link, up, state, reason);
      } catch (err) {
        this.log.error({ err, link: link.name }, 'a watcher of link states failed');
      }
    }
  }

  /** A re-dial backoff with the configured delays. */
  backoff(): Backoff {
    const r = this.o.reconnect;
    return new Backoff(r?.min_ms ?? 100, r?.max_ms ?? 5000, this.o.random);
  }
}
