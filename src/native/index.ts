/**
 * The native addon (src/native/c, built by node-gyp into
 * build/Release/vmlink_native.node): only the syscalls Node lacks. Loaded
 * lazily on first use, so modules that merely import a port kind work on a
 * machine where the addon was not built.
 *
 * Errors of a failed syscall are thrown like Node's own: an Error with `code`
 * (the errno name, e.g. `ENOENT`), `errno` (negative errno) and `syscall`
 * (the call that failed, e.g. `ioctl TUNSETIFF`), and `path` when one applies.
 * Every fd the addon creates is non-blocking and close-on-exec; close fds with
 * `fs.closeSync` (close a {@link Poller} on an fd first).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { VmlinkError } from '../errors.js';

/** A syscall failure as the addon throws it (the shape of Node's own errno errors). */
export interface SyscallError extends Error {
  /** errno name, e.g. `EACCES`. */
  code: string;
  /** Negative errno, as in Node's errors. */
  errno: number;
  /** The call that failed, e.g. `open`, `ioctl TUNSETIFF`, `recvmmsg`. */
  syscall: string;
  /** The path or interface name involved, when there is one. */
  path?: string;
}

/** True when `err` is a syscall error with the given errno name. */
export function isSyscallError(err: unknown, code?: string): err is SyscallError {
  return (
    err instanceof Error &&
    typeof (err as Partial<SyscallError>).syscall === 'string' &&
    (code === undefined || (err as Partial<SyscallError>).code === code)
  );
}

/** fd readiness watcher on the libuv loop (uv_poll). */
export interface Poller {
  /** Watches for `events` (READABLE | WRITABLE), replacing the previous mask. While started, the poller stays alive. */
  start(events: number): void;
  /** No more callbacks until the next start(). */
  stop(): void;
  /** Stops for good and releases the handle. Call before closing the fd. Idempotent. */
  close(): void;
}

/** An opaque native split-virtqueue handle (vringNew). */
export type VringHandle = { readonly __vring: unique symbol };

/** The addon's functions, one per syscall family. */
export interface NativeAddon {
  /**
   * Opens /dev/net/tun as IFF_TAP|IFF_NO_PI, non-blocking.
   * @param name interface name (at most 15 bytes; may hold `%d`)
   * @param attach true: the interface must exist (ENODEV from `if_nametoindex` otherwise); false: created, or attached to when it exists
   * @param vnetHdrSize 0: no virtio_net_hdr; else IFF_VNET_HDR with TUNSETVNETHDRSZ of this many bytes (10 or 12)
   * @param offload TUNSETOFFLOAD flags (TUN_F_*), or -1 to leave them alone
   * @returns the fd and the actual interface name
   */
  tapOpen(name: string, attach: boolean, vnetHdrSize: number, offload: number): { fd: number; name: string };
  /** Sets an interface's MTU (SIOCSIFMTU) in this process's network namespace. */
  ifSetMtu(name: string, mtu: number): void;
  /** Sets or clears IFF_UP (SIOCSIFFLAGS). */
  ifSetUp(name: string, up: boolean): void;
  /** Interface index, 0 when no such interface exists in this namespace. */
  ifIndex(name: string): number;

  /**
   * Reads frames (one per read(2)) until the fd would block, offs.length
   * frames were read, or fewer than maxLen bytes of buf remain. Frame i is at
   * buf[offs[i] .. offs[i]+lens[i]) (packed, 8-byte aligned).
   * @returns frames read (0: none ready), or -1 at end of file
   */
  readBatch(fd: number, buf: Uint8Array, maxLen: number, offs: Uint32Array, lens: Uint32Array): number;
  /**
   * Writes frames start..end-1, one writev(prefix, frame) each. Stops when
   * the fd would block. Frames refused with another errno are skipped:
   * errs[0] += 1 and errs[1] = errno for each.
   * @returns index of the first frame not consumed (end when all were)
   */
  writeBatch(
    fd: number,
    buf: Uint8Array,
    offs: Uint32Array,
    lens: Uint32Array,
    start: number,
    end: number,
    prefix: Uint8Array | null,
    errs: Int32Array,
  ): number;

  /**
   * One writev of a[aOff, aOff+aLen) then b[bOff, bOff+bLen) on a
   * non-blocking stream socket. Returns the bytes written (fewer than asked
   * when the socket buffer fills, 0 when it would block), or -errno for
   * another error (nothing thrown: the caller hands the rest to Node's queue,
   * which reports the error).
   */
  streamWrite(fd: number, a: Uint8Array, aOff: number, aLen: number, b: Uint8Array, bOff: number, bLen: number): number;

