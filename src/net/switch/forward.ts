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

  /**
   * Where a unicast frame from `from` to the port with id `dst` goes: that
   * port, or undefined when it is filtered (the destination is behind the
   * port it came from, or gone) or blocked by split horizon ({@link blocked}
   * then says so). Depends on the ports only, so a batch reuses it for every
   * frame to the same MAC; {@link unicast} sends (or counts) each frame.
   */
  resolve(from: SwitchPort, dst: number): SwitchPort | undefined {
    this.blocked = false;
    if (dst === from.id) return undefined;
    const out = this.byId[dst];
    if (out === undefined) return undefined;
    if ((from.blocked >> out.horizon) & 1) {
      this.blocked = true;
      return undefined;
    }
    return out;
  }

  /** After {@link resolve}: the frame was refused by split horizon. */
  blocked = false;

  /** A frame from `from` to `out` (from {@link resolve}; undefined: filtered, or `blocked` by split horizon and counted). */
  unicast(
    from: SwitchPort,
    out: SwitchPort | undefined,
    blocked: boolean,
    net: Network,
    buf: Buffer,
    off: number,
    len: number,
    meta: OffloadMeta | undefined,
  ): void {
    if (out !== undefined) this.egress.output(out, out.vidOf(net), buf, off, len, meta);
    else if (blocked) from.counters.split_horizon++;
  }
}
