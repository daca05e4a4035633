/**
 * Typed client for the daemon's control API (docs/api.md): HTTP/1.1 + JSON
 * over the daemon's unix socket. Used by the `vmlink` command and by tests.
 *
 * Every failure is a {@link VmlinkError}: {@link ApiError} when the daemon
 * answered with an error body, {@link DaemonUnreachableError} when nothing
 * answers on the socket.
 */
import type { Readable } from 'node:stream';
import { Agent } from 'undici';
import { VmlinkError } from '../errors.js';
import type { LinkView, ListenerView } from '../net/overlay/overlay.js';
import type { QosPortView, QosView } from '../qos/view.js';
import type { AdmissionStatus } from '../util/admission.js';
import type {
  ClusterTokenView,
  ClusterView,
  DiskArgsView,
  ExportBody,
  ExportView,
  FdbEntryView,
  LibvirtXmlView,
  NetworkBody,
  NetworkView,
  OverviewScope,
  OverviewView,
  PortBody,
  PortView,
  QemuArgsView,
  ReloadView,
  StatusView,
} from './views.js';

export type {
  ClusterHostView,
  ClusterTokenView,
  ClusterView,
  CountersView,
  DiskArgsView,
  ExportBody,
  ExportView,
  FdbEntryView,
  HttpStatusView,
  LibvirtXmlView,
  NetworkBody,
  NetworkView,
  OverviewExport,
  OverviewHost,
  OverviewLink,
  OverviewPort,
  OverviewScope,
  OverviewView,
  PortBody,
  PortView,
  ProcessStatusView,
  QemuArgsView,
  ReloadView,
  Source,
  StatusView,
  StorageStatusView,
} from './views.js';
export type { AdmissionStatus, LinkView, ListenerView, QosView };

/** Default control socket, also the default of `vmlink daemon`. */
export const DEFAULT_CONTROL = '/run/vmlink/vmlink.sock';

/** One problem with a request body: the field path and what is wrong. */
export interface ApiProblem {
  /** Dotted field path, e.g. `trunk.vlans.10`; empty for the body itself. */
  path: string;
  message: string;
}

/** The daemon refused a request: its `{ error: { code, message, problems } }` body and the HTTP status. */
export class ApiError extends VmlinkError {
  /** HTTP status of the answer (400, 404, 409, 422, 500). */
  override readonly status: number;
  /** Validation problems (400 `ERR_CONFIG_INVALID`); empty otherwise. */
  readonly problems: ApiProblem[];

  constructor(status: number, code: string, message: string, problems: ApiProblem[] = []) {
    super(code, message);
    this.status = status;
    this.problems = problems;
  }
}

/** Nothing answers on the control socket (daemon not running, wrong path, no permission). */
export class DaemonUnreachableError extends VmlinkError {
  override readonly status = 503;
  /** The control socket path that was tried. */
  readonly socketPath: string;
  /** The system error code, e.g. `ENOENT`, `ECONNREFUSED`, `EACCES`. */
  readonly reason: string;

  constructor(socketPath: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_DAEMON_UNREACHABLE',
      `cannot reach the vmlink daemon at ${socketPath} (${reason}): is it running? start it with: vmlink daemon --config FILE; ` +
        `if it runs on another control socket (its host.control), name that socket with --control PATH or VMLINK_CONTROL=PATH`,
      options,
    );
    this.socketPath = socketPath;
    this.reason = reason;
  }
}

/** The daemon accepted the connection but did not answer in time. */
export class DaemonTimeoutError extends VmlinkError {
  override readonly status = 503;
  constructor(socketPath: string, what: string, ms: number, options?: ErrorOptions) {
    super(
      'ERR_DAEMON_TIMEOUT',
      `the vmlink daemon at ${socketPath} did not answer ${what} within ${ms / 1000}s; check its log`,
      options,
    );
  }
}

export interface ControlClientOptions {
  /** Control socket path; default {@link DEFAULT_CONTROL}. */
  socketPath?: string;
  /** Milliseconds to wait for an answer's headers; default 30000. */
  timeoutMs?: number;
}

