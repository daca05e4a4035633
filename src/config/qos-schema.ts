/**
 * The QoS policy of a port, in the config file (`ports[].qos`) and in
 * `POST /v1/ports/:name/qos` (`vmlink qos request`). Rates are bits per
 * second, written like tc: `200mbit`, `1gbit`, `1.5gbit`, `800kbit`, or a
 * plain number of bits per second. Burst is bytes (`64K`, `1M`).
 */
import { z } from 'zod';
import { QOS_CLASSES } from '../qos/names.js';
import { sizeSchema } from './storage-schema.js';

/** Lowest rate accepted: 8 kbit/s (one 1500-byte frame every 1.5 s). */
export const MIN_RATE_BITS = 8_000;
/** Highest rate accepted: 1 Tbit/s; anything above is a typo. */
export const MAX_RATE_BITS = 1e12;

const UNITS: Record<string, number> = { '': 1, bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };

/** Bits per second from `200mbit` and friends, or a message saying what is wrong. */
export function parseRate(input: number | string): number | string {
  const text = String(input).trim();
  const m = /^(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)?$/i.exec(text);
  const n = m ? Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] as number) : Number.NaN;
  if (Number.isNaN(n)) {
    return `"${text}" is not a rate from 8kbit to 1tbit: write bits per second as a number, or with a unit bit, kbit, mbit, gbit or tbit (e.g. 200mbit, 1gbit)`;
  }
  if (n < MIN_RATE_BITS) {
    const plain = m?.[2] === undefined ? `; a number without a unit is bits per second: did you mean ${text}mbit?` : '';
    return `"${text}" is not a rate from 8kbit to 1tbit: it is ${n} bit/s, below the 8kbit minimum${plain}`;
  }
  if (n > MAX_RATE_BITS) return `"${text}" is not a rate from 8kbit to 1tbit: it is above the 1tbit maximum`;
  return Math.round(n);
}

function toRate(v: number | string, ctx: z.RefinementCtx): number {
  const n = parseRate(v);
  if (typeof n === 'string') {
    ctx.addIssue({ code: 'custom', message: n });
    return z.NEVER;
  }
  return n;
}

/** A rate field, parsed into bits per second. */
export const rateSchema = z.union([z.number(), z.string()]).transform(toRate);

/** A rate field that must be given: `missing` says so when it is not. */
function requiredRate(missing: string) {
  return z
    .union([z.number(), z.string()], {
      error: (iss) =>
        iss.input === undefined ? missing : 'a rate is text such as 200mbit, or a number of bits per second',
    })
    .transform(toRate);
}

/** Format bits per second the way they are written in the config: `200mbit`. */
export function formatRate(bits: number): string {
  for (const [unit, k] of [
    ['tbit', 1e12],
    ['gbit', 1e9],
    ['mbit', 1e6],
    ['kbit', 1e3],
  ] as const) {
    if (bits >= k) return `${Number((bits / k).toFixed(3))}${unit}`;
  }
  return `${Math.round(bits)}bit`;
}

const classSchema = z.enum(QOS_CLASSES, { error: () => `class must be one of: ${QOS_CLASSES.join(', ')}` });

/** What a VM may ask for (`vmlink qos request`): its rates, weight, class. */
const requestFields = {
  /** Reservation: guaranteed minimum on every shaped port the traffic crosses (admission-controlled). */
  min: rateSchema.optional(),
  /** Ingress policing rate: the most the port may send. */
  max: rateSchema.optional(),
  /** Policing burst in bytes; default 50 ms at `max`, at least 64 KiB. */
  burst: sizeSchema.optional(),
  /** DWRR weight, 1-1000; default 1. */
  weight: z
    .number()
    .int('weight must be a whole number')
    .min(1, 'weight must be 1-1000')
    .max(1000, 'weight must be 1-1000')
    .optional(),
  /** Highest class the port may use, and the class of its unmarked frames; default best-effort. */
  class: classSchema.optional(),
  /** Honour guest PCP/DSCP marks up to `class`; default true. */
  trust: z.boolean().optional(),
};

function checkMinMax(p: { min?: number | undefined; max?: number | undefined }, ctx: z.RefinementCtx): void {
  if (p.min !== undefined && p.max !== undefined && p.min > p.max)
    ctx.addIssue({
      code: 'custom',
      path: ['min'],
      message: `min ${formatRate(p.min)} is above max ${formatRate(p.max)}; a reservation cannot exceed the rate limit`,
    });
}

/** `ports[].qos` in the config file. */
export const portQosSchema = z
  .strictObject({
    ...requestFields,
    /** This port's egress capacity: its egress is shaped to it, and the reservations of the ports sharing its networks must fit in it. */
    capacity: rateSchema.optional(),
    /** Cap of the latency class on this port's shaped egress; default a tenth of capacity. */
    latency_cap: rateSchema.optional(),
  })
  .superRefine((p, ctx) => {
    checkMinMax(p, ctx);
    if (p.latency_cap !== undefined && p.capacity === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['latency_cap'],
        message: 'latency_cap needs capacity (it caps the latency class of a shaped port)',
      });
    if (p.latency_cap !== undefined && p.capacity !== undefined && p.latency_cap > p.capacity)
      ctx.addIssue({
        code: 'custom',
        path: ['latency_cap'],
        message: `latency_cap ${formatRate(p.latency_cap)} is above capacity ${formatRate(p.capacity)}`,
      });
  });
export type PortQosConfig = z.infer<typeof portQosSchema>;

/** The body of `POST /v1/ports/:name/qos`: the fields given replace the port's current ones. */
export const qosRequestSchema = z.strictObject(requestFields).superRefine(checkMinMax);

/**
 * `links[].qos` in the config file and in `POST /v1/links` (`vmlink link
 * add --capacity`): the link's capacity shapes everything it sends, over all
 * the networks it carries, and the reservations of the ports on those
 * networks must fit in it (docs/qos.md "Links").
 */
export const linkQosSchema = z
  .strictObject(
    {
      /** The link's capacity (e.g. the remote site's uplink): required. */
      capacity: requiredRate('capacity is required: the rate the link may send, e.g. 100mbit'),
      /** Cap of the latency class over the link; default a tenth of capacity. */
      latency_cap: rateSchema.optional(),
      /** Shaper burst in bytes (`64K`, `1M`); default 50 ms at capacity, at least 64 KiB. */
      burst: sizeSchema.optional(),
    },
    {
      error: (iss) =>
        iss.code === 'invalid_type' && iss.input !== undefined
          ? 'qos must be an object such as { capacity: 100mbit }'
          : undefined,
    },
  )
  .superRefine((p, ctx) => {
    if (p.latency_cap !== undefined && p.capacity !== undefined && p.latency_cap > p.capacity)
      ctx.addIssue({
        code: 'custom',
        path: ['latency_cap'],
        message: `latency_cap ${formatRate(p.latency_cap)} is above capacity ${formatRate(p.capacity)}`,
      });
    if (p.burst !== undefined && (p.burst < 1600 || p.burst > 1 << 30))
      ctx.addIssue({
        code: 'custom',
        path: ['burst'],
        message: `burst ${p.burst} bytes is outside 1600 bytes to 1 GiB (it must hold one frame)`,
      });
  });
export type LinkQosConfig = z.infer<typeof linkQosSchema>;
