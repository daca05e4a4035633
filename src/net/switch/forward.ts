/**
 * Forward or flood, the third stage: a unicast frame to its one port (unless
 * split horizon forbids it), a frame to a group or unknown MAC to the flood
 * list of its source's split-horizon group (horizon.ts, worked out when
 * membership changes). Only transmits: no role checks per frame.
 */
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { Egress } from './egress.js';
import type { Member, Network } from './network.js';
import type { SwitchPort } from './switch-port.js';

export class Forward {
  constructor(
    readonly byId: readonly (SwitchPort | undefined)[],
    readonly egress: Egress,
  ) {}

  /** A frame from `from` to every member of `net` its group floods to, but `from`. */
  flood(from: SwitchPort, net: Network, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined): void {
    const list = net.flood[from.horizon] as Member[];
    for (let i = 0; i < list.length; i++) {
      const m = list[i] as Member;
      if (m.sp !== from) this.egress.output(m.sp, m.vid, buf, off, len, meta);
    }
  }

  /** A frame from `from` to the port with id `dst` in `net`. */
  unicast(
    from: SwitchPort,
    dst: number,
    net: Network,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
  ): void {
    if (dst === from.id) return; // the destination is behind the port it came from: filter
    const out = this.byId[dst];
    if (out === undefined) return;
    if ((from.blocked >> out.horizon) & 1) {
      from.counters.split_horizon++;
      return;
    }
    this.egress.output(out, out.vidOf(net), buf, off, len, meta);
  }
}
