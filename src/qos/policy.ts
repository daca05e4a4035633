/**
 * A port's QoS policy as the switch applies it (rates already in bytes per
 * second). The configuration (config/qos-schema.ts) and `vmlink qos request`
 * produce it; {@link Switch.setPortQos} applies it.
 */
export interface PortQosPolicy {
  /** Ingress policing rate (the most the port may send), bytes per second; none when absent. */
  max?: number | undefined;
  /** Ingress policing burst in bytes; default {@link defaultPoliceBurst}. */
  burst?: number | undefined;
  /** Reservation: guaranteed minimum on every shaped egress the port's traffic crosses, bytes per second. */
  min?: number | undefined;
  /** DWRR weight on shaped egresses; default 1. */
  weight?: number | undefined;
  /** Highest class the port may use, and the class of its unmarked frames (class id, 0 highest); default best effort. */
  cls?: number | undefined;
  /** Honour the guest's PCP/DSCP marks (clamped to `cls`); default true. */
  trust?: boolean | undefined;
  /** The port's egress capacity, bytes per second: when set its egress is shaped to it and scheduled. */
  capacity?: number | undefined;
  /** Cap of the latency class on this port's shaped egress, bytes per second; default a tenth of capacity. */
  latencyCap?: number | undefined;
}

/**
 * Policing burst when none is given: 50 ms at the rate, at least 64 KiB. The
 * switch reads a port in batches; a daemon that gets the CPU late reads a
 * late batch at once, and a shallower bucket would police it as a burst.
 */
export function defaultPoliceBurst(rate: number): number {
  return Math.max(Math.round(rate / 20), 64 * 1024);
}
