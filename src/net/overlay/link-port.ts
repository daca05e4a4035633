/**
 * The switch's side of one (link, network) pair: a {@link Port} whose write
 * hands the frame to the link's channel tagged with the network's VNI.
 * Created when a channel comes up, removed when it goes down.
 */
import type { OffloadMeta } from '../offload/vnet-hdr.js';
import type { Port, PortState } from '../port.js';
import { WriteResult } from '../port.js';
import type { LinkChannel } from './transport.js';

export class LinkPort implements Port {
  readonly kind = 'link';
  #state: PortState = 'up';

  /**
   * @param relayed on a relaying host: called for every frame written while
   *   a frame from another link is being switched (a relayed frame); false
   *   drops it (the two hosts have a direct link). Undefined elsewhere.
   */
  constructor(
    readonly name: string,
    readonly vni: number,
    readonly channel: LinkChannel,
    readonly relayed?: ((len: number) => boolean) | undefined,
  ) {}

  get state(): PortState {
    return this.#state;
  }

  /** Large segments and partial checksums cross the link whole when the channel takes them (TCP/TLS with a peer that does). */
  get offloads(): boolean {
    return this.channel.offloads === true;
  }

  get queued(): number {
    return 0;
  }

  async open(): Promise<void> {}

  write(buf: Buffer, off: number, len: number, meta?: OffloadMeta): WriteResult {
    if (this.#state !== 'up') return WriteResult.DOWN;
    if (this.relayed !== undefined && !this.relayed(len)) return WriteResult.OK;
    return meta === undefined
      ? this.channel.send(this.vni, buf, off, len)
      : this.channel.send(this.vni, buf, off, len, meta);
  }

  describe(): Record<string, unknown> {
    return { vni: this.vni, remote: this.channel.remote, peer: this.channel.peer.host };
  }

  async close(): Promise<void> {
    this.#state = 'closed';
  }

  async destroy(): Promise<void> {
    this.#state = 'closed';
  }
}
