/**
 * The daemon's QoS service: keeps each port's policy, applies it to the
 * switch, admits or refuses requests (net/qos/admission.ts), and measures
 * rates once a second for `vmlink qos show` (one sweep, not a timer per port).
 *
 * Rates are bits per second here and in the API; the switch works in bytes.
 */
import { ConfigError, type ConfigProblem } from '../config/errors.js';
import { formatRate, type PortQosConfig, qosRequestSchema } from '../config/qos-schema.js';
import type { PortConfig } from '../config/schema.js';
import { portNetworkRefs } from '../config/schema.js';
import type { Logger } from '../log.js';
import { type AdmissionPort, type AdmissionViolation, admissionViolations } from '../net/qos/admission.js';
import { CLASS_LATENCY, CLASS_WEIGHT, classId, QOS_CLASSES } from '../net/qos/classes.js';
import { QosAdmissionError, QosRequestError } from '../net/qos/errors.js';
import type { PortQosPolicy } from '../net/qos/policy.js';
import type { QosPortView, QosView } from '../net/qos/view.js';
import type { Switch } from '../net/switch/switch.js';
import { parseWith } from './specs.js';

interface Entry {
  name: string;
  networks: string[];
  qos: PortQosConfig | undefined;
}

interface Sample {
  at: number;
  rx: number;
  tx: number;
  flows: Map<string, number>;
}

export class QosService {
  readonly #sw: Switch;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #last = new Map<string, Sample>();
  readonly #rates = new Map<string, { rx: number; tx: number; flows: Map<string, number> }>();
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: { switch: Switch; logger: Logger }) {
    this.#sw = opts.switch;
    this.#log = opts.logger;
  }

  /** Starts the once-a-second rate measurement. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#measure(), 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Records a port that was just added to the switch and applies its policy (no admission: see {@link check}). */
  attach(spec: PortConfig): void {
    const e: Entry = { name: spec.name, networks: networksOf(spec), qos: spec.qos };
    this.#entries.set(spec.name, e);
    if (spec.qos) this.#sw.setPortQos(spec.name, toPolicy(spec.qos));
  }

  /** Forgets a removed port. */
  detach(name: string): void {
    this.#entries.delete(name);
    this.#last.delete(name);
    this.#rates.delete(name);
  }

  /**
   * Admission of the config's ports: a ConfigError naming each `ports[i].qos.min`
   * field of an oversubscribed shaped port's sharers.
   */
  checkConfig(ports: readonly PortConfig[], source: string): void {
    const v = admissionViolations(this.#admissionPorts());
    if (!v.length) return;
    const problems: ConfigProblem[] = [];
    for (const x of v) {
      const i = ports.findIndex((p) => p.name === x.port);
      problems.push({ path: i >= 0 ? `ports[${i}].qos.capacity` : x.port, message: describeViolation(x) });
    }
    throw new ConfigError(source, problems);
  }

  /** Admission of a port about to be added with `spec` (API): throws and changes nothing when refused. */
  admit(spec: PortConfig): void {
    const proposed = [
      ...this.#admissionPorts().filter((p) => p.name !== spec.name),
      admissionPort({ name: spec.name, networks: networksOf(spec), qos: spec.qos }),
    ];
    refuseOn(admissionViolations(proposed), spec.name);
  }

  /**
   * `vmlink qos request`: the fields given replace the port's current ones;
   * admitted and applied, or refused (ERR_QOS_ADMISSION, ERR_QOS_REQUEST,
   * ERR_CONFIG_INVALID) with nothing changed.
   */
  request(name: string, body: unknown): QosPortView {
    const e = this.#entries.get(name);
    if (!e) throw new Error(`port "${name}" has no QoS entry`); // the caller checked the port exists
    const req = parseWith(qosRequestSchema, body, `the QoS request for port "${name}"`);
    const next: PortQosConfig = { ...e.qos };
    for (const [k, v] of Object.entries(req)) if (v !== undefined) (next as Record<string, unknown>)[k] = v;
    if (next.min !== undefined && next.max !== undefined && next.min > next.max)
      throw new QosRequestError(
        `port "${name}": min ${formatRate(next.min)} is above its max ${formatRate(next.max)}; ask for a min at most the max, or raise max too`,
      );
    const proposed = this.#admissionPorts().map((p) => (p.name === name ? admissionPort({ ...e, qos: next }) : p));
    refuseOn(admissionViolations(proposed), name);
    this.#sw.setPortQos(name, toPolicy(next));
    e.qos = next;
    this.#log.info({ port: name, qos: policyView(next) }, `QoS of port "${name}" changed`);
    return this.#view(e);
  }

  /** The policy in force on a port (numbers in bits per second, as the schema accepts them back). */
  policy(name: string): PortQosConfig | undefined {
    return this.#entries.get(name)?.qos;
  }

  /** Puts a policy back without admission (undoing a request whose persistence failed). */
  restore(name: string, qos: PortQosConfig | undefined): void {
    const e = this.#entries.get(name);
    if (!e) return;
    e.qos = qos;
    this.#sw.setPortQos(name, qos && toPolicy(qos));
  }

  /** `GET /v1/qos`. */
  view(): QosView {
    return { ports: [...this.#entries.values()].map((e) => this.#view(e)) };
  }

  #admissionPorts(): AdmissionPort[] {
    return [...this.#entries.values()].map(admissionPort);
  }

  #view(e: Entry): QosPortView {
    const sp = this.#sw.port(e.name);
    const c = sp.counters;
    const r = this.#rates.get(e.name);
    const v: QosPortView = {
      name: e.name,
      policy: e.qos ? policyView(e.qos) : {},
      rx_rate: r?.rx ?? 0,
      tx_rate: r?.tx ?? 0,
      drops: { police: c.police, queue_full: c.queue_full },
    };
    if (sp.egress) {
      const ports = this.#admissionPorts();
      const me = ports.find((p) => p.name === e.name);
      const nets = new Set(me?.networks ?? []);
      const reserved = ports
        .filter((p) => p.name !== e.name && p.networks.some((n) => nets.has(n)))
        .reduce((a, p) => a + (p.min ?? 0), 0);
      v.egress = {
        capacity: sp.egress.rate * 8,
        latency_cap: sp.egress.latencyCap * 8,
        reserved,
        flows: sp.egress.flows().map((f) => {
          const src = this.#sw.portName(f.source) ?? `#${f.source}`;
          const se = this.#entries.get(src)?.qos;
          return {
            source: src,
            class: QOS_CLASSES[f.class] as string,
            weight: f.class === CLASS_LATENCY ? 'strict' : (se?.weight ?? 1) * (CLASS_WEIGHT[f.class] as number),
            min: se?.min ?? 0,
            rate: r?.flows.get(`${f.source}/${f.class}`) ?? 0,
            frames: f.frames,
            bytes: f.bytes,
            drops: f.drops,
            queued: f.queued,
          };
        }),
      };
    }
    return v;
  }

  /** One sample of every port's counters; rates are the difference to the previous one. */
  #measure(): void {
    const now = performance.now();
    for (const e of this.#entries.values()) {
      let sp: ReturnType<Switch['port']>;
      try {
        sp = this.#sw.port(e.name);
      } catch {
        continue;
      }
      const flows = new Map<string, number>();
      for (const f of sp.egress?.flows() ?? []) flows.set(`${f.source}/${f.class}`, f.bytes);
      const s: Sample = { at: now, rx: sp.counters.rxBytes, tx: sp.counters.txBytes, flows };
      const prev = this.#last.get(e.name);
      this.#last.set(e.name, s);
      if (!prev) continue;
      const dt = (now - prev.at) / 1000;
      const rate = (a: number, b: number) => Math.max(0, Math.round(((a - b) * 8) / dt));
      const fr = new Map<string, number>();
      for (const [k, b] of flows) fr.set(k, rate(b, prev.flows.get(k) ?? 0));
      this.#rates.set(e.name, { rx: rate(s.rx, prev.rx), tx: rate(s.tx, prev.tx), flows: fr });
    }
  }
}