  /** An AF_UNIX socket of the given type (SOCK_DGRAM, SOCK_STREAM, SOCK_SEQPACKET). */
  socket(type: number): number;
  /** A connected pair of AF_UNIX sockets. */
  socketpair(type: number): [number, number];
  bind(fd: number, path: string): void;
  connect(fd: number, path: string): void;
  /** listen(2) on a bound stream socket. */
  listen(fd: number, backlog: number): void;
  /** accept4(2): the new connection's fd (non-blocking, close-on-exec), or -1 when none is pending. */
  accept(fd: number): number;
  /**
   * sendmmsg of datagrams start..end-1 (to `dest`: a unix path, or a
   * {@link sockaddrInet} Buffer for UDP; null: the connected peer).
   * @returns index of the first datagram not sent; throws only if the first fails (not for EAGAIN)
   */
  sendBatch(
    fd: number,
    buf: Uint8Array,
    offs: Uint32Array,
    lens: Uint32Array,
    start: number,
    end: number,
    dest: string | Buffer | null,
  ): number;
  /**
   * recvmmsg of up to min(lens.length, buf.length / slot) datagrams; datagram i
   * at buf[i*slot ..], lens[i] its full length (> slot: truncated). With
   * `addrs`, addrs[i] is the sender's path ('' when unnamed).
   * @returns datagrams received (0: none ready)
   */
  recvBatch(fd: number, buf: Uint8Array, slot: number, lens: Uint32Array, addrs: string[] | null): number;
  /**
   * recvBatch for an unconnected datagram socket that serves one peer (a
   * unix path, or a {@link sockaddrInet} Buffer for UDP): strangers[i] = 1
   * when datagram i came from another sender (drop and count it), else 0. No
   * string is made per datagram.
   * @returns datagrams received (0: none ready)
   */
  recvBatchFrom(
    fd: number,
    buf: Uint8Array,
    slot: number,
    lens: Uint32Array,
    peer: string | Buffer,
    strangers: Uint8Array,
  ): number;
  /**
   * A non-blocking UDP socket bound to a numeric host and port (0: any);
   * IPv6 hosts get a dual-stack AF_INET6 socket. Returns the bound port.
   * Throws EINVAL (syscall `inet_pton`) for a host that is not numeric.
   */
  udpOpen(host: string, port: number): { fd: number; port: number };
  /**
   * The raw sockaddr of a numeric host and port for sendBatch / recvBatchFrom
   * on a UDP socket; `v6` for an AF_INET6 socket (an IPv4 host becomes
   * ::ffff:a.b.c.d).
   */
  sockaddrInet(host: string, port: number, v6: boolean): Buffer;
  /**
   * recvmmsg on a UDP socket that serves many peers: up to min(lens.length,
   * buf.length / slot, senders.length / 20, gso.length) datagrams; datagram i
   * at buf[i*slot ..], lens[i] its full length (> slot: truncated),
   * senders[20i .. 20i+20) its sender: 16 bytes of address in IPv6 form (IPv4
   * as ::ffff:a.b.c.d), 2 bytes of port (big-endian), the family (4 or 6), 0.
   * With `gso` (after udpOffloads(fd, true) switched UDP_GRO on): gso[i] > 0
   * when datagram i is several of one sender coalesced by the kernel, each
   * gso[i] bytes but the last. Nothing is allocated per datagram.
   * @returns datagrams received (0: none ready)
   */
  udpRecvBatch(
    fd: number,
    buf: Uint8Array,
    slot: number,
    lens: Uint32Array,
    senders: Uint8Array,
    gso: Uint32Array | null,
  ): number;
  /**
   * sendmmsg of datagrams start..end-1, datagram i to entry dests[i] of
   * `table` (28 bytes per entry, each a {@link sockaddrInet} Buffer). With
   * gsoSegs > 1: up to gsoSegs datagrams that lie back to back in buf, go to
   * one entry and have the first one's length (the last may be shorter)
   * leave as one message with UDP_SEGMENT (UDP GSO).
   * @returns index of the first datagram not sent (end when all were); throws
   *   only if the first message fails (not for EAGAIN). EIO or EINVAL with
   *   gsoSegs > 1: the path cannot take GSO; send with gsoSegs 1.
   */
  udpSendBatch(
    fd: number,
    buf: Uint8Array,
    offs: Uint32Array,
    lens: Uint32Array,
    dests: Uint16Array,
    table: Uint8Array,
    start: number,
    end: number,
    gsoSegs: number,
  ): number;
  /**
   * The ones'-complement sum (RFC 1071) of the big-endian 16-bit words of
   * buf[from .. to) (an odd last byte padded with zero), folded to
   * 1..0xffff, or 0 when all are zero. Throws ERR_OUT_OF_RANGE unless
   * from <= to <= buf.length.
   */
  inetSum(buf: Uint8Array, from: number, to: number): number;
  /**
   * UDP offloads of a socket: bit 1 when the kernel takes UDP_SEGMENT (GSO
   * sends), bit 2 when UDP_GRO was switched on (`gro` true and the kernel has
   * it). Never throws for a kernel without them.
   */
  udpOffloads(fd: number, gro: boolean): number;
  /**
   * Socket buffer sizes in bytes (SO_SNDBUFFORCE/SO_RCVBUFFORCE, falling back
   * to SO_SNDBUF/SO_RCVBUF, capped by net.core.wmem_max/rmem_max); 0 leaves
   * one alone.
   */
  setBuffers(fd: number, sndbuf: number, rcvbuf: number): void;
  /**
   * A raw AF_PACKET socket bound to an existing interface (ETH_P_ALL),
   * non-blocking, with PACKET_IGNORE_OUTGOING (frames sent out of the
   * interface are not read back) and, with `promisc`, PACKET_MR_PROMISC.
   * Read and write it with recvBatch / sendBatch (dest null).
   * Throws ENODEV (syscall `if_nametoindex`, path = ifname) for a missing interface.
   */
  packetOpen(ifname: string, promisc: boolean): { fd: number; ifindex: number };
  /** sendmsg of `data` (non-empty) with up to 32 fds as SCM_RIGHTS. Returns bytes sent. */
  sendFds(fd: number, data: Uint8Array, fds: readonly number[]): number;
  /** recvmsg into buf taking SCM_RIGHTS fds (close-on-exec). null when nothing is ready; bytes 0 at end of stream. */
  recvFds(fd: number, buf: Uint8Array): { bytes: number; fds: number[]; truncated: boolean } | null;

