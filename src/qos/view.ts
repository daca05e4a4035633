/** The JSON of `GET /v1/qos` and `POST /v1/ports/:name/qos` (docs/api.md); rates in bits per second. */

/** One (source port, class) flow on a shaped port, as `qos show` lists it. */
export interface QosFlowView {
  source: string;
  class: string;
  /** DWRR weight (source weight times class weight); the latency class is strict priority instead. */
  weight: number | 'strict';
  /** The source's reservation on this port, bits/s (0: none). */
  min: number;
  /** Measured over the last second, bits/s. */
  rate: number;
  frames: number;
  bytes: number;
  drops: number;
  queued: number;
}

/** A port in `GET /v1/qos`. */
export interface QosPortView {
  name: string;
  /** The policy in force, rates as written (`200mbit`); empty when none. */
  policy: Record<string, string | number | boolean>;
  /** Measured over the last second, bits/s. */
  rx_rate: number;
  tx_rate: number;
  drops: { police: number; queue_full: number };
  /** The shaped egress, when the port has a capacity. */
  egress?: { capacity: number; latency_cap: number; reserved: number; flows: QosFlowView[] };
}

/** An overlay link with a QoS capacity in `GET /v1/qos`: one shaped egress for all the networks it carries. */
export interface QosLinkView {
  name: string;
  /** The policy in force, rates as written (`100mbit`). */
  policy: Record<string, string | number | boolean>;
  /** Networks the link carries, or may carry (admission counts their ports' reservations). */
  networks: string[];
  /** Sent over the last second, bits/s. */
  tx_rate: number;
  egress: { capacity: number; latency_cap: number; reserved: number; flows: QosFlowView[] };
}

export interface QosView {
  ports: QosPortView[];
  /** Overlay links with a capacity (`links[].qos`). */
  links?: QosLinkView[];
}
