/**
 * The control API server: HTTP/1.1 + JSON on a unix socket (docs/api.md).
 * It translates requests into {@link ControlBackend} calls and errors into
 * `{ error: { code, message, problems? } }` bodies with the documented status.
 *
 * The socket is created with mode 0600 (or `host.control_socket`) whatever
 * the umask, before any request can arrive (util/unix-socket.ts createUnixSocket); a stale socket file is removed, a live one (another
 * daemon answering) is refused.
 */
import { once } from 'node:events';
import { unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ConfigError } from '../config/errors.js';
import { describeError, VmlinkError } from '../errors.js';
import type { Logger } from '../log.js';
import { AdmissionGate, type AdmissionStatus, type AdmissionTicket, isRefusal } from '../util/admission.js';
import {
  claimUnixPath,
  createUnixSocket,
  resolveSocketAccess,
  type SocketAccessSpec,
  UnixPathError,
} from '../util/unix-socket.js';
import type { ControlBackend } from './backend.js';
import { PcapCapture } from './capture.js';
import {
  BadRequestError,
  ControlInUseError,
  ControlPathError,
  ControlSocketError,
  RouteNotFoundError,
} from './errors.js';
import { nameParam, queryParam, registerReadRoutes } from './read-routes.js';

export interface ApiServerOptions {
  backend: ControlBackend;
  logger: Logger;
  /** Unix socket path (absolute). */
  path: string;
  /**
   * Connections at once; when full, the oldest one that has not sent a whole
   * request yet is closed for the new one (docs/api.md "Admission"); default 64.
   */
  maxConnections?: number | undefined;
  /** A connection must send its first request's headers within this many ms (later ones too); default 10000. */
  headersTimeoutMs?: number | undefined;
  /** Mode, owner and group of the socket (`host.control_socket`); default mode 0600. */
  socket?: SocketAccessSpec | undefined;
}

export interface ErrorBody {
  error: { code: string; message: string; problems?: { path: string; message: string }[] };
}

/** The status and body answering `err`. */
export function errorReply(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof ConfigError) {
    return { status: err.status, body: { error: { code: err.code, message: err.message, problems: err.problems } } };
  }
  // Each error declares its own status (src/errors.ts VmlinkError.status).
  if (err instanceof VmlinkError)
    return { status: err.status, body: { error: { code: err.code, message: err.message } } };
  // fastify's own client errors (bad JSON, wrong content type, body too large) keep their 4xx status.
  const status = (err as { statusCode?: unknown }).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status, body: { error: { code: 'ERR_BAD_REQUEST', message: describeError(err) } } };
  }
  return { status: 500, body: { error: { code: 'ERR_INTERNAL', message: describeError(err) } } };
}

function countParam(req: FastifyRequest): number | undefined {
  const text = queryParam(req, 'count');
  if (text === undefined) return undefined;
  const n = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= 2 ** 32 - 1)) {
    throw new BadRequestError(`count must be a whole number of frames from 1 to 4294967295, not "${text}"`);
  }
  return n;
}

const NETDEV_ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;
const DISK_DEV_RE = /^vd[a-z]{1,3}$/;

/** `?id=` of the libvirt-xml views: a libvirt alias (`ua-` is prepended). */
function aliasParam(req: FastifyRequest): string | undefined {
  const id = queryParam(req, 'id');
  if (id !== undefined && !NETDEV_ID_RE.test(id))
    throw new BadRequestError(
      `id "${id}" is not a valid device alias: start with a letter, then letters, digits, '_', '.', '-' (at most 128)`,
    );
  return id;
}

/** The control API on a unix socket. */
export class ApiServer {
  readonly path: string;
  readonly #socket: SocketAccessSpec | undefined;
  readonly #backend: ControlBackend;
  readonly #log: Logger;
  readonly #app: FastifyInstance;
  #server: Server | undefined;
  readonly #gate: AdmissionGate;
  #listening = false;
  #closing: Promise<void> | undefined;

