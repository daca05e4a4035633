/**
 * A network as the switch sees it: its spec, its FDB, its member ports and
 * the flood lists of its split-horizon groups, worked out whenever a member
 * joins or leaves (not per frame).
 */
import { Fdb } from './fdb.js';
import { floodLists } from './horizon.js';
import type { SwitchPort } from './switch-port.js';

/** A member of a network: a port and the VLAN id it tags that network's frames with (0: untagged). */
export interface Member {
  sp: SwitchPort;
  vid: number;
}

/** A network as the switch sees it. */
export interface NetworkSpec {
  /** Unique name. */
  name: string;
  /** 24-bit VXLAN network identifier, unique per fabric. */
  vni: number;
  /** Largest Ethernet payload in bytes (frame minus 14-byte header and tags). */
  mtu: number;
}

/** A network and what a listing shows of it. */
export type NetworkInfo = NetworkSpec & { ports: string[]; macs: number };

export class Network {
  readonly fdb: Fdb;
  /** Member ports and the VLAN id to tag with on egress (0: untagged). */
  members: Member[] = [];
  /**
   * Index: a source port's split-horizon group. The members a frame from a
   * port of that group floods to (the source port itself is skipped by the
   * flood loop). Rebuilt by {@link join} and {@link leave}.
   */
  flood: Member[][] = floodLists<Member>([]);
  /** ARP suppression (arp-proxy.ts): guest IPv4 address (as int32) -> MAC; undefined when it has none. */
  arp: Map<number, number> | undefined;

  constructor(
    readonly spec: NetworkSpec,
    maxMacs: number,
  ) {
    this.fdb = new Fdb(maxMacs);
  }

  /** Adds a member port, tagging with `vid` on egress (0: untagged), and recomputes the flood lists. */
  join(sp: SwitchPort, vid: number): void {
    this.members.push({ sp, vid });
    this.flood = floodLists(this.members);
  }

  /** Removes every membership of `sp` and recomputes the flood lists. */
  leave(sp: SwitchPort): void {
    this.members = this.members.filter((m) => m.sp !== sp);
    this.flood = floodLists(this.members);
  }

  info(): NetworkInfo {
    return { ...this.spec, ports: [...new Set(this.members.map((m) => m.sp.name))], macs: this.fdb.size };
  }
}
