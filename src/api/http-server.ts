/**
 * The read-only HTTP endpoint (`http:` in the config, docs/observe.md): off
 * unless configured. It serves what the other parts register on it
 * (Prometheus metrics, the event stream, the web dashboard) and the read-only
 * views of the control API (read-routes.ts). Any request that would change
 * something is refused with 405: changes go only through the control socket.
 *
 * A listener that cannot bind is logged and reported in `GET /v1/status`
 * (`http.reason`); the daemon keeps running without it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fastify, { type FastifyInstance } from 'fastify';
import type { HttpConfig } from '../config/http-schema.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatAddress } from '../util/address.js';
import type { ControlBackend } from './backend.js';
import { HttpReadOnlyError, RouteNotFoundError } from './errors.js';
import { registerReadRoutes } from './read-routes.js';
import { errorReply } from './server.js';
import type { HttpStatusView } from './views.js';

/** Adds routes to the HTTP endpoint (metrics, events, the dashboard). */
export type HttpRoutes = (app: FastifyInstance) => void;

export interface HttpServerOptions {
  config: HttpConfig;
  backend: ControlBackend;
  logger: Logger;
  /** Further routes, registered after the read-only views. */
  routes?: HttpRoutes[] | undefined;
}

export class HttpServer {
  readonly #config: HttpConfig;
  readonly #log: Logger;
  readonly #app: FastifyInstance;
  #server: Server | undefined;
  #bound: string | undefined;
  #reason: string | undefined;
  #closing: Promise<void> | undefined;

  constructor(opts: HttpServerOptions) {
    this.#config = opts.config;
    this.#log = opts.logger;
    this.#app = fastify({
      logger: false,
      serverFactory: (handler) => {
        this.#server = createServer({ connectionsCheckingInterval: 1000 }, handler);
        this.#server.headersTimeout = 10_000;
        this.#server.requestTimeout = 30_000;
        this.#server.maxConnections = opts.config.max_connections;
        return this.#server;
      },
    });
    const app = this.#app;
    app.addHook('onRequest', async (req) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpReadOnlyError(req.method, req.url);
    });
    app.setErrorHandler((err, req, reply) => {
      const { status, body } = errorReply(err);
      if (status >= 500) this.#log.error({ method: req.method, url: req.url, err }, body.error.message);
      return reply.code(status).type('application/json').send(body);
    });
    app.setNotFoundHandler((req, reply) => {
      const err = new RouteNotFoundError(req.method, req.url);
      return reply.code(err.status).send(errorReply(err).body);
    });
    registerReadRoutes(app, opts.backend);
    for (const r of opts.routes ?? []) r(app);
  }

  /** Starts listening; a failure is logged and shown in {@link status}, not thrown. */
  async listen(): Promise<void> {
    const at = this.#config.listen;
    try {
      await this.#app.ready();
      const server = this.#server as Server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: at.host, port: at.port }, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
      const a = server.address() as AddressInfo;
      this.#bound = formatAddress({ type: 'tcp', host: a.address, port: a.port });
      this.#reason = undefined;
      this.#log.info({ http: this.#bound }, 'HTTP endpoint listening (metrics, events, dashboard)');
    } catch (err) {
      this.#reason = `cannot listen on ${formatAddress(at)}: ${describeError(err)}`;
      this.#log.error({ err }, `${this.#reason}; fix http.listen in the config file and restart`);
    }
  }

  status(): HttpStatusView {
    return { listen: this.#bound ? [this.#bound] : [], ...(this.#reason ? { reason: this.#reason } : {}) };
  }

  /** Stops listening and drops open connections (event streams too). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const server = this.#server;
    if (server && this.#bound) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      this.#bound = undefined;
    }
    await this.#app.close();
  }
}