  /**
   * MAP_SHARED mapping of fd[offset .. offset+length) as an external ArrayBuffer; unmapped on GC or by munmap().
   * Guarded (guard.c): an access beyond the end of the file (a file shrunk after mapping) reads zeros from a
   * private page that replaces the faulting one, counts a fault ({@link mmapFaults}) and signals {@link guardFd},
   * instead of a SIGBUS that kills the process.
   */
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  /** Unmaps now and detaches the ArrayBuffer (byteLength becomes 0). Idempotent. */
  munmap(ab: ArrayBuffer): void;
  /** Faults (accesses beyond the end of the file) in a mapping from {@link mmap} so far; 0 once unmapped. */
  mmapFaults(ab: ArrayBuffer): number;
  /** The non-blocking eventfd the SIGBUS guard writes at every guarded fault (one per process). */
  guardFd(): number;
  /** fstat size and regular-file flag of an fd, and its memfd seals (F_GET_SEALS; -1 when it cannot carry seals). */
  fdInfo(fd: number): { size: number; regular: boolean; seals: number };
  /** memfd_create(name, MFD_CLOEXEC, plus MFD_ALLOW_SEALING when `sealing`). */
  memfdCreate(name: string, sealing?: boolean): number;
  /** fcntl(F_ADD_SEALS) with F_SEAL_* bits, on a memfd made with sealing. */
  addSeals(fd: number, seals: number): void;
  /** A non-blocking eventfd. */
  eventfd(initval: number, semaphore: boolean): number;
  /** Reads (and resets) the counter; null when it is 0. */
  eventfdRead(fd: number): number | null;
  /** Adds n to the counter; false when that would overflow. */
  eventfdWrite(fd: number, n: number): boolean;

