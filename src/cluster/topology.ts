/**
 * The links a host of the fabric makes (docs/overlay.md "Links made by the
 * fabric"), computed from the host records and the alive records alone, so
 * every host computes its side of the same topology without a message:
 *
 * - every pair of alive hosts that share a network (have local ports on one)
 *   gets exactly one link: when both are reachable the lower id dials the
 *   higher; when one is, the other (which only dials out) dials it;
 * - two dial-out hosts cannot link: they meet through the **hub**, the
 *   alive, reachable relay host with the lowest id. Every dial-out host with
 *   a local port links to the hub (so a dial-out host going down or coming
 *   changes no other host's links), and the hub relays between exactly those
 *   hosts, never between hosts that are linked directly;
 * - a dial-out peer with no hub alive is not reachable: the plan says why.
 *
 * Pure: no I/O, no clock, and the same answer whatever the order of its input.
 */
import { parseAddress } from '../util/address.js';

/** A host's record (`members/<host>`), as far as links are concerned. */
export interface MemberRecord {
  id: string;
  /** Where the host listens for links, `tcp:IP:PORT`; null when it does not listen. */
  overlay: string | null;
  /** Other hosts can dial `overlay` (false: the host only dials out). */
  reachable: boolean;
  /** The host relays between its links (`overlay.relay: true`): it may be the hub. */
  relay: boolean;
}

/** A host's alive record (`alive/<host>`), as far as links are concerned. */
export interface AliveRecord {
  /** Networks the host has local ports on. */
  networks: string[];
}

/** A link this host dials. Its name is the peer's host id (host ids and link names have the same form). */
export interface PlannedLink {
  name: string;
  peer: string;
  /** The peer's link listener, `tcp:IP:PORT`. */
  connect: string;
}

/** What {@link planLinks} decides for one host. */
export interface LinkPlan {
  /** Links this host dials, by name. */
  links: PlannedLink[];
  /** Every host this host is linked with, dialled or dialling in, sorted. */
  peers: string[];
  /** The hub this host reaches its dial-out peers through, when it only dials out and one is alive. */
  hub: string | undefined;
  /** Dial-out hosts this host (itself dial-out) shares a network with, reached through the hub, sorted. */
  viaHub: string[];
  /** When this host is the hub: the dial-out hosts it relays between, sorted; else empty. */
  relayFor: string[];
  /** Every other host of the fabric (alive or not), sorted: links to them follow the fabric's relay rule. */
  hosts: string[];
  /** Hosts sharing a network with this host that it cannot reach, with why. */
  unreachable: { host: string; reason: string }[];
}

const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

interface Host {
  id: string;
  /** The listener to dial when the host is reachable. */
  connect: string | undefined;
  relay: boolean;
  networks: Set<string>;
}

function sharesNetwork(a: Host, b: Host): boolean {
  const [small, big] = a.networks.size <= b.networks.size ? [a, b] : [b, a];
  for (const n of small.networks) if (big.networks.has(n)) return true;
  return false;
}

/** The canonical `tcp:HOST:PORT` of a record's listener, or undefined when it has none that parses. */
function listenerOf(m: MemberRecord): string | undefined {
  if (!m.reachable || typeof m.overlay !== 'string') return undefined;
  const a = parseAddress(m.overlay, ['tcp']);
  return typeof a === 'string' ? undefined : m.overlay;
}

/**
 * The links `self` makes. `members` are every host record (records that are
 * not valid or repeat an id are skipped: the first counts); `alive` holds the
 * hosts that are up. `self` counts as up with its own alive record, or with
 * no networks without one: pass this host's own record when its lease is
 * being renewed, so a late alive key does not tear its links down.
 */
export function planLinks(
  self: string,
  members: readonly MemberRecord[],
  alive: ReadonlyMap<string, AliveRecord>,
): LinkPlan {
  const hosts = new Map<string, Host>();
  const all = new Set<string>();
  for (const m of members) {
    if (typeof m?.id !== 'string' || !HOST_RE.test(m.id) || all.has(m.id)) continue;
    all.add(m.id);
    const up = alive.get(m.id);
    if (up === undefined && m.id !== self) continue;
    const networks = new Set(Array.isArray(up?.networks) ? up.networks.filter((n) => typeof n === 'string') : []);
    hosts.set(m.id, { id: m.id, connect: listenerOf(m), relay: m.relay === true, networks });
  }
  all.delete(self);
  const plan: LinkPlan = {
    links: [],
    peers: [],
    hub: undefined,
    viaHub: [],
    relayFor: [],
    hosts: [...all].sort(),
    unreachable: [],
  };
  const me = hosts.get(self);
  if (me === undefined) return plan;
  const sorted = [...hosts.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const hub = sorted.find((h) => h.relay && h.connect !== undefined);
  /** A dial-out host with a local port attaches to the hub. */
  const attaches = (h: Host) => h.connect === undefined && h.networks.size > 0 && hub !== undefined;
  const dial = (p: Host) => plan.links.push({ name: p.id, peer: p.id, connect: p.connect as string });
  const peers = new Set<string>();
  for (const p of sorted) {
    if (p === me || !sharesNetwork(me, p)) continue;
    if (me.connect !== undefined && p.connect !== undefined) {
      peers.add(p.id);
      if (me.id < p.id) dial(p);
    } else if (p.connect !== undefined) {
      peers.add(p.id);
      dial(p);
    } else if (me.connect !== undefined) {
      peers.add(p.id);
    } else if (hub !== undefined) {
      plan.viaHub.push(p.id);
    } else {
      plan.unreachable.push({
        host: p.id,
        reason: `both this host and "${p.id}" only dial out, and no relay hub is up (a reachable host with overlay.relay: true)`,
      });
    }
  }
  if (hub !== undefined && attaches(me)) {
    plan.hub = hub.id;
    if (!peers.has(hub.id)) dial(hub);
    peers.add(hub.id);
  }
  if (hub === me) {
    for (const h of sorted) {
      if (h === me || !attaches(h)) continue;
      plan.relayFor.push(h.id);
      peers.add(h.id);
    }
  }
  plan.links.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  plan.peers = [...peers].sort();
  return plan;
}