/** System error codes that mean "no daemon there". */
const UNREACHABLE_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK', 'ECONNRESET', 'EPERM']);

/** The system error code behind an undici/net failure, looking through `cause`s. */
function systemCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) return code;
  }
  return undefined;
}

/** Reads an error body into an ApiError; tolerates bodies that are not the documented shape. */
function apiErrorFrom(status: number, text: string): ApiError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const e = (parsed as { error?: { code?: unknown; message?: unknown; problems?: unknown } } | undefined)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    const problems = Array.isArray(e.problems)
      ? e.problems.map((p: { path?: unknown; message?: unknown }) => ({
          path: typeof p?.path === 'string' ? p.path : '',
          message: typeof p?.message === 'string' ? p.message : JSON.stringify(p),
        }))
      : [];
    return new ApiError(status, e.code, e.message, problems);
  }
  const snippet = text.length > 200 ? `${text.slice(0, 200)}...` : text;
  return new ApiError(status, 'ERR_API_RESPONSE', `the daemon answered HTTP ${status}: ${snippet || '(empty body)'}`);
}

export interface CaptureOptions {
  /** Stop after this many frames (the daemon ends the stream). */
  count?: number;
  /** Aborting ends the capture (the stream then ends with an AbortError). */
  signal?: AbortSignal;
}

/** Client for one daemon. Call {@link close} when done (it keeps a connection pool). */
export class ControlClient {
  /** The control socket this client talks to. */
  readonly socketPath: string;
  readonly #agent: Agent;
  readonly #timeoutMs: number;

  constructor(opts: ControlClientOptions = {}) {
    this.socketPath = opts.socketPath ?? DEFAULT_CONTROL;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#agent = new Agent({ connect: { socketPath: this.socketPath } });
  }

  /** `GET /v1/status`. */
  status(): Promise<StatusView> {
    return this.#json('GET', '/v1/status');
  }

