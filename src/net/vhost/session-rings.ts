/**
 * The rings of one vhost-user session (vhost-user.rst "Ring states"): the
 * SET_VRING_* / GET_VRING_BASE messages, each ring's kick eventfd poller and
 * its call and err fds. The session owns the control socket and the memory;
 * it hands ring messages here.
 */
import type { NativeAddon, Poller } from '../../native/index.js';
import { FLAG_REPLY, MAX_QUEUE_SIZE, MAX_RINGS, Req, VRING_IDX_MASK, VRING_NOFD_MASK } from './constants.js';
import { VhostProtocolError, VhostRingError } from './errors.js';
import { closeQuietly } from './fds.js';
import { type GuestMemory, readU64 } from './memory.js';
import { encodeMessage, type Message, reqName } from './message.js';
import { Virtqueue } from './virtqueue.js';

/** What the rings need of their session. */
export interface RingOwner {
  /** The guest memory mapped now (SET_MEM_TABLE), if any. */
  mem(): GuestMemory | undefined;
  /** True once the session has ended: a kick that arrives after is ignored. */
  closed(): boolean;
  /** Sends a reply on the control socket; throws when it cannot. */
  send(b: Buffer): void;
  /** A ring's kick eventfd fired (or the ring just started): process it. */
  onKick(q: Virtqueue): void;
  /** Rings were started, stopped or re-mapped. */
  onRings(): void;
}

/** The session's {@link MAX_RINGS} rings and the fds and pollers that belong to them. */
export class SessionRings {
  readonly rings: Virtqueue[] = [];
  readonly #n: NativeAddon;
  readonly #owner: RingOwner;
  readonly #kickPollers: (Poller | undefined)[] = [];

  constructor(n: NativeAddon, owner: RingOwner) {
    this.#n = n;
    this.#owner = owner;
    for (let i = 0; i < MAX_RINGS; i++) this.rings.push(new Virtqueue(i, n));
  }

  /** Handles one ring message; true when a reply was sent. Throws on a protocol error. */
  message(m: Message): boolean {
    const p = m.payload;
    const index =
      m.request === Req.SET_VRING_KICK || m.request === Req.SET_VRING_CALL || m.request === Req.SET_VRING_ERR
        ? p.readUInt32LE(0) & VRING_IDX_MASK
        : p.readUInt32LE(0);
    const q = this.rings[index];
    if (!q) {
      for (const fd of m.fds) closeQuietly(fd);
      throw new VhostRingError(`${reqName(m.request)}: ring ${index} does not exist (this port has ${MAX_RINGS})`);
    }
    const owner = this.#owner;
    switch (m.request) {
      case Req.SET_VRING_NUM: {
        const num = p.readUInt32LE(4);
        if (num === 0 || num > MAX_QUEUE_SIZE || (num & (num - 1)) !== 0)
          throw new VhostRingError(
            `SET_VRING_NUM: ring ${index} size ${num} is not a power of 2 up to ${MAX_QUEUE_SIZE}`,
          );
        q.setNum(num);
        q.attach(owner.mem());
        owner.onRings();
        return false;
      }
      case Req.SET_VRING_ADDR:
        q.addrs = {
          flags: p.readUInt32LE(4),
          desc: readU64(p, 8),
          used: readU64(p, 16),
          avail: readU64(p, 24),
          log: readU64(p, 32),
        };
        q.attach(owner.mem());
        owner.onRings();
        return false;
      case Req.SET_VRING_BASE:
        q.lastAvail = q.usedIdx = p.readUInt32LE(4) & 0xffff;
        q.resetSignal();
        return false;
      case Req.GET_VRING_BASE: {
        this.#stopRing(q);
        const r = Buffer.alloc(8);
        r.writeUInt32LE(index, 0);
        r.writeUInt32LE(q.lastAvail, 4);
        owner.send(encodeMessage(m.request, FLAG_REPLY, r));
        owner.onRings();
        return true;
      }
      case Req.SET_VRING_KICK: {
        if (p.readUInt32LE(0) & VRING_NOFD_MASK)
          throw new VhostRingError(`SET_VRING_KICK: ring ${index} without an fd (polling mode) is not supported`);
        this.#setKick(q, m.fds[0] as number);
        return false;
      }
      case Req.SET_VRING_CALL:
        if (q.callFd >= 0) closeQuietly(q.callFd);
        q.callFd = m.fds[0] ?? -1;
        return false;
      case Req.SET_VRING_ERR:
        if (q.errFd >= 0) closeQuietly(q.errFd);
        q.errFd = m.fds[0] ?? -1;
        return false;
      case Req.SET_VRING_ENABLE: {
        const on = p.readUInt32LE(4);
        if (on > 1) throw new VhostRingError(`SET_VRING_ENABLE: ring ${index} state ${on} is not 0 or 1`);
        q.enabled = on === 1;
        owner.onRings();
        if (q.ready) owner.onKick(q);
        return false;
      }
      default:
        throw new VhostProtocolError(`unhandled request ${reqName(m.request)}`);
    }
  }

  #setKick(q: Virtqueue, fd: number): void {
    this.#kickPollers[q.index]?.close();
    if (q.kickFd >= 0) closeQuietly(q.kickFd);
    q.kickFd = fd;
    const owner = this.#owner;
    const poller = new this.#n.Poller(fd, (status) => {
      if (status < 0 || owner.closed() || q.kickFd !== fd) return;
      this.#n.eventfdRead(fd);
      if (q.ready) owner.onKick(q);
    });
    this.#kickPollers[q.index] = poller;
    poller.start(this.#n.READABLE);
    owner.onRings();
    // The ring starts with its kick fd (vhost-user.rst "Starting and stopping rings"): look at it once now.
    if (q.ready) owner.onKick(q);
  }

  /** GET_VRING_BASE: the ring stops; its kick fd is dropped. */
  #stopRing(q: Virtqueue): void {
    this.#kickPollers[q.index]?.close();
    this.#kickPollers[q.index] = undefined;
    if (q.kickFd >= 0) closeQuietly(q.kickFd);
    q.kickFd = -1;
  }

  /** Stops every ring, closes its kick, call and err fds and detaches it from guest memory. */
  stopAll(): void {
    for (const q of this.rings) {
      this.#stopRing(q);
      if (q.callFd >= 0) closeQuietly(q.callFd);
      if (q.errFd >= 0) closeQuietly(q.errFd);
      q.callFd = q.errFd = -1;
      q.detach();
    }
  }

  /** Interrupts the guest for ring `q` (eventfd write on its call fd). */
  call(q: Virtqueue): void {
    if (q.callFd >= 0) this.#n.eventfdWrite(q.callFd, 1);
  }
}
