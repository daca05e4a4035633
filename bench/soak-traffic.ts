/**
 * Traffic sources of the soak run (bench/soak.ts): stream socket peers, a
 * vhost-user front-end, a TAP in a namespace, NBD clients and control API
 * churn. Each is started and stopped by the soak driver; each counts what it
 * sent and received so the summary shows every path carried traffic.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ControlClient } from '../src/api/client.js';
import { NbdClient } from '../src/storage/nbd/client.js';
import type { Netns } from '../test/helpers/netns.js';
import { TestFrontend } from '../test/helpers/vhost-frontend.js';

/** Counters of one traffic source. */
export interface Counts {
  sent: number;
  received: number;
  /** Operations that failed (NBD read-back mismatches, refused API calls...). */
  errors: number;
  /** Stream peers: IPv4 frames received (only the TAP's pings are IPv4). */
  ipv4?: number;
}

export interface Source {
  readonly name: string;
  readonly counts: Counts;
  /** Stops generating; resolves once the source's own connections are closed. */
  stop(): Promise<void>;
}

const newCounts = (): Counts => ({ sent: 0, received: 0, errors: 0 });

/** An Ethernet frame of `len` bytes from `src` to `dst` (MACs as 6-byte hex strings). */
export function frame(dst: string, src: string, len = 128): Buffer {
  const b = Buffer.alloc(len, 0x5a);
  Buffer.from(dst, 'hex').copy(b, 0);
  Buffer.from(src, 'hex').copy(b, 6);
  b.writeUInt16BE(0x88b5, 12); // IEEE local experimental EtherType
  return b;
}

/**
 * A source that runs `tick` every `ms` (one timer per source) until stopped;
 * `close` then releases its connections.
 */
function tickSource(name: string, counts: Counts, ms: number, tick: () => void, close: () => unknown): Source {
  const t = setInterval(tick, ms);
  return {
    name,
    counts,
    async stop() {
      clearInterval(t);
      await close();
    },
  };
}

/**
 * A source that runs `step` over and over, `pauseMs` apart, until stopped; a
 * step that throws counts one error. `close` runs once the last step is done.
 */
function loopSource(
  name: string,
  counts: Counts,
  pauseMs: number,
  step: () => Promise<void>,
  close: () => unknown = () => undefined,
): Source {
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        await step();
      } catch {
        counts.errors++;
      }
      await sleep(pauseMs);
    }
  })();
  return {
    name,
    counts,
    async stop() {
      running = false;
      await loop;
      await close();
    },
  };
}

/** A stream-port peer (QEMU's `-netdev stream` framing: 4-byte length, frame). */
export class StreamPeer {
  readonly sock: Socket;
  readonly counts = newCounts();
  #have = Buffer.alloc(0);

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('data', (b: Buffer) => this.#read(b));
    sock.on('error', () => undefined);
  }

  static connect(path: string): Promise<StreamPeer> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new StreamPeer(s)));
      s.once('error', reject);
    });
  }

  send(f: Buffer): void {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(f.length);
    this.sock.write(Buffer.concat([h, f]));
    this.counts.sent++;
  }

  #read(b: Buffer): void {
    let buf = this.#have.length ? Buffer.concat([this.#have, b]) : b;
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
      if (buf.length >= 18 && buf.readUInt16BE(16) === 0x0800) this.counts.ipv4 = (this.counts.ipv4 ?? 0) + 1;
      buf = buf.subarray(4 + buf.readUInt32BE(0));
      this.counts.received++;
    }
    this.#have = Buffer.from(buf);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.sock.destroyed) return resolve();
      this.sock.once('close', () => resolve());
      this.sock.end();
      this.sock.destroySoon();
    });
  }
}

/** A peer sending `perTick` frames to each of `dsts` every 20 ms. */
export async function streamSource(
  name: string,
  path: string,
  mac: string,
  dsts: string[],
  perTick: number,
): Promise<Source> {
  const p = await StreamPeer.connect(path);
  const frames = dsts.map((d) => frame(d, mac));
  // One broadcast per second keeps every port's FDB and flooding path busy too.
  const bcast = frame('ffffffffffff', mac);
  let n = 0;
  const tick = () => {
    if (p.sock.writableLength > 1 << 20) return; // the daemon is behind: do not queue without bound
    for (const f of frames) for (let i = 0; i < perTick; i++) p.send(f);
    if (++n % 50 === 0) p.send(bcast);
  };
  return tickSource(name, p.counts, 20, tick, () => p.close());
}