  /**
   * preadv2 with RWF_NOWAIT into buf[offset .. offset+length) from file position `position`:
   * bytes read (short when only part is in the page cache; 0 at end of file),
   * -1 when nothing is cached (read it the blocking way), -2 when the file system
   * does not support RWF_NOWAIT. Never blocks on the disk.
   */
  preadNoWait(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  /** pwritev2 with RWF_NOWAIT: bytes written (may be short), -1 would block, -2 unsupported. */
  pwriteNoWait(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  /** fallocate(2): `mode` of FALLOC_FL_* bits (PUNCH_HOLE needs KEEP_SIZE). Throws EOPNOTSUPP where the file system cannot. */
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /**
   * Every pread (`write` false) or pwrite of the batch, in order, on one of
   * the addon's two I/O threads; then `callback(ok)` on the loop. `results[i]`: bytes moved
   * (short only for a read at end of file) or -errno. Do not touch the
   * buffers until the callback.
   */
  fileBatch(
    fd: number,
    write: boolean,
    bufs: Uint8Array[],
    positions: Float64Array,
    results: Float64Array,
    callback: (ok: boolean) => void,
  ): void;
  /** lseek SEEK_DATA: the first data position at or after `offset`; -1 when only a hole follows (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** lseek SEEK_HOLE: the first hole position at or after `offset` (the file size at the end); -1 past the end. */
  seekHole(fd: number, offset: number): number;

  /**
   * A split-virtqueue fast path (vring.c) sharing `io` with the caller:
   * io[0] = next available slot, io[1] = next used slot (free-running u16).
   * Keep `io` alive as long as the handle.
   */
  vringNew(io: Uint32Array): VringHandle;
  /**
   * Points the ring at guest memory: region views, their guest-physical
   * starts, the queue size and the three ring parts (bounds-checked by the
   * caller). With `regions` undefined: detached (the fast path takes nothing).
   */
  vringAttach(
    ring: VringHandle,
    regions?: readonly Buffer[],
    gpas?: Float64Array,
    num?: number,
    desc?: Buffer,
    avail?: Buffer,
    used?: Buffer,
  ): void;
  /**
   * Takes up to `max` simple transmit chains (one descriptor, or a 12-byte
   * header descriptor and one frame descriptor) with frames of
   * minLen..maxLen bytes; out[3k..3k+2] = region, offset, length of frame k.
   * Used elements are written, not published. Stops before the first chain
   * it does not take (the caller's walk handles that one). -1: the
   * front-end's memory faulted (a file shrunk under a ring or buffer).
   */
  vringTx(ring: VringHandle, max: number, minLen: number, maxLen: number, out: Uint32Array): number;
  /** Copies header + frame into the next receive chain when it is one big-enough writable descriptor, and publishes it: 0 done, 1 no buffer, 2 take the slow path. */
  vringRx(ring: VringHandle, buf: Uint8Array, off: number, len: number): number;
  /** vringRx for frames[2k] = offset, frames[2k+1] = length in `src`, k < count, published once; returns how many were done (it stops at the first that was not, or at a guest-memory fault). Keeps nothing between calls. */
  vringRxBatch(ring: VringHandle, src: Uint8Array, frames: Uint32Array, count: number): number;
  /** Stores the used index (publishes what vringTx wrote). */
  vringPublish(ring: VringHandle): void;

  Poller: new (fd: number, callback: (status: number, events: number) => void) => Poller;

  readonly READABLE: number;
  readonly WRITABLE: number;
  readonly DISCONNECT: number;
  readonly SOCK_STREAM: number;
  readonly SOCK_DGRAM: number;
  readonly SOCK_SEQPACKET: number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly IFNAMSIZ: number;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly FALLOC_FL_ZERO_RANGE: number;
  /** memfd seal bits (fcntl(2)). */
  readonly F_SEAL_SEAL: number;
  readonly F_SEAL_SHRINK: number;
  readonly F_SEAL_GROW: number;
}

/** The addon was not built (or cannot be loaded on this machine). */
export class NativeMissingError extends VmlinkError {
  constructor(tried: readonly string[], options?: ErrorOptions) {
    super(
      'ERR_NATIVE_MISSING',
      `the vmlink native addon could not be loaded (looked for ${tried.join(', ')}); build it with: sh scripts/build-native.sh`,
      options,
    );
  }
}

/** Where the built addon may be: from dist/src/native (compiled) or src/native (sources). */
const CANDIDATES = ['../../../build/Release/vmlink_native.node', '../../build/Release/vmlink_native.node'];

let addon: NativeAddon | undefined;

/** The addon, loaded on first call. Throws {@link NativeMissingError} when it was not built. */
export function native(): NativeAddon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  const paths = CANDIDATES.map((c) => fileURLToPath(new URL(c, import.meta.url)));
  const found = paths.find((p) => existsSync(p));
  if (found === undefined) throw new NativeMissingError(paths);
  try {
    addon = require(found) as NativeAddon;
  } catch (err) {
    throw new NativeMissingError([found], { cause: err });
  }
  return addon;
}
