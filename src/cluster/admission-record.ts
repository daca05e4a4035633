/**
 * The admission record of one shared capacity (`admission/<link-key>` under
 * the fabric's prefix) and the pure decisions on it: parsing a stored value
 * (or saying why it is not a record) and applying a batch of changes in
 * order, each admitted or refused. cluster/admission.ts does the etcd side.
 */
import { formatRate } from '../config/qos-schema.js';
import { describeError } from '../errors.js';
import { QosAdmissionError } from '../qos/errors.js';

/** One shared capacity as stored in etcd (rates in bits per second). */
export interface AdmissionRecord {
  capacity_bps: number;
  capacities: Record<string, number>;
  reservations: Record<string, number>;
}

/** A change waiting for its key's next transaction. */
export type Change =
  | { kind: 'set'; who: string; bps: number; capacity: number; previous?: number | undefined }
  /** Removes the reservations (`<host>/<port>`) and stated capacities (`<host>`) the predicates pick. */
  | { kind: 'drop'; reservation: (who: string) => boolean; capacity: (host: string) => boolean; removed?: number };

/**
 * The record after the batch's changes, in order, and each change's outcome:
 * the change (with what it replaced or removed) or the refusal.
 */
export function decide(
  link: string,
  before: AdmissionRecord | undefined,
  changes: readonly Change[],
  host: string,
): { record: AdmissionRecord | undefined; outcomes: (Change | Error)[] } {
  const reservations = { ...before?.reservations };
  const capacities = { ...before?.capacities };
  const outcomes = changes.map((c): Change | Error => {
    if (c.kind === 'drop') {
      let removed = 0;
      for (const who of Object.keys(reservations))
        if (c.reservation(who)) {
          delete reservations[who];
          removed++;
        }
      for (const h of Object.keys(capacities)) if (c.capacity(h)) delete capacities[h];
      return { ...c, removed };
    }
    const previous = reservations[c.who] ?? 0;
    if (c.bps === 0) {
      delete reservations[c.who];
      return { ...c, previous };
    }
    // Asking for less is always granted, even where the others already exceed a lowered capacity.
    const stated = { ...capacities, [host]: c.capacity };
    const capacity = Math.min(...Object.values(stated));
    const others = sum(reservations) - previous;
    if (c.bps > previous && others + c.bps > capacity)
      return refusal(link, capacity, stated, reservations, c.who, c.bps);
    reservations[c.who] = c.bps;
    capacities[host] = c.capacity;
    return { ...c, previous };
  });
  if (!Object.keys(reservations).length) return { record: undefined, outcomes };
  const capacity_bps = Object.keys(capacities).length ? Math.min(...Object.values(capacities)) : 0;
  return { record: { capacity_bps, capacities, reservations }, outcomes };
}

function refusal(
  link: string,
  capacity: number,
  stated: Record<string, number>,
  reservations: Record<string, number>,
  who: string,
  bps: number,
): QosAdmissionError {
  const mine = reservations[who] ?? 0;
  const held = Object.entries(reservations).filter(([w]) => w !== who);
  const total = sum(reservations) - mine + bps;
  const list = [...held, [who, bps] as const].map(([w, b]) => `${w} ${formatRate(b)}`).join(', ');
  const by = Object.entries(stated)
    .filter(([, b]) => b === capacity)
    .map(([h]) => h)
    .join(', ');
  const room = Math.max(0, capacity - (total - bps));
  const port = `port "${who.slice(who.indexOf('/') + 1)}" of host "${hostOf(who)}"`;
  return new QosAdmissionError(
    link,
    `refused: link "${link}" has capacity ${formatRate(capacity)} (as stated by ${by}) but the reservations across the fabric ` +
      `would total ${formatRate(total)} (${list}); ${port} can reserve at most ${formatRate(room)} there, nothing was changed`,
  );
}

/** The record in `value`, or why it is not one. */
export function parseRecord(value: Buffer): AdmissionRecord | string {
  let v: unknown;
  try {
    v = JSON.parse(value.toString('utf8'));
  } catch (err) {
    return `not JSON (${describeError(err)})`;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a JSON object';
  const o = v as Record<string, unknown>;
  if (!isRate(o['capacity_bps']))
    return `capacity_bps ${JSON.stringify(o['capacity_bps'])} is not a rate in bits per second`;
  const capacities = rates(o['capacities'] ?? {}, 'capacities');
  if (typeof capacities === 'string') return capacities;
  const reservations = rates(o['reservations'], 'reservations');
  if (typeof reservations === 'string') return reservations;
  for (const w of Object.keys(reservations))
    if (!w.includes('/')) return `reservation "${w}" is not named "<host>/<port>"`;
  return { capacity_bps: o['capacity_bps'], capacities, reservations };
}

function rates(v: unknown, field: string): Record<string, number> | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return `${field} is not an object of rates`;
  for (const [k, r] of Object.entries(v)) if (!isRate(r)) return `${field}["${k}"] ${JSON.stringify(r)} is not a rate`;
  return v as Record<string, number>;
}

const isRate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
export const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
export const hostOf = (who: string) => who.slice(0, who.indexOf('/'));