  constructor(opts: ApiServerOptions) {
    this.path = opts.path;
    this.#socket = opts.socket;
    this.#backend = opts.backend;
    this.#log = opts.logger;
    const headersTimeoutMs = opts.headersTimeoutMs ?? 10_000;
    this.#app = fastify({
      logger: false,
      serverFactory: (handler) => {
        // Node checks headersTimeout on this interval (default 30 s): check often enough to keep to it.
        this.#server = createServer({ connectionsCheckingInterval: Math.min(1000, headersTimeoutMs) }, handler);
        return this.#server;
      },
    });
    this.#gate = new AdmissionGate({
      name: 'control API',
      logger: this.#log,
      limits: {
        maxConnections: 0,
        maxPerSource: 0,
        maxUnix: opts.maxConnections ?? 64,
        handshakeTimeoutMs: headersTimeoutMs,
      },
      fields: {
        listener_full: 'host.control_max_connections',
        evicted: 'host.control_max_connections',
        handshake_timeout: 'host.control_headers_timeout_ms',
      },
    });
    this.#routes(this.#app);
    this.#admit(this.#server as Server, headersTimeoutMs);
  }

  /** Connections now and refused since start (`GET /v1/status` `admission.control`). */
  admission(): AdmissionStatus {
    return this.#gate.status();
  }

  /**
   * Every connection takes a place in the admission budget until it closes;
   * it is pending until its first request's headers are read. Node's own
   * headersTimeout covers the requests after the first.
   */
  #admit(server: Server, headersTimeoutMs: number): void {
    server.headersTimeout = headersTimeoutMs;
    const tickets = new WeakMap<Socket, AdmissionTicket>();
    server.on('connection', (sock: Socket) => {
      const t = this.#gate.admit(undefined, () => sock.destroy());
      if (isRefusal(t)) {
        sock.destroy();
        return;
      }
      tickets.set(sock, t);
      sock.once('close', t.release);
    });
    server.on('request', (req: IncomingMessage) => tickets.get(req.socket)?.established());
  }

  /**
   * Makes sure the socket path is free: creates its directory, removes a stale
   * socket file, and refuses (ERR_CONTROL_IN_USE) when another daemon answers.
   * Call it before anything else claims resources, so a second daemon stops early.
   */
  async checkPath(): Promise<void> {
    const path = this.path;
    let removed: boolean;
    try {
      removed = await claimUnixPath(path);
    } catch (err) {
      if (!(err instanceof UnixPathError)) throw err;
      if (err.live) throw new ControlInUseError(path);
      throw new ControlPathError(path, err.reason, { cause: err });
    }
    if (removed) this.#log.info({ control: path }, 'removed a stale control socket');
  }

  /** Starts serving. The socket is mode 0600 before the first request can arrive. */
  async listen(): Promise<void> {
    await this.checkPath();
    await this.#app.ready();
    const server = this.#server as Server;
    const access = await resolveSocketAccess(this.#socket, 'host.control_socket').catch((err: unknown) => {
      throw err instanceof UnixPathError ? new ControlSocketError(this.path, err.reason, { cause: err }) : err;
    });
    try {
      const listen = async (at: string) => {
        server.listen(at);
        await once(server, 'listening');
      };
      await createUnixSocket(this.path, access, listen, () => void server.close());
    } catch (err) {
      if (err instanceof UnixPathError) throw new ControlSocketError(this.path, err.reason, { cause: err });
      throw new ControlPathError(this.path, describeError(err), { cause: err });
    }
    this.#listening = true;
    this.#log.info({ control: this.path }, 'control API listening');
  }

  /** Stops serving, drops open connections, removes the socket file. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#gate.close();
    const server = this.#server;
    if (server && this.#listening) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await unlink(this.path).catch(() => undefined);
    }
    await this.#app.close();
  }

  #routes(app: FastifyInstance): void {
    const b = this.#backend;
    const name = nameParam;

    app.setErrorHandler((err, req, reply) => this.#fail(err, req, reply));
    app.setNotFoundHandler((req, reply) => this.#fail(new RouteNotFoundError(req.method, req.url), req, reply));

    registerReadRoutes(app, b);
    app.post('/v1/reload', async () => ({ reload: await b.reload() }));
    app.post('/v1/cluster/init', async (req) => ({ cluster: await b.clusterInit(req.body) }));
    app.post('/v1/cluster/token', async (req, reply) =>
      reply.code(201).send({ token: await b.clusterToken(req.body ?? {}) }),
    );
    app.post('/v1/cluster/join', async (req) => ({ cluster: await b.clusterJoin(req.body) }));
    app.post('/v1/networks', async (req, reply) => reply.code(201).send({ network: await b.addNetwork(req.body) }));
    app.delete('/v1/networks/:name', async (req, reply) => {
      await b.deleteNetwork(name(req));
      return reply.code(204).send();
    });
    app.post('/v1/ports', async (req, reply) => reply.code(201).send({ port: await b.addPort(req.body) }));
    app.delete('/v1/ports/:name', async (req, reply) => {
      await b.deletePort(name(req));
      return reply.code(204).send();
    });
    app.post('/v1/exports', async (req, reply) => reply.code(201).send({ export: await b.addExport(req.body) }));
    app.delete('/v1/exports/:name', async (req, reply) => {
      await b.deleteExport(name(req));
      return reply.code(204).send();
    });
    app.get('/v1/exports/:name/disk-args', async (req) => {
      const id = queryParam(req, 'id');
      if (id !== undefined && !NETDEV_ID_RE.test(id)) {
        throw new BadRequestError(
          `id "${id}" is not a valid QEMU node id: start with a letter, then letters, digits, '_', '.', '-' (at most 128)`,
        );
      }
      return b.diskArgs(name(req), id);
    });
    app.post('/v1/ports/:name/qos', async (req) => ({ port: await b.qosRequest(name(req), req.body) }));
    app.post('/v1/links', async (req, reply) => reply.code(201).send({ link: await b.addLink(req.body) }));
    app.post('/v1/links/:name/qos', async (req) => ({ link: await b.setLinkQos(name(req), req.body ?? {}) }));
    app.delete('/v1/links/:name/qos', async (req) => ({ link: await b.setLinkQos(name(req), undefined) }));
    app.delete('/v1/links/:name', async (req, reply) => {
      await b.deleteLink(name(req));
      return reply.code(204).send();
    });
    app.get('/v1/ports/:name/qemu-args', async (req) => {
      const id = queryParam(req, 'id');
      if (id !== undefined && !NETDEV_ID_RE.test(id)) {
        throw new BadRequestError(
          `id "${id}" is not a valid QEMU netdev id: start with a letter, then letters, digits, '_', '.', '-' (at most 128)`,
        );
      }
      return b.qemuArgs(name(req), id);
    });
    app.get('/v1/ports/:name/libvirt-xml', async (req) => b.portLibvirtXml(name(req), aliasParam(req)));
    app.get('/v1/exports/:name/libvirt-xml', async (req) => {
      const dev = queryParam(req, 'dev');
      if (dev !== undefined && !DISK_DEV_RE.test(dev))
        throw new BadRequestError(`dev "${dev}" is not a virtio disk name like vda or vdb`);
      return b.exportLibvirtXml(name(req), aliasParam(req), dev);
    });
    app.get('/v1/ports/:name/capture', async (req, reply) => {
      const port = name(req);
      const count = countParam(req);
      const cap = new PcapCapture(reply.raw, { port, count, logger: this.#log });
      const detach = b.capture(port, cap); // throws (404) before anything is sent
      reply.hijack();
      cap.start(detach);
      this.#log.info({ port, count }, 'capture started');
      return reply;
    });
  }

  /** Answers a failed request: one log line, the documented status and error body. */
  #fail(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
    const { status, body } = errorReply(err);
    const fields = { method: req.method, url: req.url, status, code: body.error.code };
    if (status >= 500) this.#log.error({ ...fields, err }, body.error.message);
    else this.#log.warn(fields, body.error.message);
    return reply.code(status).type('application/json').send(body);
  }
}
