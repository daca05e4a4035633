/**
 * Remote backend: another NBD server is the backing store, reached through
 * one {@link NbdClient} connection. Every export connection of ours shares
 * that one connection, so a FLUSH sent on it covers every write we forwarded:
 * CAN_MULTI_CONN holds regardless of the remote's own flag.
 *
 * When the connection is lost, the next request re-dials (a few attempts
 * with backoff) and idempotent requests (all but FLUSH) are retried once on
 * the new connection. Writes acknowledged on the lost connection but not yet
 * flushed may be gone, so the next FLUSH fails with EIO once: durability is
 * never claimed for data that might not be there.
 */
import type { Address } from '../../util/address.js';
import { type BlockBackend, checkRange, checkWritable, type Extent, type ZeroOptions } from '../backend.js';
import { BackendError, NotFastError } from '../errors.js';
import { NbdClient } from '../nbd/client.js';
import { CMD_FLAG, NBD_ERR, TF } from '../nbd/constants.js';

export interface RemoteBackendOptions {
  /** The remote NBD server. */
  address: Address;
  /** Export name on the remote; default ''. */
  export?: string;
  /** Serve read-only even if the remote is writable; default false. */
  readOnly?: boolean;
  /** Re-dial attempts after a lost connection, 100 ms apart doubling; default 5. */
  reconnectAttempts?: number;
}

export class RemoteBackend implements BlockBackend {
  readonly kind = 'remote';
  readonly size: number;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  readonly cheapExtents = false;
  #o: RemoteBackendOptions;
  #c: NbdClient;
  #redial: Promise<NbdClient> | undefined;
  /** Writes acknowledged so far, and how many of them the last successful flush covered. */
  #written = 0;
  #flushed = 0;
  /** A connection with unflushed acknowledged writes was lost: the next flush must fail. */
  #lostWrites = false;
  #closed = false;

  private constructor(o: RemoteBackendOptions, c: NbdClient) {
    this.#o = o;
    this.#c = c;
    this.size = c.size;
    this.readOnly = (o.readOnly ?? false) || c.readOnly;
  }

  /** Connects to the remote export. Rejects with ERR_NBD_CLIENT naming the address on failure. */
  static async connect(o: RemoteBackendOptions): Promise<RemoteBackend> {
    return new RemoteBackend(o, await NbdClient.connect({ address: o.address, export: o.export ?? '' }));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange('read', offset, length, this.size);
    if (length === 0) return Buffer.alloc(0);
    return this.#retry((c) => c.read(offset, length));
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    checkWritable(this, 'write', offset, data.length);
    await this.#retry((c) => c.write(offset, data, fua && c.can(TF.SEND_FUA) ? CMD_FLAG.FUA : 0));
    this.#written++;
    if (fua && !this.#c.can(TF.SEND_FUA)) await this.flush();
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    checkWritable(this, 'write zeroes', offset, length);
    const c0 = this.#c;
    if (!c0.can(TF.SEND_WRITE_ZEROES)) {
      if (opts.fastZero) throw new NotFastError();
      for (let p = 0; p < length; p += 1 << 20)
        await this.write(offset + p, Buffer.alloc(Math.min(1 << 20, length - p)), false);
    } else {
      if (opts.fastZero && !c0.can(TF.SEND_FAST_ZERO)) throw new NotFastError();
      let flags = opts.noHole ? CMD_FLAG.NO_HOLE : 0;
      if (opts.fastZero) flags |= CMD_FLAG.FAST_ZERO;
      if (opts.fua && c0.can(TF.SEND_FUA)) flags |= CMD_FLAG.FUA;
      await this.#retry((c) => c.writeZeroes(offset, length, flags));
      this.#written++;
    }
    if (opts.fua && !c0.can(TF.SEND_FUA)) await this.flush();
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    checkWritable(this, 'trim', offset, length);
    if (!this.#c.can(TF.SEND_TRIM) || length === 0) return;
    await this.#retry((c) => c.trim(offset, length, fua && c.can(TF.SEND_FUA) ? CMD_FLAG.FUA : 0));
  }

  async flush(): Promise<void> {
    const c = await this.#live();
    if (this.#lostWrites) {
      this.#lostWrites = false;
      throw new BackendError(
        'ERR_NBD_REMOTE_LOST',
        NBD_ERR.EIO,
        `the connection to ${this.#where()} was lost with unflushed writes; they may not have reached the remote`,
      );
    }
    const covers = this.#written;
    if (c.can(TF.SEND_FLUSH)) await c.flush();
    if (covers > this.#flushed) this.#flushed = covers;
  }

  async cache(offset: number, length: number): Promise<void> {
    checkRange('cache', offset, length, this.size);
    if (!this.#c.can(TF.SEND_CACHE) || length === 0) return;
    await this.#retry((c) => c.cache(offset, length));
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange('block status', offset, length, this.size);
    if (this.#c.metaContextId === undefined || length === 0) return [{ length, flags: 0 }];
    const ext = await this.#retry((c) => c.blockStatus(offset, length));
    // The last extent may reach past the request (proto.md); clip it.
    const out: Extent[] = [];
    let left = length;
    for (const e of ext) {
      if (left === 0) break;
      if (!(e.length > 0)) continue; // a peer's zero-length descriptor carries nothing
      const n = Math.min(e.length, left);
      out.push({ length: n, flags: e.flags });
      left -= n;
    }
    return out.length ? out : [{ length, flags: 0 }];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#c.closed) return;
    await this.flush().catch(() => {});
    await this.#c.disconnect();
  }

  /** Runs `op` on a live connection; after a lost connection, re-dials and runs it once more. */
  async #retry<T>(op: (c: NbdClient) => Promise<T>): Promise<T> {
    const c = await this.#live();
    try {
      return await op(c);
    } catch (err) {
      if (!c.closed || this.#closed) throw err;
      return op(await this.#live());
    }
  }

  /** The current connection, re-dialled if it was lost. */
  async #live(): Promise<NbdClient> {
    if (!this.#c.closed) return this.#c;
    if (this.#closed) return this.#c;
    if (this.#written > this.#flushed) {
      this.#lostWrites = true;
      this.#flushed = this.#written;
    }
    this.#redial ??= this.#dial().finally(() => {
      this.#redial = undefined;
    });
    return this.#redial;
  }

  async #dial(): Promise<NbdClient> {
    const attempts = this.#o.reconnectAttempts ?? 5;
    let delay = 100;
    for (let i = 0; ; i++) {
      try {
        const c = await NbdClient.connect({ address: this.#o.address, export: this.#o.export ?? '' });
        if (c.size !== this.size) {
          c.destroy();
          throw new BackendError(
            'ERR_NBD_REMOTE_CHANGED',
            NBD_ERR.EIO,
            `remote export at ${this.#where()} came back with size ${c.size}, expected ${this.size}`,
          );
        }
        this.#c = c;
        return c;
      } catch (err) {
        if (i + 1 >= attempts || (err as { code?: string }).code === 'ERR_NBD_REMOTE_CHANGED') throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay *= 2;
      }
    }
  }

  #where(): string {
    const a = this.#o.address;
    return a.type === 'unix' ? `unix:${a.path}` : `${a.host}:${a.port}`;
  }
}
