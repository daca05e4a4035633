/**
 * What the control API serves: the daemon's backend (daemon/backend.ts)
 * implements {@link ControlBackend} and the HTTP server (server.ts) only translates. The view types are the
 * JSON bodies of docs/api.md, shared with the client (client.ts).
 */

import type { LinkView, ListenerView } from '../net/overlay/overlay.js';
import type { FdbRow, FrameTap } from '../net/switch/switch.js';
import type { QosPortView, QosView } from '../qos/view.js';
import type {
  ClusterTokenView,
  ClusterView,
  DiskArgsView,
  ExportView,
  HttpStatusView,
  LibvirtXmlView,
  NetworkView,
  OverviewScope,
  OverviewView,
  PortView,
  QemuArgsView,
  ReloadView,
  StatusView,
} from './client.js';

export type {
  ClusterTokenView,
  ClusterView,
  DiskArgsView,
  ExportView,
  HttpStatusView,
  LibvirtXmlView,
  NetworkView,
  OverviewScope,
  OverviewView,
  PortView,
  QemuArgsView,
  ReloadView,
  StatusView,
};

/** A port as the API shows it: the client's view plus the reason of the last state change. */
export type PortViewOut = PortView & {
  /** Why the port is in its state, e.g. `listening on unix:/run/vm1.sock` or the error that kept it down. */
  reason: string;
};

/** A capture tap: sees every frame of a port, and is told when the port goes away. */
export interface CaptureTap extends FrameTap {
  /** The port was deleted or the daemon is stopping: finish the capture. Called at most once. */
  end(reason: string): void;
}

export interface ControlBackend {
  /** `GET /v1/status`. */
  status(): StatusView;
  /** `POST /v1/reload`: re-reads the config file and reconciles toward it; refused with nothing changed when it is bad. */
  reload(): Promise<ReloadView>;
  /** `GET /v1/cluster`: the fabric as this daemon sees it. */
  cluster(): Promise<ClusterView>;
  /** `POST /v1/cluster/init`: this host starts a fabric in etcd. */
  clusterInit(body: unknown): Promise<ClusterView>;
  /** `POST /v1/cluster/token`: a short-lived single-use join token. */
  clusterToken(body: unknown): Promise<ClusterTokenView>;
  /** `POST /v1/cluster/join`: this host joins the fabric of a token. */
  clusterJoin(body: unknown): Promise<ClusterView>;
  /** `GET /v1/networks`. */
  networks(): NetworkView[];
  /** `GET /v1/overview`: ports, links, exports and hosts in one answer; default scope: the fabric on a member, else this host. */
  overview(scope?: OverviewScope): Promise<OverviewView>;
  /** `POST /v1/networks`: validates, creates, persists. */
  addNetwork(body: unknown): Promise<NetworkView>;
  /** `DELETE /v1/networks/:name`. */
  deleteNetwork(name: string): Promise<void>;
  /** `GET /v1/ports`. */
  ports(): PortViewOut[];
  /** `GET /v1/ports/:name`. */
  port(name: string): PortViewOut;
  /** `POST /v1/ports`: validates, creates, opens, persists; nothing changes when the port cannot open. */
  addPort(body: unknown): Promise<PortViewOut>;
  /** `DELETE /v1/ports/:name`. */
  deletePort(name: string): Promise<void>;
  /** `GET /v1/fdb`. */
  fdb(network?: string): (FdbRow & { host?: string; seq?: number })[];
  /** `GET /v1/ports/:name/qemu-args`; `id` is the netdev id (default the port name). */
  qemuArgs(name: string, id?: string): QemuArgsView;
  /** `GET /v1/ports/:name/libvirt-xml`: the `<interface>`; `id` is the device alias `ua-ID` (default the port name). */
  portLibvirtXml(name: string, id?: string): LibvirtXmlView;
  /** `GET /v1/exports`. */
  exports(): ExportView[];
  /** `GET /v1/exports/:name`. */
  export(name: string): ExportView;
  /** `POST /v1/exports`: validates, opens the backend, serves, persists; nothing changes when the backend cannot open. */
  addExport(body: unknown): Promise<ExportView>;
  /** `DELETE /v1/exports/:name`. */
  deleteExport(name: string): Promise<void>;
  /** `GET /v1/exports/:name/disk-args`; `id` is the QEMU node/device id (default from the export name). */
  diskArgs(name: string, id?: string): DiskArgsView;
  /** `GET /v1/exports/:name/libvirt-xml`: the `<disk>`; `id` as for diskArgs (alias `ua-ID`), `dev` the target (default vda). */
  exportLibvirtXml(name: string, id?: string, dev?: string): LibvirtXmlView;
  /** `GET /v1/qos`: per port and class, configured versus measured rates and drops. */
  qos(): QosView;
  /** `POST /v1/ports/:name/qos`: admits and applies the request, or refuses it with nothing changed. */
  qosRequest(name: string, body: unknown): Promise<QosPortView>;
  /** `GET /v1/links`: every link with state, RTT, throughput and drops. */
  links(): LinkView[];
  /** The link listener (`GET /v1/links` and `GET /v1/status`): up, down with the reason, or off. */
  linkListener(): ListenerView;
  /** `GET /v1/links/:name`. */
  link(name: string): LinkView;
  /** `POST /v1/links`: validates and starts dialling (until the daemon stops). */
  addLink(body: unknown): Promise<LinkView>;
  /** `POST /v1/links/:name/qos` (a `{ capacity, latency_cap?, burst? }`) and `DELETE` (undefined): admitted and applied, or refused. */
  setLinkQos(name: string, body: unknown): Promise<LinkView>;
  /** `DELETE /v1/links/:name`: closes the link. */
  deleteLink(name: string): Promise<void>;
  /** Attaches a capture tap to a port; returns the function that detaches it. Throws when the port does not exist. */
  capture(name: string, tap: CaptureTap): () => void;
}
