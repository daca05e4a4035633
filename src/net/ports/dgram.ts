/**
 * The `dgram` port kind: QEMU's `-netdev dgram` over UDP (QEMU net/dgram.c;
 * over unix datagram sockets see unix-dgram.ts):
 * one Ethernet frame per datagram, no length prefix. vmlink binds `local`
 * and sends to `remote`; the VM's netdev has them the other way round.
 *
 * Datagrams from any source other than `remote` are dropped and counted
 * (ctx.onMalformed): a VM's port must not take frames from strangers.
 *
 * Egress: write() copies the frame into a pending batch, flushed once per
 * event-loop turn. Node's dgram has no sendmmsg, so a flush is one send per
 * datagram (the native addon will batch later). The queue bound counts
 * frames pending plus sends not yet completed.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { type Address, formatAddress } from '../../config/address.js';
import type { PortConfig } from '../../config/schema.js';
import { describeError } from '../../errors.js';
import { PortAddressError } from '../errors.js';
import type { Port, PortContext, PortState } from './port.js';
import { WriteResult } from './port.js';
import { UnixDgramPort, type UnixDgramSpec } from './unix-dgram.js';

type DgramSpec = Extract<PortConfig, { kind: 'dgram' }>;
type UdpAddress = Extract<Address, { type: 'udp' }>;
/** A dgram spec over UDP (the unix variant lives in unix-dgram.ts). */
type UdpSpec = Omit<DgramSpec, 'local' | 'remote'> & { local: UdpAddress; remote: UdpAddress };

const BATCH_BYTES = 256 * 1024;
const CLOSE_GRACE_MS = 2000;

/** RFC 5952 text of an IPv6 address (what Node reports as a datagram's source). */
function canonicalIpv6(host: string): string {
  return new URL(`http://[${host}]/`).hostname.slice(1, -1);
}

export class DgramPort implements Port {
  readonly name: string;
  readonly kind = 'dgram';
  readonly #spec: UdpSpec;
  readonly #ctx: PortContext;
  #state: PortState = 'closed';
  #sock: Socket | undefined;
  #remoteHost = '';
  #remotePort = 0;
  #local = '';
  #batch: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
  #used = 0;
  #pending = 0;
  #inflight = 0;
  /** Frames per flushed batch and the batch buffers, oldest first: a buffer is reused after all its sends completed. */
  readonly #flightFrames: number[] = [];
  readonly #flightBufs: Buffer[] = [];
  #headDone = 0;
  readonly #pool: Buffer[] = [];
  #scheduled = false;
  #opened = false;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;
  #strangers = 0;
  #sendErrors = 0;
  #lastError = '';

