/**
 * Capture: hands a port's frames to its taps (`vmlink capture`). A frame with
 * offload metadata is shown as the frames it stands for (cut and checksummed
 * by a segmenter of capture's own, so a tap never disturbs the egress's in
 * the middle of a frame).
 */
import { VLAN_HLEN } from '../frame/vlan.js';
import { Segmenter } from '../offload/segmenter.js';
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import { MAX_FRAME_LEN } from '../port.js';
import type { SwitchPort } from './switch-port.js';

export class Capture {
  readonly #seg = new Segmenter(MAX_FRAME_LEN + VLAN_HLEN);

  /** Feeds the taps of `sp` (the caller checked it has some). */
  frames(sp: SwitchPort, buf: Buffer, off: number, len: number, meta: OffloadMeta | undefined, dir: 'rx' | 'tx'): void {
    const taps = sp.taps;
    if (meta === undefined) {
      for (const t of taps) t.frame(buf, off, len, dir);
      return;
    }
    const seg = this.#seg;
    if (!seg.start(buf, off, len, meta)) return;
    for (let l = seg.next(); l > 0; l = seg.next()) for (const t of taps) t.frame(seg.out, 0, l, dir);
  }
}
