/**
 * The daemon's QoS service: keeps each port's policy, applies it to the
 * switch, admits or refuses requests (qos/admission.ts), and measures
 * rates once a second for `vmlink qos show` (one sweep, not a timer per port).
 *
 * Rates are bits per second here and in the API; the switch works in bytes.
 */
import { ConfigError, type ConfigProblem } from '../config/errors.js';
import type { LinkConfig } from '../config/overlay-schema.js';
import { parseWith } from '../config/parse.js';
import { formatRate, type LinkQosConfig, type PortQosConfig, qosRequestSchema } from '../config/qos-schema.js';
import type { PortConfig } from '../config/schema.js';
import { portNetworkRefs } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { LinkQosPolicy, LinkShaper } from '../net/overlay/link-qos.js';
import type { QosEgress } from '../net/switch/qos-egress.js';
import type { Switch } from '../net/switch/switch.js';
import { type AdmissionPort, type AdmissionViolation, admissionViolations } from '../qos/admission.js';
import { CLASS_LATENCY, CLASS_WEIGHT } from '../qos/classes.js';
import { QosAdmissionError, QosRequestError } from '../qos/errors.js';
import { QOS_CLASSES } from '../qos/names.js';
import type { QosFlowView, QosLinkView, QosPortView, QosView } from '../qos/view.js';
import { linkConfigOf, policyView, toPolicy } from './qos-policy.js';

interface Entry {
  name: string;
  networks: string[];
  qos: PortQosConfig | undefined;
}

/** An overlay link with a capacity, as the overlay lists it (Overlay.shapedLinks). */
export interface ShapedLink {
  name: string;
  policy: LinkQosPolicy;
  /** Undefined for a peer's link (overlay.peer_qos) that is not connected now: admission still counts it. */
  shaper: LinkShaper | undefined;
  /** Local networks it carries or may carry. */
  networks: string[];
}

/** A shaped link as fabric admission sees it: its name on this host, its capacity in bits per second. */
export interface FabricLink {
  name: string;
  capacity: number;
}

/**
 * Fabric admission (a cluster is configured): reserves `bps` for port `port`
 * on each of `links` across the fabric (0: releases it), or throws
 * (ERR_QOS_ADMISSION, ERR_CLUSTER_UNAVAILABLE) with nothing reserved. The
 * daemon maps link names to the fabric's keys (cluster/admission.ts
 * FabricAdmission.reserve).
 */
export type FabricAdmissionStep = (port: string, bps: number, links: FabricLink[]) => Promise<void>;

interface Sample {
  at: number;
  rx: number;
  tx: number;
  flows: Map<string, number>;
}

/** An admission decision for the event stream (daemon/events.ts): a port's or link's reservation accepted or refused. */
export interface AdmissionDecision {
  accepted: boolean;
  kind: 'port' | 'link';
  name: string;
  /** What was asked: the port's reservation (min) and cap (max), or the link's capacity, bits/s. */
  min?: number | undefined;
  max?: number | undefined;
  capacity?: number | undefined;
  /** Refused: the error code and message. */
  code?: string | undefined;
  reason?: string | undefined;
}

export class QosService {
  /** Told of every admission decision on a QoS request, a port with QoS or a link with a capacity. */
  onAdmission: ((d: AdmissionDecision) => void) | undefined;
  readonly #sw: Switch;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #last = new Map<string, Sample>();
  readonly #rates = new Map<string, { rx: number; tx: number; flows: Map<string, number> }>();
  #timer: NodeJS.Timeout | undefined;
  #links: () => ShapedLink[] = () => [];
  #fabric: FabricAdmissionStep | undefined;

  constructor(opts: { switch: Switch; logger: Logger }) {
    this.#sw = opts.switch;
    this.#log = opts.logger;
  }

  /** Where the overlay links with a capacity come from (admission counts them, `qos show` lists them). */
  setLinks(links: () => ShapedLink[]): void {
    this.#links = links;
  }

