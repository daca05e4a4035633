/**
 * Compliance harnesses for the port kinds on kernel devices and VDE (need
 * root): a TAP the test makes, a veth pair for a host port, and vde_plug
 * (Debian's vde2) on a VDE port. The far side of a TAP or a host port's
 * interface is a packet socket (AF_PACKET) on the interface: what the port
 * writes arrives there, what it sends goes to the port.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { portSchema } from '../../src/config/schema.js';
import { native } from '../../src/native/index.js';
import { ip, run, uniqueIfname } from './netns.js';
import { type Harness, QueuedPeer } from './port-peers.js';
import { SocketPeer } from './socket-peer.js';

/** The EtherType of the suite's frames (port-rig.ts frame()): other traffic on an interface is not the test's. */
const TEST_ETHERTYPE = 0x88b5;
/** MTU of the test's interfaces: room for the suite's over-MTU and garbage frames, which the port must judge. */
const DEVICE_MTU = 9000;

/** Why a kernel device port never reports queue_full for a peer that does not read (the suite states it). */
const DEVICE_NO_BACKPRESSURE =
  'a kernel interface takes every frame written to it and drops at the reader (counted in its statistics), so a peer that stops reading never fills the port queue';

/**
 * A packet socket on `ifname` in the test's namespace, standing for what is
 * behind a TAP or a host interface. It reads only the suite's EtherType (the
 * kernel may send its own frames on an interface) and never reads back what it
 * sent (PACKET_IGNORE_OUTGOING). pause() stops reading: the kernel then drops
 * at the socket.
 */
class PacketPeer extends SocketPeer {
  constructor(ifname: string) {
    super(native().packetOpen(ifname, false).fd, 16384);
  }
  protected override keeps(rx: Buffer, off: number): boolean {
    return rx.readUInt16BE(off + 12) === TEST_ETHERTYPE;
  }
  send(frame: Buffer): void {
    this.sendTo(frame, null);
  }
}

/**
 * Resolves once each interface's operstate is `up`: until the kernel's link
 * watch has run, a device has no queueing discipline and drops what is sent
 * on it. There is no event for it here, so look every 10 ms (at most 10 s).
 */
async function operUp(...ifnames: string[]): Promise<void> {
  for (let i = 0; ; i++) {
    const states = await Promise.all(ifnames.map((x) => readFile(`/sys/class/net/${x}/operstate`, 'utf8')));
    if (states.every((st) => st.trim() === 'up')) return;
    if (i >= 1000) throw new Error(`${ifnames.join(', ')} not up after 10 s: ${states.join(', ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** No IPv6 (router solicitations, DAD), a large MTU, up. */
async function quietUp(ifname: string): Promise<void> {
  await run('sysctl', ['-qw', `net.ipv6.conf.${ifname}.disable_ipv6=1`]);
  await ip('link', 'set', ifname, 'mtu', String(DEVICE_MTU));
  await ip('link', 'set', ifname, 'up');
}

/** A `tap` port attached to a persistent TAP the harness made; the peer is a packet socket on it. */
export function tapHarness(): Harness {
  return {
    label: 'tap',
    mode: 'device',
    holdable: true,
    noBackpressure: DEVICE_NO_BACKPRESSURE,
    async make(name, network, extra = {}) {
      const ifname = uniqueIfname('vlc');
      await ip('tuntap', 'add', 'dev', ifname, 'mode', 'tap');
      await quietUp(ifname);
      const spec = portSchema.parse({ name, kind: 'tap', network, ifname, create: false, ...extra });
      return {
        spec,
        async attach() {
          // The TAP's carrier comes on when the port attaches its fd.
          await operUp(ifname);
          return new PacketPeer(ifname);
        },
        cleanup: async () => void (await ip('link', 'del', ifname).catch(() => undefined)),
      };
    },
  };
}

/** A `host` port on one end of a veth pair; the peer is a packet socket on the other end. */
export function hostHarness(): Harness {
  return {
    label: 'host',
    mode: 'device',
    holdable: true,
    noBackpressure: DEVICE_NO_BACKPRESSURE,
    async make(name, network, extra = {}) {
      const near = uniqueIfname('vlh');
      const far = uniqueIfname('vlf');
      await ip('link', 'add', near, 'type', 'veth', 'peer', 'name', far);
      await quietUp(near);
      await quietUp(far);
      const spec = portSchema.parse({ name, kind: 'host', network, ifname: near, ...extra });
      return {
        spec,
        async attach() {
          await operUp(near, far);
          return new PacketPeer(far);
        },
        cleanup: async () => void (await ip('link', 'del', near).catch(() => undefined)),
      };
    },
  };
}

/** vde_plug joined to a VDE port, speaking its stdin/stdout stream (2-byte big-endian length + frame). */
class VdePlugPeer extends QueuedPeer {
  readonly closed: Promise<void>;
  readonly #child: ChildProcessWithoutNullStreams;
  #buf: Buffer = Buffer.alloc(0);

  constructor(dir: string) {
    super();
    this.#child = spawn('vde_plug', [dir]);
    this.closed = once(this.#child, 'exit').then(() => undefined);
    this.#child.stdin.on('error', () => undefined);
    this.#child.stdout.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
      while (this.#buf.length >= 2 && this.#buf.length >= 2 + this.#buf.readUInt16BE(0)) {
        const len = this.#buf.readUInt16BE(0);
        this.frames.push(Buffer.from(this.#buf.subarray(2, 2 + len)));
        this.#buf = this.#buf.subarray(2 + len);
      }
    });
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(frame.length);
    this.#child.stdin.write(Buffer.concat([len, frame]));
  }
  pause(): void {
    this.#child.stdout.pause();
  }
  resume(): void {
    this.#child.stdout.resume();
  }
  async close(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill();
    await this.closed;
  }
}

/** A `vde` port in a temporary directory; each peer is a vde_plug process. */
export function vdeHarness(): Harness {
  return {
    label: 'vde',
    mode: 'plug',
    holdable: true,
    closeDropsInFlight:
      "vde_plug ends when its control connection closes, whether or not it has read the frames flushed into its socket (libvdeplug has no goodbye), so close() flushes to the plug's socket only",
    noBackpressure:
      'a VDE port is a hub segment: a plug that cannot take a frame misses it (counted in describe().tx_dropped), so a slow plug never holds up the port queue or the other plugs',
    async make(name, network, extra = {}) {
      const dir = await mkdtemp(join(tmpdir(), 'vmlink-vde-'));
      const spec = portSchema.parse({ name, kind: 'vde', network, dir: join(dir, 'sw'), ...extra });
      return {
        spec,
        attach: async () => new VdePlugPeer(join(dir, 'sw')),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  };
}
