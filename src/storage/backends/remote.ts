/**
 * Remote backend: another NBD server is the backing store, reached through
 * one {@link NbdClient} connection. Every export connection of ours shares
 * that one connection, so a FLUSH sent on it covers every write we forwarded:
 * CAN_MULTI_CONN holds regardless of the remote's own flag.
 */
import type { Address } from '../../config/address.js';
import { type BlockBackend, checkRange, checkWritable, type Extent, type ZeroOptions } from '../backend.js';
import { NotFastError } from '../errors.js';
import { NbdClient } from '../nbd/client.js';
import { CMD_FLAG, TF } from '../nbd/constants.js';

export interface RemoteBackendOptions {
  /** The remote NBD server. */
  address: Address;
  /** Export name on the remote; default ''. */
  export?: string;
  /** Serve read-only even if the remote is writable; default false. */
  readOnly?: boolean;
}

export class RemoteBackend implements BlockBackend {
  readonly kind = 'remote';
  readonly size: number;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  readonly cheapExtents = false;
  #c: NbdClient;

  private constructor(c: NbdClient, readOnly: boolean) {
    this.#c = c;
    this.size = c.size;
    this.readOnly = readOnly || c.readOnly;
  }

  /** Connects to the remote export. Rejects with ERR_NBD_CLIENT naming the address on failure. */
  static async connect(o: RemoteBackendOptions): Promise<RemoteBackend> {
    const c = await NbdClient.connect({ address: o.address, export: o.export ?? '' });
    return new RemoteBackend(c, o.readOnly ?? false);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange('read', offset, length, this.size);
    return length === 0 ? Buffer.alloc(0) : this.#c.read(offset, length);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    checkWritable(this, 'write', offset, data.length);
    await this.#c.write(offset, data, fua && this.#c.can(TF.SEND_FUA) ? CMD_FLAG.FUA : 0);
    if (fua && !this.#c.can(TF.SEND_FUA)) await this.flush();
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    checkWritable(this, 'write zeroes', offset, length);
    if (!this.#c.can(TF.SEND_WRITE_ZEROES)) {
      if (opts.fastZero) throw new NotFastError();
      for (let p = 0; p < length; p += 1 << 20)
        await this.write(offset + p, Buffer.alloc(Math.min(1 << 20, length - p)), false);
    } else {
      if (opts.fastZero && !this.#c.can(TF.SEND_FAST_ZERO)) throw new NotFastError();
      let flags = opts.noHole ? CMD_FLAG.NO_HOLE : 0;
      if (opts.fastZero) flags |= CMD_FLAG.FAST_ZERO;
      if (opts.fua && this.#c.can(TF.SEND_FUA)) flags |= CMD_FLAG.FUA;
      await this.#c.writeZeroes(offset, length, flags);
    }
    if (opts.fua && !this.#c.can(TF.SEND_FUA)) await this.flush();
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    checkWritable(this, 'trim', offset, length);
    if (!this.#c.can(TF.SEND_TRIM) || length === 0) return;
    await this.#c.trim(offset, length, fua && this.#c.can(TF.SEND_FUA) ? CMD_FLAG.FUA : 0);
  }

  async flush(): Promise<void> {
    if (this.#c.can(TF.SEND_FLUSH)) await this.#c.flush();
  }

  async cache(offset: number, length: number): Promise<void> {
    checkRange('cache', offset, length, this.size);
    if (this.#c.can(TF.SEND_CACHE) && length > 0) await this.#c.cache(offset, length);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange('block status', offset, length, this.size);
    if (this.#c.metaContextId === undefined || length === 0) return [{ length, flags: 0 }];
    const ext = await this.#c.blockStatus(offset, length);
    // The last extent may reach past the request (proto.md); clip it.
    const out: Extent[] = [];
    let left = length;
    for (const e of ext) {
      if (left === 0) break;
      const n = Math.min(e.length, left);
      out.push({ length: n, flags: e.flags });
      left -= n;
    }
    return out.length ? out : [{ length, flags: 0 }];
  }

  async close(): Promise<void> {
    await this.flush().catch(() => {});
    await this.#c.disconnect();
  }
}