  /** With a cluster: the fabric-wide admission step that follows the local check ({@link requestInFabric}, {@link admitInFabric}). */
  setFabricAdmission(step: FabricAdmissionStep | undefined): void {
    this.#fabric = step;
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
   * Admission of a config's ports and links on its own (start-up and reload,
   * before anything of it is applied): a ConfigError naming each
   * `ports[i].qos.min` field of an oversubscribed shaped port's sharers.
   */
  checkConfig(
    ports: readonly PortConfig[],
    source: string,
    networks: readonly string[],
    links: readonly LinkConfig[] = [],
    peerQos: Readonly<Record<string, LinkQosConfig>> = {},
  ): void {
    // A configured link has not met its peer yet: it may carry every network of this host.
    const all = [...networks];
    const fields = new Map<AdmissionPort, string>();
    links.forEach((l, i) => {
      if (l.qos) fields.set(linkAdmission(l.name, all, l.qos), `links[${i}].qos.capacity`);
    });
    for (const [host, q] of Object.entries(peerQos))
      fields.set(linkAdmission(host, all, q), `overlay.peer_qos.${host}.capacity`);
    const own = ports.map((p) => admissionPort({ name: p.name, networks: networksOf(p), qos: p.qos }));
    const entries = [...own, ...fields.keys()];
    const v = admissionViolations(entries);
    if (!v.length) return;
    const problems: ConfigProblem[] = [];
    for (const x of v) {
      const e = entries.find((p) => p.name === x.port && p.kind === x.kind);
      const i = ports.findIndex((p) => p.name === x.port);
      const path = (e && fields.get(e)) ?? (i >= 0 ? `ports[${i}].qos.capacity` : x.port);
      problems.push({ path, message: describeViolation(x) });
    }
    throw new ConfigError(source, problems);
  }

  /** Admission of a port about to be added with `spec` (API): throws and changes nothing when refused. */
  admit(spec: PortConfig): void {
    this.#decide({ kind: 'port', name: spec.name, ...spec.qos }, spec.qos !== undefined, () => this.#admitLocal(spec));
  }

  #admitLocal(spec: PortConfig): void {
    const proposed = [
      ...this.#admissionPorts().filter((p) => p.kind === 'link' || p.name !== spec.name),
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
    const { e, next } = this.#prepare(name, body);
    return this.#apply(e, next);
  }