  readonly #flushBound = (): void => {
    this.#scheduled = false;
    this.#flush();
  };

  readonly #onSent = (err: Error | null): void => {
    this.#inflight--;
    if (err) {
      this.#sendErrors++;
      this.#lastError = describeError(err);
    }
    // Sends complete in order (libuv's UDP write queue is FIFO): release the head batch when all of it is sent.
    if (++this.#headDone === this.#flightFrames[0]) {
      this.#flightFrames.shift();
      const buf = this.#flightBufs.shift();
      this.#headDone = 0;
      if (buf !== undefined && buf.length === BATCH_BYTES && this.#pool.length < 4) this.#pool.push(buf);
    }
    if (this.#inflight === 0) this.#idle?.();
  };

  readonly #onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (rinfo.port !== this.#remotePort || rinfo.address !== this.#remoteHost) {
      this.#strangers++;
      this.#ctx.onMalformed(
        `datagram from ${rinfo.address} port ${rinfo.port}, which is not the port's remote ${this.#remoteHost} port ${this.#remotePort}`,
      );
      return;
    }
    if (msg.length > this.#ctx.maxFrameLen) {
      this.#ctx.onMalformed(`datagram of ${msg.length} bytes exceeds the largest frame of ${this.#ctx.maxFrameLen}`);
      return;
    }
    this.#ctx.sink(msg, 0, msg.length);
  };

  constructor(spec: UdpSpec, ctx: PortContext) {
    this.name = spec.name;
    this.#spec = spec;
    this.#ctx = ctx;
  }

  get state(): PortState {
    return this.#state;
  }

  get queued(): number {
    return this.#pending + this.#inflight;
  }

  async open(): Promise<void> {
    const where = formatAddress(this.#spec.local);
    if (this.#opened) throw new PortAddressError(this.name, where, 'the port was already opened');
    this.#opened = true;
    try {
      await this.#bind(where);
    } catch (err) {
      // Nothing was bound: the caller may fix the cause and open again.
      this.#opened = false;
      throw err;
    }
  }

  async #bind(where: string): Promise<void> {
    const localHost = await this.#resolve(this.#spec.local.host, 0, where);
    const family = isIP(localHost) === 6 ? 6 : 4;
    const remoteWhere = formatAddress(this.#spec.remote);
    let remote = await this.#resolve(this.#spec.remote.host, family, remoteWhere);
    // A dual-stack IPv6 socket talks to an IPv4 peer through a v4-mapped address.
    if (family === 6 && isIP(remote) === 4) remote = `::ffff:${remote}`;
    this.#remoteHost = family === 6 ? canonicalIpv6(remote) : remote;
    this.#remotePort = this.#spec.remote.port;
    const sock = createSocket({ type: family === 6 ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', (err: NodeJS.ErrnoException) => {
        sock.close();
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use; choose another' : describeError(err);
        reject(new PortAddressError(this.name, where, why, { cause: err }));
      });
      sock.bind({ address: localHost, port: this.#spec.local.port, exclusive: true }, () => {
        sock.removeAllListeners('error');
        resolve();
      });
    });
    sock.on('error', (err) => {
      this.#sendErrors++;
      this.#lastError = describeError(err);
      this.#ctx.logger.warn({ err: this.#lastError }, 'UDP socket error');
    });
    sock.on('message', this.#onMessage);
    const a = sock.address();
    this.#local = formatAddress({ type: 'udp', host: a.address, port: a.port });
    this.#sock = sock;
    if (this.#closing) {
      sock.close();
      return;
    }
    this.#state = 'up';
    this.#ctx.onState('up', `bound ${this.#local}, sending to ${remoteWhere}`);
  }

  write(buf: Buffer, off: number, len: number): WriteResult {
    if (this.#state !== 'up' || this.#closing) return WriteResult.DOWN;
    if (this.#pending + this.#inflight >= this.#ctx.queueLen) return WriteResult.QUEUE_FULL;
    const need = 4 + len;
    if (this.#batch.length - this.#used < need) this.#makeRoom(need);
    const b = this.#batch;
    b.writeUInt32BE(len, this.#used);
    buf.copy(b, this.#used + 4, off, off + len);
    this.#used += need;
    this.#pending++;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushBound);
    }
    return WriteResult.OK;
  }

  describe(): Record<string, unknown> {
    return {
      local: this.#local || formatAddress(this.#spec.local),
      remote: formatAddress(this.#spec.remote),
      queued: this.queued,
      strangers: this.#strangers,
      send_errors: this.#sendErrors,
      last_error: this.#lastError || undefined,
    };
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown(true);
    return this.#closing;
  }

  destroy(_err?: Error): Promise<void> {
    this.#pending = 0;
    this.#used = 0;
    this.#idle?.();
    this.#closing ??= this.#shutdown(false);
    return this.#closing;
  }

  async #resolve(host: string, family: 0 | 4 | 6, where: string): Promise<string> {
    if (isIP(host)) return host;
    try {
      return (await lookup(host, { family })).address;
    } catch (err) {
      throw new PortAddressError(this.name, where, `cannot resolve "${host}": ${describeError(err)}`, { cause: err });
    }
  }

  /** One send per datagram (no sendmmsg in Node); every send of a batch uses the same pre-bound callback. */
  #flush(): void {
    const sock = this.#sock;
    if (this.#pending === 0 || sock === undefined) return;
    const batch = this.#batch;
    const frames = this.#pending;
    const end = this.#used;
    this.#batch = this.#pool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    this.#used = 0;
    this.#pending = 0;
    this.#flightFrames.push(frames);
    this.#flightBufs.push(batch);
    this.#inflight += frames;
    for (let p = 0; p < end; ) {
      const len = batch.readUInt32BE(p);
      sock.send(batch, p + 4, len, this.#remotePort, this.#remoteHost, this.#onSent);
      p += 4 + len;
    }
  }

  #makeRoom(need: number): void {
    if (this.#pending > 0) {
      this.#flush();
      if (this.#batch.length - this.#used >= need) return;
    }
    const grown = Buffer.allocUnsafe(Math.max(this.#batch.length * 2, this.#used + need));
    this.#batch.copy(grown, 0, 0, this.#used);
    this.#batch = grown;
  }

  async #shutdown(graceful: boolean): Promise<void> {
    const sock = this.#sock;
    if (sock && graceful) {
      this.#flush();
      if (this.#inflight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, CLOSE_GRACE_MS);
          this.#idle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
    this.#sock = undefined;
    this.#pending = 0;
    if (sock) await new Promise<void>((resolve) => sock.close(() => resolve()));
    if (this.#state !== 'closed') {
      this.#state = 'closed';
      this.#ctx.onState('closed', graceful ? 'closed' : 'destroyed');
    }
  }
}

/** Factory for `kind: dgram` ports: UDP, or unix datagram sockets when the addresses are `unix:`. */
export function dgramPort(spec: DgramSpec, ctx: PortContext): Port {
  if (spec.local.type === 'unix' || spec.remote.type === 'unix') return new UnixDgramPort(spec as UnixDgramSpec, ctx);
  return new DgramPort(spec as UdpSpec, ctx);
}
