/**
 * A real Switch with real ports of one kind (built through the registry) and
 * their peers, for the port compliance suite and the per-kind tests.
 */
import { EventEmitter } from 'node:events';
import type { PortConfig } from '../../src/config/schema.js';
import { createPort } from '../../src/daemon/port-registry.js';
import { silentLogger } from '../../src/log.js';
import { MAX_FRAME_LEN, type Port, type PortState } from '../../src/net/port.js';
import { Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import type { Endpoint, Harness, Peer } from './port-peers.js';

export interface PortHandle {
  name: string;
  mac: string;
  sp: SwitchPort;
  port: Port;
  ep: Endpoint;
  /** Every state change, in order. */
  states: PortState[];
  /** 'up' reports seen, and how many of them a peer was matched with. */
  ups: number;
  taken: number;
  events: EventEmitter;
}

/** `52:54:00:00:00:0N` for the N-th port. */
export function macOf(n: number): string {
  return `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`;
}

function macBytes(mac: string): Buffer {
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

/**
 * An Ethernet frame `dst <- src`, EtherType 0x88b5 (IEEE local experimental),
 * whose payload starts with `tag` and is filled with a pattern to `size` bytes.
 */
export function frame(dst: string, src: string, tag: string, size = 64): Buffer {
  const f = Buffer.alloc(Math.max(size, 14 + tag.length));
  macBytes(dst).copy(f, 0);
  macBytes(src).copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  f.write(tag, 14, 'latin1');
  for (let i = 14 + tag.length; i < f.length; i++) f[i] = (i * 7 + tag.length) & 0xff;
  return f;
}

export const BROADCAST = 'ff:ff:ff:ff:ff:ff';

export class Rig {
  readonly sw = new Switch({ logger: silentLogger() });
  readonly #h: Harness;
  readonly #handles: PortHandle[] = [];
  readonly #peers: Peer[] = [];

  constructor(h: Harness) {
    this.#h = h;
    this.sw.addNetwork({ name: 'red', vni: 1, mtu: 1500 });
    this.sw.addNetwork({ name: 'blue', vni: 2, mtu: 1500 });
  }

  /** Adds and opens a port `name` (the n-th, MAC macOf(n)) on `network`. */
  async add(
    name: string,
    n: number,
    network: string,
    o: { queueLen?: number; maxFrameLen?: number; extra?: Record<string, unknown> } = {},
  ): Promise<PortHandle> {
    const ep = await this.#h.make(name, network, o.extra);
    const events = new EventEmitter();
    const states: PortState[] = [];
    const handle = { name, mac: macOf(n), ep, states, ups: 0, taken: 0, events } as unknown as PortHandle;
    handle.sp = this.sw.addPort(name, { network }, (sink, sp) =>
      createPort(ep.spec as PortConfig, {
        sink,
        // As the daemon wires ports: batch-capable ports deliver a read's frames in one call.
        sinkBatch: sp.ingressBatch,
        logger: silentLogger(),
        maxFrameLen: o.maxFrameLen ?? MAX_FRAME_LEN,
        queueLen: o.queueLen ?? 1024,
        onMalformed: (reason) => this.sw.malformed(sp, reason),
        onState: (state, reason) => {
          this.sw.portState(sp, state);
          states.push(state);
          if (state === 'up') handle.ups++;
          events.emit('state', state, reason);
        },
      }),
    );
    handle.port = handle.sp.port;
    this.#handles.push(handle);
    await handle.port.open();
    return handle;
  }

  /** Resolves once the port reports `state` (at once if it is in it and `fresh` is false). */
  state(h: PortHandle, state: PortState, fresh = false): Promise<void> {
    if (!fresh && h.port.state === state) return Promise.resolve();
    return new Promise((resolve) => {
      const on = (s: PortState) => {
        if (s !== state) return;
        h.events.off('state', on);
        resolve();
      };
      h.events.on('state', on);
    });
  }

  /** A peer on the port; for connection kinds (and VDE plugs), waits until the port reported this connection 'up'. */
  async connect(h: PortHandle): Promise<Peer> {
    const peer = await h.ep.attach(h.port);
    this.#peers.push(peer);
    if (this.#h.mode !== 'dgram' && this.#h.mode !== 'device') {
      h.taken++;
      while (h.ups < h.taken) await new Promise((r) => h.events.once('state', r));
    }
    return peer;
  }

  async close(): Promise<void> {
    for (const p of this.#peers) await p.close().catch(() => {});
    for (const h of this.#handles) {
      await h.port.destroy();
      await h.ep.cleanup();
    }
    this.sw.stop();
  }
}

/** Reads frames from `peer` until one equals `want`; returns how many others came first. Bounded by `limit`. */
export async function until(peer: Peer, want: Buffer, limit = 1_000_000): Promise<number> {
  for (let skipped = 0; skipped < limit; skipped++) {
    const f = await peer.next();
    if (f.equals(want)) return skipped;
  }
  throw new Error(`frame ${want.subarray(14, 30).toString('latin1')} not seen in ${limit} frames`);
}