function networksOf(spec: PortConfig): string[] {
  return [...new Set(portNetworkRefs(spec).map(([, n]) => n))];
}

function admissionPort(e: Entry): AdmissionPort {
  return { name: e.name, networks: e.networks, min: e.qos?.min, capacity: e.qos?.capacity };
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

function policyView(q: PortQosConfig): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    out[k] = ['min', 'max', 'capacity', 'latency_cap'].includes(k) ? formatRate(v as number) : (v as string | number);
  }
  return out;
}

function describeViolation(x: AdmissionViolation): string {
  const list = x.holders.map((h) => `${h.name} ${formatRate(h.min)}`).join(', ');
  return (
    `port "${x.port}" has capacity ${formatRate(x.capacity)} but the reservations of the ports sharing its networks ` +
    `would total ${formatRate(x.reserved)} (${list})`
  );
}

/** Throws the refusal for the first violation, phrased for the port that asked. */
function refuseOn(v: AdmissionViolation[], asking: string): void {
  const x = v[0];
  if (!x) return;
  const mine = x.holders.find((h) => h.name === asking)?.min ?? 0;
  const room = Math.max(0, x.capacity - (x.reserved - mine));
  throw new QosAdmissionError(
    x.port,
    `refused: ${describeViolation(x)}; port "${asking}" can reserve at most ${formatRate(room)} there, nothing was changed`,
  );
}
