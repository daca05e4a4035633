/**
 * In-process overlay hosts for integration tests: a real Switch, a real
 * Overlay and TCP/TLS transport on loopback, and in-memory local ports that
 * record what the switch sends them.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { type Logger, silentLogger } from '../../src/log.js';
import type { LinkQosPolicy } from '../../src/net/overlay/link-qos.js';
import { Overlay } from '../../src/net/overlay/overlay.js';
import { TcpTransport, type TlsMaterial } from '../../src/net/overlay/tcp-transport.js';
import { VxlanTransport } from '../../src/net/overlay/vxlan-transport.js';
import type { FrameSink, Port, PortState } from '../../src/net/port.js';
import { WriteResult } from '../../src/net/port.js';
import { Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { caInit, hostCert } from '../../src/pki/ca.js';

/** A local port in memory: frames the switch sends are recorded; rx() injects one. */
export class MemPort implements Port {
  readonly kind = 'mem';
  readonly state: PortState = 'up';
  readonly queued = 0;
  readonly got: Buffer[] = [];
  constructor(
    readonly name: string,
    readonly sink: FrameSink,
  ) {}
  async open(): Promise<void> {}
  write(buf: Buffer, off: number, len: number): WriteResult {
    this.got.push(Buffer.from(buf.subarray(off, off + len)));
    return WriteResult.OK;
  }
  describe(): Record<string, unknown> {
    return {};
  }
  async close(): Promise<void> {}
  async destroy(): Promise<void> {}
  rx(frame: Buffer): void {
    this.sink(frame, 0, frame.length);
  }
}

export interface RigHost {
  id: string;
  sw: Switch;
  overlay: Overlay;
  transport: TcpTransport;
  /** Local port per network name. */
  ports: Record<string, MemPort>;
  sps: Record<string, SwitchPort>;
  /** Bound listener port (when listening). */
  port: number;
  vxlan: VxlanTransport | undefined;
  /** Bound VXLAN port (with the vxlan option). */
  vxlanPort: number;
  stop(): Promise<void>;
}

export interface RigHostOptions {
  id: string;
  networks: { name: string; vni: number; mtu?: number }[];
  tls?: TlsMaterial;
  relay?: boolean;
  listen?: boolean;
  keepaliveMs?: number;
  /** On a relay: spoke-to-spoke bits per second that make it ask for a direct link. */
  directThresholdBps?: number;
  /** Also a VXLAN transport bound on this address (port 0: any), with this underlay MTU. */
  vxlan?: {
    host: string;
    port?: number;
    mtu?: number;
    sourcePorts?: { min: number; max: number };
    offloads?: boolean;
  };
  /** QoS of the links accepted from these peer hosts (overlay.peer_qos), bytes per second. */
  peerQos?: Record<string, LinkQosPolicy>;
  /** Networks that get a local port (default all): hosts with thousands of networks need few. */
  localPorts?: string[];
  /** Logger of the host (default silent). */
  logger?: Logger;
  /** Time a peer has for its network list after the hello, ms (default the overlay's, 30 s). */
  networkListTimeoutMs?: number;
}

export async function rigHost(o: RigHostOptions): Promise<RigHost> {
  const logger = o.logger ?? silentLogger();
  const sw = new Switch({ logger });
  const ports: Record<string, MemPort> = {};
  const sps: Record<string, SwitchPort> = {};
  for (const n of o.networks) {
    sw.addNetwork({ name: n.name, vni: n.vni, mtu: n.mtu ?? 9000 });
    if (o.localPorts && !o.localPorts.includes(n.name)) continue;
    const name = `vm-${n.name}`;
    sps[n.name] = sw.addPort(name, { network: n.name }, (sink) => {
      const p = new MemPort(name, sink);
      ports[n.name] = p;
      return p;
    });
  }
  let overlay: Overlay | undefined;
  const transport = new TcpTransport({
    logger,
    hello: () => (overlay as Overlay).hello(),
    tls: o.tls,
    keepaliveMs: o.keepaliveMs ?? 200,
  });
  const vxlan = o.vxlan
    ? new VxlanTransport({
        logger,
        hello: () => (overlay as Overlay).hello(),
        underlayMtu: o.vxlan.mtu,
        sourcePorts: o.vxlan.sourcePorts,
        offloads: o.vxlan.offloads,
      })
    : undefined;
  const vxlanAt =
    vxlan && o.vxlan ? await vxlan.listen({ host: o.vxlan.host, port: o.vxlan.port ?? 0 }, () => undefined) : undefined;
  overlay = new Overlay({
    logger,
    switch: sw,
    hostId: o.id,
    relay: o.relay ?? false,
    transport,
    reconnect: { min_ms: 50, max_ms: 400 },
    directThresholdBps: o.directThresholdBps,
    transports: vxlan ? [vxlan] : [],
    peerQos: o.peerQos ? new Map(Object.entries(o.peerQos)) : undefined,
    networkListTimeoutMs: o.networkListTimeoutMs,
  });
  await overlay.start(o.listen === false ? undefined : { host: '127.0.0.1', port: 0 });
  const ov = overlay;
  return {
    id: o.id,
    sw,
    overlay: ov,
    transport,
    ports,
    sps,
    port: ov.listening?.port ?? 0,
    vxlan,
    vxlanPort: vxlanAt?.port ?? 0,
    stop: () => ov.stop(),
  };
}

/** A logger whose JSON lines the test reads, from `level` up. */
export function recording(level: 'debug' | 'info' = 'info'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const t of chunk.toString().split('\n')) if (t) lines.push(JSON.parse(t) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino<never>({ level }, stream), lines };
}

/** Polls `fn` every 20 ms until it returns true; rejects with `what` after `ms`. */
export async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A fabric CA in a temp dir and certificates for the given hosts. */
export async function rigCa(
  hosts: string[],
): Promise<{ dir: string; tls: Record<string, TlsMaterial>; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-ca-'));
  await caInit(join(dir, 'ca'));
  const tls: Record<string, TlsMaterial> = {};
  for (const h of hosts) {
    const f = await hostCert(join(dir, 'ca'), h, join(dir, h));
    tls[h] = {
      ca: await readFile(f.ca, 'utf8'),
      cert: await readFile(f.cert, 'utf8'),
      key: await readFile(f.key, 'utf8'),
    };
  }
  return { dir, tls, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** An Ethernet frame: dst, src (hex MACs), EtherType 0x88b5 and `n` payload bytes of `fill`. */
export function eth(dst: string, src: string, n = 46, fill = 0xab): Buffer {
  const b = Buffer.alloc(14 + n, fill);
  Buffer.from(dst.replaceAll(':', ''), 'hex').copy(b, 0);
  Buffer.from(src.replaceAll(':', ''), 'hex').copy(b, 6);
  b.writeUInt16BE(0x88b5, 12);
  return b;
}

/** Like {@link until} for an async check (e.g. asking a daemon through its CLI), every 100 ms. */
export async function untilAsync(what: string, fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
