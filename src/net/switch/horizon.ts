/**
 * Split-horizon groups and flood lists, decided when ports, links or
 * networks change, never per frame (Snabb's bridge turns its groups into a
 * destination list per source at configuration time).
 *
 * Every port is in one group: local ports (VMs, TAPs, ...), overlay `link`
 * ports, and a hub's `relay` ports. A frame that came from a link never
 * leaves through another link (each host reaches every other host directly,
 * so a second hop would duplicate it), except hub to hub: between two relay
 * ports it passes. Nothing is blocked to or from a local port.
 */
/** Group of a local port (not an overlay link). */
export const HORIZON_LOCAL = 0;
/** Group of an overlay link port. */
export const HORIZON_LINK = 1;
/** Group of a hub's relay link port. */
export const HORIZON_RELAY = 2;
const GROUPS = 3;

/** Bit `g` of entry `f`: a frame from group `f` never goes to group `g`. */
const BLOCKED = [0, (1 << HORIZON_LINK) | (1 << HORIZON_RELAY), 1 << HORIZON_LINK];

/** The group of a port bound with `link` (see PortBinding.link). */
export function horizonOf(link: 'link' | 'relay' | undefined): number {
  return link === 'relay' ? HORIZON_RELAY : link === 'link' ? HORIZON_LINK : HORIZON_LOCAL;
}

/** The groups a port of group `g` never sends to, as a bit mask (see {@link BLOCKED}). */
export function blockedGroups(g: number): number {
  return BLOCKED[g] ?? 0;
}

/** True when a frame from a port of group `from` may go to a port of group `to`. */
export function horizonPasses(from: number, to: number): boolean {
  return ((blockedGroups(from) >> to) & 1) === 0;
}

/**
 * The flood list of every group: entry `g` holds the members a frame from a
 * port of group `g` may be flooded to, in membership order (the source port
 * itself is still in it; the flood loop skips it by identity).
 */
export function floodLists<M extends { sp: { readonly horizon: number } }>(members: readonly M[]): M[][] {
  const lists: M[][] = [];
  for (let g = 0; g < GROUPS; g++) lists.push(members.filter((m) => horizonPasses(g, m.sp.horizon)));
  return lists;
}