  /** `POST /v1/reload`: re-reads the daemon's config file and reconciles toward it; rejects (ERR_CONFIG_INVALID, ERR_RELOAD_REFUSED) with nothing changed. */
  async reload(): Promise<ReloadView> {
    return (await this.#json<{ reload: ReloadView }>('POST', '/v1/reload')).reload;
  }

  /** `GET /v1/cluster`: the fabric as this daemon sees it (or `mode: single`). */
  async cluster(): Promise<ClusterView> {
    return (await this.#json<{ cluster: ClusterView }>('GET', '/v1/cluster')).cluster;
  }

  /** `POST /v1/cluster/init`: this host starts a fabric in etcd; its stored state moves there. */
  async clusterInit(body: Record<string, unknown>): Promise<ClusterView> {
    return (await this.#json<{ cluster: ClusterView }>('POST', '/v1/cluster/init', body)).cluster;
  }

  /** `POST /v1/cluster/token`: a short-lived, single-use join token. */
  async clusterToken(body: { ttl_sec?: number; rejoin?: string }): Promise<ClusterTokenView> {
    return (await this.#json<{ token: ClusterTokenView }>('POST', '/v1/cluster/token', body)).token;
  }

  /** `POST /v1/cluster/join`: this host joins the fabric the token names. */
  async clusterJoin(body: { token: string }): Promise<ClusterView> {
    return (await this.#json<{ cluster: ClusterView }>('POST', '/v1/cluster/join', body)).cluster;
  }

  /** `GET /v1/networks`. */
  async listNetworks(): Promise<NetworkView[]> {
    return (await this.#json<{ networks: NetworkView[] }>('GET', '/v1/networks')).networks;
  }

  /** `POST /v1/networks`; resolves with the created network. */
  async createNetwork(body: NetworkBody): Promise<NetworkView> {
    return (await this.#json<{ network: NetworkView }>('POST', '/v1/networks', body)).network;
  }

  /** `DELETE /v1/networks/:name`. */
  async deleteNetwork(name: string): Promise<void> {
    await this.#json('DELETE', `/v1/networks/${encodeURIComponent(name)}`);
  }

  /** `GET /v1/ports`. */
  async listPorts(): Promise<PortView[]> {
    return (await this.#json<{ ports: PortView[] }>('GET', '/v1/ports')).ports;
  }

  /** `GET /v1/ports/:name`. */
  async getPort(name: string): Promise<PortView> {
    return (await this.#json<{ port: PortView }>('GET', `/v1/ports/${encodeURIComponent(name)}`)).port;
  }

  /** `POST /v1/ports`; resolves with the port, already opened (listening or dialling). */
  async addPort(body: PortBody): Promise<PortView> {
    return (await this.#json<{ port: PortView }>('POST', '/v1/ports', body)).port;
  }

  /** `DELETE /v1/ports/:name`. */
  async deletePort(name: string): Promise<void> {
    await this.#json('DELETE', `/v1/ports/${encodeURIComponent(name)}`);
  }

  /** `GET /v1/exports`. */
  async listExports(): Promise<ExportView[]> {
    return (await this.#json<{ exports: ExportView[] }>('GET', '/v1/exports')).exports;
  }

  /** `GET /v1/exports/:name`. */
  async getExport(name: string): Promise<ExportView> {
    return (await this.#json<{ export: ExportView }>('GET', `/v1/exports/${encodeURIComponent(name)}`)).export;
  }

  /** `POST /v1/exports`; resolves with the export, already served. */
  async addExport(body: ExportBody): Promise<ExportView> {
    return (await this.#json<{ export: ExportView }>('POST', '/v1/exports', body)).export;
  }

  /** `GET /v1/exports/:name/libvirt-xml`: the `<disk>`; `id` the alias `ua-ID`, `dev` the virtio target (default vda). */
  exportLibvirtXml(name: string, id?: string, dev?: string): Promise<LibvirtXmlView> {
    const q = new URLSearchParams();
    if (id !== undefined) q.set('id', id);
    if (dev !== undefined) q.set('dev', dev);
    const qs = q.size > 0 ? `?${q}` : '';
    return this.#json('GET', `/v1/exports/${encodeURIComponent(name)}/libvirt-xml${qs}`);
  }

  /** `DELETE /v1/exports/:name`. */
  async deleteExport(name: string): Promise<void> {
    await this.#json('DELETE', `/v1/exports/${encodeURIComponent(name)}`);
  }

  /** `GET /v1/exports/:name/disk-args`; `id` is the QEMU node and device id (default: from the export name). */
  diskArgs(name: string, id?: string): Promise<DiskArgsView> {
    const q = id === undefined ? '' : `?id=${encodeURIComponent(id)}`;
    return this.#json('GET', `/v1/exports/${encodeURIComponent(name)}/disk-args${q}`);
  }

  /** `GET /v1/fdb`, optionally of one network. */
  /** `GET /v1/links`. */
  async listLinks(): Promise<LinkView[]> {
    return (await this.linkList()).links;
  }

  /** `GET /v1/links` whole: the links and the link listener (absent from an older daemon). */
  linkList(): Promise<{ links: LinkView[]; listener?: ListenerView }> {
    return this.#json('GET', '/v1/links');
  }

  /** `POST /v1/links`. */
  async addLink(body: { name: string; connect: string; qos?: Record<string, unknown> }): Promise<LinkView> {
    return (await this.#json<{ link: LinkView }>('POST', '/v1/links', body)).link;
  }

  /** `POST /v1/links/:name/qos` with a policy, or `DELETE` with undefined (the link is unshaped). */
  async setLinkQos(name: string, qos: Record<string, unknown> | undefined): Promise<LinkView> {
    const path = `/v1/links/${encodeURIComponent(name)}/qos`;
    return (await this.#json<{ link: LinkView }>(qos ? 'POST' : 'DELETE', path, qos)).link;
  }

  /** `DELETE /v1/links/:name`. */
  async deleteLink(name: string): Promise<void> {
    await this.#json('DELETE', `/v1/links/${encodeURIComponent(name)}`);
  }

  async fdb(network?: string): Promise<FdbEntryView[]> {
    const q = network === undefined ? '' : `?network=${encodeURIComponent(network)}`;
    return (await this.#json<{ entries: FdbEntryView[] }>('GET', `/v1/fdb${q}`)).entries;
  }

  /** `GET /v1/overview`: the dashboard's one answer; `scope` default: the fabric on a member, this host otherwise. */
  overview(scope?: OverviewScope): Promise<OverviewView> {
    return this.#json('GET', `/v1/overview${scope ? `?scope=${scope}` : ''}`);
  }

  /** `GET /v1/qos`: per port and class, configured versus measured rates and drops. */
  qos(): Promise<QosView> {
    return this.#json('GET', '/v1/qos');
  }

  /** `POST /v1/ports/:name/qos`: resolves with the port's QoS once admitted; rejects (ERR_QOS_ADMISSION, ...) with nothing changed. */
  async qosRequest(port: string, body: Record<string, unknown>): Promise<QosPortView> {
    return (await this.#json<{ port: QosPortView }>('POST', `/v1/ports/${encodeURIComponent(port)}/qos`, body)).port;
  }

  /** `GET /v1/ports/:name/libvirt-xml`: the `<interface>`; `id` is the device alias `ua-ID` (default: the port name). */
  portLibvirtXml(port: string, id?: string): Promise<LibvirtXmlView> {
    const q = id === undefined ? '' : `?id=${encodeURIComponent(id)}`;
    return this.#json('GET', `/v1/ports/${encodeURIComponent(port)}/libvirt-xml${q}`);
  }

  /** `GET /v1/ports/:name/qemu-args`; `id` is the netdev id (default: the port name). */
  qemuArgs(port: string, id?: string): Promise<QemuArgsView> {
    const q = id === undefined ? '' : `?id=${encodeURIComponent(id)}`;
    return this.#json('GET', `/v1/ports/${encodeURIComponent(port)}/qemu-args${q}`);
  }

  /**
   * `GET /v1/ports/:name/capture`: resolves, once the daemon accepted, with the
   * pcap stream (both directions). The stream is not buffered: read it at your pace.
   */
  async capture(port: string, opts: CaptureOptions = {}): Promise<Readable> {
    const q = opts.count === undefined ? '' : `?count=${opts.count}`;
    const res = await this.#request('GET', `/v1/ports/${encodeURIComponent(port)}/capture${q}`, undefined, {
      signal: opts.signal,
      // A quiet port sends nothing for a long time: no body timeout.
      bodyTimeout: 0,
    });
    if (res.statusCode >= 400) throw apiErrorFrom(res.statusCode, await res.body.text());
    return res.body;
  }

  /** Closes the connection pool. Idempotent. */
  async close(): Promise<void> {
    if (!this.#agent.closed) await this.#agent.close();
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.#request(method, path, body);
    const text = await res.body.text();
    if (res.statusCode >= 400) throw apiErrorFrom(res.statusCode, text);
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(res.statusCode, 'ERR_API_RESPONSE', `the daemon answered ${method} ${path} with invalid JSON`);
    }
  }

  async #request(
    method: string,
    path: string,
    body: unknown,
    extra: { signal?: AbortSignal | undefined; bodyTimeout?: number } = {},
  ) {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await this.#agent.request({
        origin: 'http://vmlink',
        path,
        method: method as 'GET',
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        headersTimeout: this.#timeoutMs,
        bodyTimeout: extra.bodyTimeout ?? this.#timeoutMs,
        signal: extra.signal ?? null,
      });
    } catch (err) {
      const code = systemCode(err);
      if (code) throw new DaemonUnreachableError(this.socketPath, code, { cause: err });
      if ((err as { code?: unknown }).code === 'UND_ERR_HEADERS_TIMEOUT') {
        throw new DaemonTimeoutError(this.socketPath, `${method} ${path}`, this.#timeoutMs, { cause: err });
      }
      throw err;
    }
  }
}
