/**
 * What the transmit and receive parts of a vhost-user net device
 * (net-transmit.ts, net-receive.ts) use of the device itself
 * (net-device.ts): its session, context, counters and once-per-turn work.
 */
import type { BatchSink, FrameSink } from '../port.js';
import type { VhostOffloads } from './net-offload.js';
import type { VhostSession } from './session.js';
import type { Virtqueue } from './virtqueue.js';

export interface NetDeviceContext {
  sink: FrameSink;
  /** Where a transmit batch of plain frames goes at once (the switch's batch ingress); absent: {@link sink} per frame. */
  sinkBatch?: BatchSink | undefined;
  onMalformed: (reason: string) => void;
  /** Largest frame (Ethernet header included) in either direction. */
  maxFrameLen: number;
  /** Receive backlog bound in frames. */
  queueLen: number;
  /** Backpressure: how long this device may hold up senders without taking a frame (ms); 0: never. */
  holdMs: number;
  /** Backpressure: the receive backlog emptied after the device said FULL (PortContext.onRoom). */
  onRoom: () => void;
  /** The guest broke the ring protocol: disconnect it (called once per error). */
  onError: (err: Error) => void;
}

export interface NetDeviceCore {
  readonly session: VhostSession;
  readonly ctx: NetDeviceContext;
  readonly offloads: VhostOffloads;
  /** The receive ring, if any. */
  readonly rxq: Virtqueue | undefined;
  /** True once stopped. */
  readonly dead: boolean;
  rxFrames: number;
  txFrames: number;
  rxDropped: number;
  /** The guest broke the ring protocol. */
  fail(msg: string): void;
  failWith(err: Error): void;
  /** Used entries were published on `q`: an interrupt at the end of this turn if the guest asked. */
  published(q: Virtqueue): void;
  /** Runs the device's once-per-turn work this turn. */
  schedule(): void;
  /** Transmit ring `q` has work left for the next turn. */
  txAgain(q: Virtqueue): void;
  /** Released from a hold: every ready transmit ring is read again next turn. */
  txResume(): void;
}
