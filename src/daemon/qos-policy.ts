/** Conversions between the config's QoS (bits per second) and the switch's and overlay's policies (bytes per second). */
import { formatRate, type LinkQosConfig, type PortQosConfig } from '../config/qos-schema.js';
import type { LinkQosPolicy } from '../net/overlay/link-qos.js';
import { classId } from '../qos/classes.js';
import type { PortQosPolicy } from '../qos/policy.js';

/** The overlay's link policy (bytes per second) from the config's (bits per second). */
export function toLinkPolicy(q: LinkQosConfig): LinkQosPolicy {
  return {
    capacity: q.capacity / 8,
    latencyCap: q.latency_cap === undefined ? undefined : q.latency_cap / 8,
    burst: q.burst,
  };
}

/** And back. */
export function linkConfigOf(p: LinkQosPolicy): LinkQosConfig {
  return {
    capacity: p.capacity * 8,
    ...(p.latencyCap === undefined ? {} : { latency_cap: p.latencyCap * 8 }),
    ...(p.burst === undefined ? {} : { burst: p.burst }),
  };
}

/** The switch's policy (bytes per second) from the config's (bits per second). */
export function toPolicy(q: PortQosConfig): PortQosPolicy {
  const B = (bits: number | undefined) => (bits === undefined ? undefined : bits / 8);
  return {
    max: B(q.max),
    burst: q.burst,
    min: B(q.min),
    weight: q.weight,
    cls: q.class === undefined ? undefined : classId(q.class),
    trust: q.trust,
    capacity: B(q.capacity),
    latencyCap: B(q.latency_cap),
  };
}

export function policyView(q: PortQosConfig): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    out[k] = ['min', 'max', 'capacity', 'latency_cap'].includes(k) ? formatRate(v as number) : (v as string | number);
  }
  return out;
}
