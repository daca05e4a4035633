/**
 * Applies ports' QoS policies to the switch's stages: ingress policing,
 * class and trust, weights and reservations on every shaped egress, a port's
 * own shaped egress (QosEgress) or one shared with other ports (an overlay
 * link's). Control plane: runs when a policy changes, never per frame.
 */
import { CLASS_BEST_EFFORT } from '../../qos/classes.js';
import { defaultPoliceBurst, type PortQosPolicy } from '../../qos/policy.js';
import { TokenBucket } from '../../qos/token-bucket.js';
import type { IngressChecks } from './checks.js';
import type { Egress } from './egress.js';
import { QosEgress } from './qos-egress.js';
import type { SwitchPort } from './switch-port.js';

export class Shaping {
  /** Ports with a shaped egress (own or shared): while there are any, the ingress checks classify frames. */
  #count = 0;

  constructor(
    readonly egress: Egress,
    readonly clock: () => number,
    readonly checks: IngressChecks,
  ) {}

  #counted(by: number): void {
    this.#count += by;
    this.checks.classify = this.#count > 0;
  }

  /** See Switch.setPortQos. `ports`: every port of the switch. */
  setPortQos(sp: SwitchPort, p: PortQosPolicy | undefined, ports: Iterable<SwitchPort>): void {
    const now = this.clock();
    if (p?.max === undefined) sp.police = undefined;
    else {
      const burst = p.burst ?? defaultPoliceBurst(p.max);
      if (sp.police) sp.police.reconfigure(p.max, burst, now);
      else sp.police = new TokenBucket(p.max, burst, now);
    }
    sp.qosClass = p?.cls ?? CLASS_BEST_EFFORT;
    sp.qosTrust = p?.trust ?? true;
    sp.qosWeight = p?.weight ?? 1;
    sp.qosMin = p?.min ?? 0;
    if (sp.egressShared) {
      // A port in a shared egress (an overlay link's) is shaped by its owner, not by its own capacity.
    } else if (p?.capacity === undefined) {
      if (sp.egress) this.unshape(sp);
    } else if (sp.egress) {
      sp.egress.setRate(p.capacity, p.latencyCap);
    } else {
      sp.egress = new QosEgress(this.egress.shapedTarget(sp), {
        rate: p.capacity,
        latencyCap: p.latencyCap,
        clock: this.clock,
      });
      this.#counted(1);
      this.#addSources(sp.egress, sp, ports);
    }
    for (const o of ports)
      if (o !== sp && o.egress) o.egress.setSource(sp.id, { weight: sp.qosWeight, min: sp.qosMin });
  }

  /** See Switch.shareEgress. */
  shareEgress(sp: SwitchPort, egress: QosEgress | undefined, tag: number, ports: Iterable<SwitchPort>): void {
    if (sp.egress) this.unshape(sp);
    if (egress === undefined) return;
    sp.egress = egress;
    sp.egressShared = true;
    sp.egressTag = tag;
    this.#counted(1);
    this.#addSources(egress, sp, ports);
  }

  /** The port leaves its shaped egress (closed unless shared). */
  unshape(sp: SwitchPort): void {
    if (!sp.egressShared) sp.egress?.close();
    sp.egress = undefined;
    sp.egressShared = false;
    this.#counted(-1);
  }

  #addSources(egress: QosEgress, sp: SwitchPort, ports: Iterable<SwitchPort>): void {
    for (const o of ports) if (o !== sp) egress.setSource(o.id, { weight: o.qosWeight, min: o.qosMin });
  }
}