  /**
   * {@link request} in a cluster: the local check, then the fabric's for the
   * port's reservation on the shaped links its networks cross (when a step is
   * set), then applied. Refused by either: nothing changed here.
   */
  async requestInFabric(name: string, body: unknown): Promise<QosPortView> {
    let asked: PortQosConfig | undefined;
    return this.#decide(
      () => ({ kind: 'port', name, ...asked }),
      true,
      async () => {
        const { e, next } = this.#prepare(name, body);
        asked = next;
        await this.#fabric?.(name, next.min ?? 0, this.#fabricLinks(e.networks));
        return this.#apply(e, next);
      },
    );
  }

  /** {@link admit} in a cluster: the local check, then the fabric's for the new port's reservation. */
  async admitInFabric(spec: PortConfig): Promise<void> {
    await this.#decide({ kind: 'port', name: spec.name, ...spec.qos }, spec.qos !== undefined, async () => {
      this.#admitLocal(spec);
      await this.#fabric?.(spec.name, spec.qos?.min ?? 0, this.#fabricLinks(networksOf(spec)));
    });
  }

  /**
   * Runs an admission step and tells {@link onAdmission} how it went (when `tell`); the step's result or error passes through.
   * `what` is the request (a function: known only once the step parsed it).
   */
  #decide<T>(
    what: Omit<AdmissionDecision, 'accepted'> | (() => Omit<AdmissionDecision, 'accepted'>),
    tell: boolean,
    step: () => T,
  ): T {
    const report = (accepted: boolean, err?: unknown) => {
      const fn = this.onAdmission;
      if (!fn || !tell) return;
      const d = typeof what === 'function' ? what() : what;
      const e = err as { code?: unknown; message?: unknown } | undefined;
      try {
        fn({
          accepted,
          kind: d.kind,
          name: d.name,
          ...(d.min === undefined ? {} : { min: d.min }),
          ...(d.max === undefined ? {} : { max: d.max }),
          ...(d.capacity === undefined ? {} : { capacity: d.capacity }),
          ...(e ? { code: typeof e.code === 'string' ? e.code : undefined, reason: String(e.message) } : {}),
        });
      } catch (x) {
        this.#log.warn({ err: x }, 'an admission watcher threw; QoS goes on');
      }
    };
    let r: T;
    try {
      r = step();
    } catch (err) {
      report(false, err);
      throw err;
    }
    if (r instanceof Promise) {
      return r.then(
        (v) => {
          report(true);
          return v;
        },
        (err: unknown) => {
          report(false, err);
          throw err;
        },
      ) as T;
    }
    report(true);
    return r;
  }

  /**
   * In a cluster: states every port's reservation to the fabric again (after a start, or when the host
   * was down long enough for others to sweep its reservations). A refusal is logged; the port keeps running.
   */
  async reassertInFabric(): Promise<void> {
    const step = this.#fabric;
    if (!step) return;
    for (const e of this.#entries.values()) {
      if (!e.qos?.min) continue;
      await step(e.name, e.qos.min, this.#fabricLinks(e.networks)).catch((err) =>
        this.#log.warn(
          { port: e.name, code: (err as { code?: unknown }).code },
          `the fabric did not take back port "${e.name}"'s reservation: ${(err as Error).message}`,
        ),
      );
    }
  }

  /** In a cluster: gives back a port's fabric-wide reservations before it goes (nothing to do without a step or a reservation). */
  async releaseInFabric(name: string): Promise<void> {
    const e = this.#entries.get(name);
    if (!e || !this.#fabric || !e.qos?.min) return;
    await this.#fabric(name, 0, this.#fabricLinks(e.networks));
  }

  #prepare(name: string, body: unknown): { e: Entry; next: PortQosConfig } {
    const e = this.#entries.get(name);
    if (!e) throw new Error(`port "${name}" has no QoS entry`); // the caller checked the port exists
    const req = parseWith(qosRequestSchema, body, `the QoS request for port "${name}"`);
    const next: PortQosConfig = { ...e.qos };
    for (const [k, v] of Object.entries(req)) if (v !== undefined) (next as Record<string, unknown>)[k] = v;
    if (next.min !== undefined && next.max !== undefined && next.min > next.max)
      throw new QosRequestError(
        `port "${name}": min ${formatRate(next.min)} is above its max ${formatRate(next.max)}; ask for a min at most the max, or raise max too`,
      );
    const proposed = this.#admissionPorts().map((p) =>
      p.kind !== 'link' && p.name === name ? admissionPort({ ...e, qos: next }) : p,
    );
    refuseOn(admissionViolations(proposed), name);
    return { e, next };
  }

  #apply(e: Entry, next: PortQosConfig): QosPortView {
    this.#sw.setPortQos(e.name, toPolicy(next));
    e.qos = next;
    this.#log.info({ port: e.name, qos: policyView(next) }, `QoS of port "${e.name}" changed`);
    return this.#view(e);
  }

  /** The shaped links a port on `networks` may send through. */
  #fabricLinks(networks: readonly string[]): FabricLink[] {
    return this.#links()
      .filter((l) => l.networks.some((n) => networks.includes(n)))
      .map((l) => ({ name: l.name, capacity: l.policy.capacity * 8 }));
  }

  /**
   * Admission of a link about to be added (or re-configured) with `qos`: the
   * reservations of the ports on every network it may carry (a new link:
   * every network of this host) must fit in its capacity. Throws
   * ERR_QOS_ADMISSION and changes nothing when they do not.
   */
  admitLink(name: string, qos: LinkQosConfig | undefined, networks?: string[]): void {
    if (!qos) return;
    this.#decide({ kind: 'link', name, capacity: qos.capacity }, true, () => this.#admitLink(name, qos, networks));
  }

  #admitLink(name: string, qos: LinkQosConfig, networks?: string[]): void {
    const nets = networks ?? this.#sw.networks().map((n) => n.name);
    const proposed = [
      ...this.#admissionPorts().filter((p) => p.kind !== 'link' || p.name !== name),
      linkAdmission(name, nets, qos),
    ];
    const x = admissionViolations(proposed).find((v) => v.kind === 'link' && v.port === name);
    if (!x) return;
    throw new QosAdmissionError(
      name,
      `refused: ${describeViolation(x)}; give link "${name}" a capacity of at least ${formatRate(x.reserved)}, or lower those reservations; nothing was changed`,
    );
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
    return {
      ports: [...this.#entries.values()].map((e) => this.#view(e)),
      links: this.#links().flatMap((l) => (l.shaper ? [this.#linkView(l, l.shaper)] : [])),
    };
  }

  #admissionPorts(): AdmissionPort[] {
    const links = this.#links().map((l) => linkAdmission(l.name, l.networks, linkConfigOf(l.policy)));
    return [...[...this.#entries.values()].map(admissionPort), ...links];
  }

  /** The reservations of the ports (not links) sharing a network with `networks`, bits per second. */
  #reservedOn(networks: readonly string[], except: string): number {
    const nets = new Set(networks);
    let sum = 0;
    for (const e of this.#entries.values())
      if (e.name !== except && e.networks.some((n) => nets.has(n))) sum += e.qos?.min ?? 0;
    return sum;
  }

  #flowViews(egress: QosEgress, rates: Map<string, number> | undefined): QosFlowView[] {
    return egress.flows().map((f) => {
      const src = this.#sw.portName(f.source) ?? `#${f.source}`;
      const se = this.#entries.get(src)?.qos;
      return {
        source: src,
        class: QOS_CLASSES[f.class] as string,
        weight: f.class === CLASS_LATENCY ? 'strict' : (se?.weight ?? 1) * (CLASS_WEIGHT[f.class] as number),
        min: se?.min ?? 0,
        rate: rates?.get(`${f.source}/${f.class}`) ?? 0,
        frames: f.frames,
        bytes: f.bytes,
        drops: f.drops,
        queued: f.queued,
      };
    });
  }

  #linkView(l: ShapedLink, shaper: LinkShaper): QosLinkView {
    const e = shaper.egress;
    const r = this.#rates.get(linkKey(l.name));
    return {
      name: l.name,
      policy: policyView(linkConfigOf(l.policy)),
      networks: l.networks,
      tx_rate: r?.tx ?? 0,
      egress: {
        capacity: e.rate * 8,
        latency_cap: e.latencyCap * 8,
        reserved: this.#reservedOn(l.networks, ''),
        flows: this.#flowViews(e, r?.flows),
      },
    };
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
    if (sp.egress && !sp.egressShared) {
      v.egress = {
        capacity: sp.egress.rate * 8,
        latency_cap: sp.egress.latencyCap * 8,
        reserved: this.#reservedOn(e.networks, e.name),
        flows: this.#flowViews(sp.egress, r?.flows),
      };
    }
    return v;
  }

  /** One sample of every port's counters; rates are the difference to the previous one. */
  #measure(): void {
    const now = performance.now();
    const links = new Set<string>();
    for (const l of this.#links()) {
      if (!l.shaper) continue;
      links.add(linkKey(l.name));
      this.#sampleEgress(linkKey(l.name), l.shaper.egress, now);
    }
    // Links deleted or unshaped since: their samples go.
    for (const k of this.#last.keys()) {
      if (k.startsWith('link:') && !links.has(k)) {
        this.#last.delete(k);
        this.#rates.delete(k);
      }
    }
    for (const e of this.#entries.values()) {
      let sp: ReturnType<Switch['port']>;
      try {
        sp = this.#sw.port(e.name);
      } catch {
        continue;
      }
      const flows = new Map<string, number>();
      for (const f of sp.egress?.flows() ?? []) flows.set(`${f.source}/${f.class}`, f.bytes);
      this.#record(e.name, { at: now, rx: sp.counters.rxBytes, tx: sp.counters.txBytes, flows });
    }
  }

  /** A link's egress: its tx rate is what left the shaper. */
  #sampleEgress(key: string, egress: QosEgress, now: number): void {
    const flows = new Map<string, number>();
    let tx = 0;
    for (const f of egress.flows()) {
      flows.set(`${f.source}/${f.class}`, f.bytes);
      tx += f.bytes;
    }
    this.#record(key, { at: now, rx: 0, tx, flows });
  }

  #record(key: string, s: Sample): void {
    const prev = this.#last.get(key);
    this.#last.set(key, s);
    if (!prev) return;
    const dt = (s.at - prev.at) / 1000;
    const rate = (a: number, b: number) => Math.max(0, Math.round(((a - b) * 8) / dt));
    const fr = new Map<string, number>();
    for (const [k, b] of s.flows) fr.set(k, rate(b, prev.flows.get(k) ?? 0));
    this.#rates.set(key, { rx: rate(s.rx, prev.rx), tx: rate(s.tx, prev.tx), flows: fr });
  }
}

/** Key of a link's samples (port names never contain ':'). */
const linkKey = (name: string) => `link:${name}`;

function linkAdmission(name: string, networks: string[], q: LinkQosConfig): AdmissionPort {
  return { name, kind: 'link', networks, capacity: q.capacity };
}

function networksOf(spec: PortConfig): string[] {
  return [...new Set(portNetworkRefs(spec).map(([, n]) => n))];
}

function admissionPort(e: Entry): AdmissionPort {
  return { name: e.name, networks: e.networks, min: e.qos?.min, capacity: e.qos?.capacity };
}

function describeViolation(x: AdmissionViolation): string {
  const list = x.holders.map((h) => `${h.name} ${formatRate(h.min)}`).join(', ');
  return (
    `${x.kind ?? 'port'} "${x.port}" has capacity ${formatRate(x.capacity)} but the reservations of the ports sharing its networks ` +
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