/** A vhost-user front-end sending `perTick` frames to `dst` every 20 ms and draining what it receives. */
export async function vhostSource(
  name: string,
  path: string,
  mac: string,
  dst: string,
  perTick: number,
): Promise<Source> {
  const f = new TestFrontend(path, { bufSize: 2048 });
  await f.setup();
  const counts = newCounts();
  const fr = frame(dst, mac);
  const tick = () => {
    counts.received += f.drainRx().frames;
    for (let i = 0; i < perTick; i++) {
      try {
        f.sendFrame(fr);
        counts.sent++;
      } catch {
        break; // transmit ring full: the back-end catches up by the next tick
      }
    }
  };
  return tickSource(name, counts, 20, tick, () => f.close());
}

/**
 * `ping` from inside `ns` at 50 packets/s to an address whose neighbour entry
 * points at a stream peer's MAC: IPv4 frames into the TAP port. `sent` is
 * ping's own count of packets transmitted; the soak driver fills in
 * `received` from the stream peer.
 */
export function tapSource(name: string, ns: Netns, target: string): Source {
  const counts = newCounts();
  const proc = spawn('ip', ['netns', 'exec', ns.name, 'ping', '-q', '-i', '0.02', target], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  proc.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const exited = new Promise((r) => proc.once('exit', r));
  return {
    name,
    counts,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGINT');
      await exited;
      counts.sent = Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0);
    },
  };
}

/** Bytes of the export the NBD sources write to. */
const SPAN = 4 << 20;

/**
 * NBD traffic: one client writes a 64 KiB pattern at a random offset (in the first 4 MiB), reads it
 * back and compares, `opsPerSec` times a second; with `churn`, every op runs
 * on a fresh connection (connect, negotiate, op, disconnect). The steady source uses the first half
 * of that span and the churning one the second: two sources on one region would overwrite each
 * other's pattern between a write and its read-back, a mismatch that is no fault of the server.
 */
export async function nbdSource(name: string, socketPath: string, opsPerSec: number, churn: boolean): Promise<Source> {
  const counts = newCounts();
  const open = () => NbdClient.connect({ address: { type: 'unix', path: socketPath }, export: 'disk' });
  const client = churn ? undefined : await open();
  let seq = 0;
  const step = async () => {
    const c = client ?? (await open());
    try {
      const len = 65536;
      // Within the first 4 MiB: the memory export's pages are all touched during the warm-up,
      // so its growth does not pass for a leak of the daemon.
      const half = Math.min(c.size, SPAN) / 2;
      const off = (churn ? half : 0) + Math.floor(Math.random() * ((half - len) / 4096)) * 4096;
      const data = Buffer.alloc(len, seq++ & 0xff);
      await c.write(off, data);
      counts.sent++;
      const back = await c.read(off, len);
      counts.received++;
      if (!back.equals(data)) counts.errors++;
    } finally {
      if (churn) await c.disconnect().catch(() => undefined);
    }
  };
  return loopSource(name, counts, 1000 / opsPerSec, step, () => client?.disconnect().catch(() => undefined));
}

/** Control API churn: every `periodMs`, creates a network and deletes it again (the state store writes twice). */
export function apiSource(name: string, control: string, periodMs: number): Source {
  const counts = newCounts();
  const client = new ControlClient({ socketPath: control });
  let i = 0;
  const step = async () => {
    const n = i++;
    await client.createNetwork({ name: `soak${n}`, vni: 50_000 + (n % 1000) });
    await client.deleteNetwork(`soak${n}`);
    counts.sent += 2;
    counts.received += 2;
  };
  return loopSource(name, counts, periodMs, step, () => client.close());
}

/** Stream connection churn: every `periodMs`, connects, sends 50 frames, and disconnects. */
export function churnSource(name: string, path: string, mac: string, dst: string, periodMs: number): Source {
  const counts = newCounts();
  const step = async () => {
    const p = await StreamPeer.connect(path);
    for (let i = 0; i < 50; i++) p.send(frame(dst, mac));
    await p.close();
    counts.sent += p.counts.sent;
    counts.received += p.counts.received;
  };
  return loopSource(name, counts, periodMs, step);
}
