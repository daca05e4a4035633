/**
 * Links made by the fabric (docs/overlay.md "Links made by the fabric"):
 * the cluster computes which hosts this host dials (src/cluster/topology.ts)
 * and hands the plan here. This part adds and removes only its own links
 * (source `cluster`), never a hand link, and tells the relay topology
 * which hosts are the fabric's and which of them this host relays between
 * as their hub (relay-topology.ts).
 */
import type { Link, LinkSpec } from './link.js';
import type { OverlayContext } from './overlay-context.js';
import type { RelayTopology } from './relay-topology.js';
import type { TransportAddress } from './transport.js';

/** One host's part of the fabric's links (see src/cluster/topology.ts LinkPlan). */
export interface FabricPlan {
  /** Links this host dials; a link's name is its peer's host id. */
  links: { name: string; peer: string; connect: TransportAddress }[];
  /** Every other host of the fabric. */
  hosts: readonly string[];
  /** The hub this host reaches {@link viaHub} through. */
  hub: string | undefined;
  /** Dial-out hosts reached through the hub. */
  viaHub: readonly string[];
  /** On the hub: the dial-out hosts it relays between. */
  relayFor: readonly string[];
}

/** A planned link that could not be made, with why. */
export interface FabricConflict {
  host: string;
  reason: string;
}

export class FabricLinks {
  readonly #ctx: OverlayContext;
  readonly #topology: RelayTopology;
  readonly #add: (spec: LinkSpec) => void;
  readonly #close: (link: Link, reason: string) => Promise<void>;
  #plan: FabricPlan | undefined;
  /** Planned links whose name a link the peer dialled in holds: made once it goes (retried each second). */
  #waiting = 0;
  #applying: Promise<FabricConflict[]> = Promise.resolve([]);
  #busy = false;

  constructor(
    ctx: OverlayContext,
    topology: RelayTopology,
    ops: { add(spec: LinkSpec): void; close(link: Link, reason: string): Promise<void> },
  ) {
    this.#ctx = ctx;
    this.#topology = topology;
    this.#add = ops.add;
    this.#close = ops.close;
  }

  get plan(): FabricPlan | undefined {
    return this.#plan;
  }

  /**
   * Makes the fabric's links match `plan`: dials the new ones, closes those
   * no longer planned (or planned to another address). Resolves, once done,
   * with the planned links a hand link's name kept from being made.
   */
  set(plan: FabricPlan): Promise<FabricConflict[]> {
    this.#plan = plan;
    this.#topology.fabricHosts = new Set(plan.hosts);
    this.#topology.fabricRelayFor = new Set(plan.relayFor);
    return this.#queue();
  }

  /** Once a second: makes planned links whose name a peer's accepted link held, once it is gone. */
  retry(): void {
    if (this.#waiting > 0 && !this.#busy) void this.#queue();
  }

  #queue(): Promise<FabricConflict[]> {
    this.#applying = this.#applying.then(
      () => this.#apply(),
      () => this.#apply(),
    );
    return this.#applying;
  }

  async #apply(): Promise<FabricConflict[]> {
    const ctx = this.#ctx;
    const plan = this.#plan;
    if (ctx.stopped || !plan) return [];
    this.#busy = true;
    try {
      const want = new Map(plan.links.map((l) => [l.name, l]));
      const closing: Promise<void>[] = [];
      for (const link of [...ctx.links.values()]) {
        if (link.source !== 'cluster') continue;
        const w = want.get(link.name);
        const c = link.spec?.connect;
        if (w && c && w.connect.host === c.host && w.connect.port === c.port) continue;
        ctx.links.delete(link.name);
        const why = w ? `host "${w.peer}" now listens at another address` : 'the fabric no longer links to this host';
        ctx.log.info({ link: link.name }, `fabric link "${link.name}" closed: ${why}`);
        closing.push(this.#close(link, why));
      }
      await Promise.all(closing);
      const conflicts: FabricConflict[] = [];
      this.#waiting = 0;
      if (ctx.stopped || this.#plan !== plan) return conflicts;
      for (const w of want.values()) {
        const held = ctx.links.get(w.name);
        if (held?.source === 'cluster') continue;
        if (held?.source === 'peer') {
          // The peer still dials this host (its plan has not caught up): that link carries the traffic meanwhile.
          this.#waiting++;
          continue;
        }
        if (held && held.peer !== w.peer) {
          conflicts.push({
            host: w.peer,
            reason: `the ${held.source} link "${w.name}" holds the name the fabric gives its link to host "${w.peer}": delete that link, or give it another name`,
          });
          continue;
        }
        // A hand link of that name to that very host serves as the fabric's link.
        if (held) continue;
        ctx.log.info({ link: w.name, connect: w.connect }, `fabric link to host "${w.peer}" added`);
        this.#add({ name: w.name, connect: w.connect });
      }
      return conflicts;
    } finally {
      this.#busy = false;
    }
  }
}
