/**
 * Admission control: on every port with a capacity (a shaped egress) and
 * every overlay link with one, the reservations of the ports that can send through it
 * (those sharing one of its networks) must fit in the capacity. Pure and
 * control-plane only: callers check a proposed state before applying it, so a
 * refusal changes nothing.
 */

/** What admission needs to know of a port. Rates in bits per second. */
export interface AdmissionPort {
  name: string;
  /** `link` for an overlay link (it holds no reservation itself); default a port. */
  kind?: 'port' | 'link' | undefined;
  networks: readonly string[];
  /** Reservation; 0 or absent: none. */
  min?: number | undefined;
  /** Capacity of its egress; absent: not a shared, shaped port. */
  capacity?: number | undefined;
}

/** One shaped port whose capacity the reservations exceed. */
export interface AdmissionViolation {
  /** The shaped port (or link). */
  port: string;
  /** `link` when {@link port} names an overlay link. */
  kind?: 'port' | 'link' | undefined;
  capacity: number;
  /** Sum of the reservations sharing it. */
  reserved: number;
  /** The ports holding reservations on it, with their reservation. */
  holders: { name: string; min: number }[];
}

/** Every shaped port whose capacity the reservations of `ports` exceed. */
export function admissionViolations(ports: readonly AdmissionPort[]): AdmissionViolation[] {
  const out: AdmissionViolation[] = [];
  for (const e of ports) {
    if (e.capacity === undefined) continue;
    const nets = new Set(e.networks);
    const holders: { name: string; min: number }[] = [];
    let reserved = 0;
    for (const q of ports) {
      if (q === e || !q.min || !q.networks.some((n) => nets.has(n))) continue;
      holders.push({ name: q.name, min: q.min });
      reserved += q.min;
    }
    if (reserved > e.capacity)
      out.push({ port: e.name, ...(e.kind ? { kind: e.kind } : {}), capacity: e.capacity, reserved, holders });
  }
  return out;
}

/** The reservations sharing shaped port `port` (excluding `except`), in bits per second. */
export function reservedOn(ports: readonly AdmissionPort[], port: string, except?: string): number {
  const e = ports.find((p) => p.name === port);
  if (!e) return 0;
  const nets = new Set(e.networks);
  let sum = 0;
  for (const q of ports) if (q !== e && q.name !== except && q.min && q.networks.some((n) => nets.has(n))) sum += q.min;
  return sum;
}
