/**
 * The read-only views of the control API (docs/api.md), registered on both
 * the control socket's server (server.ts) and the HTTP endpoint
 * (http-server.ts): status, cluster, networks, ports, exports, QoS, links and
 * the FDB. Nothing here changes state.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ControlBackend } from './backend.js';
import { BadRequestError } from './errors.js';
import type { OverviewScope } from './views.js';

/** A single string query parameter, or undefined; repeated parameters are refused. */
export function queryParam(req: FastifyRequest, key: string): string | undefined {
  const v = (req.query as Record<string, unknown>)[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new BadRequestError(`query parameter "${key}" must be given once`);
  return v;
}

/** The route's `:name` parameter. */
export const nameParam = (req: FastifyRequest): string => (req.params as { name: string }).name;

/** Registers the read-only GET views of `b` on `app`. */
export function registerReadRoutes(app: FastifyInstance, b: ControlBackend): void {
  app.get('/v1/status', async () => b.status());
  app.get('/v1/cluster', async () => ({ cluster: await b.cluster() }));
  app.get('/v1/networks', async () => ({ networks: b.networks() }));
  app.get('/v1/ports', async () => ({ ports: b.ports() }));
  app.get('/v1/ports/:name', async (req) => ({ port: b.port(nameParam(req)) }));
  app.get('/v1/exports', async () => ({ exports: b.exports() }));
  app.get('/v1/exports/:name', async (req) => ({ export: b.export(nameParam(req)) }));
  app.get('/v1/qos', async () => b.qos());
  app.get('/v1/links', async () => ({ links: b.links(), listener: b.linkListener() }));
  app.get('/v1/links/:name', async (req) => ({ link: b.link(nameParam(req)) }));
  app.get('/v1/overview', async (req) => b.overview(parseScope(queryParam(req, 'scope'))));
  app.get('/v1/fdb', async (req) => ({ entries: b.fdb(queryParam(req, 'network')) }));
}

/** The `scope` query parameter of `GET /v1/overview`: absent, `host` or `fabric`; anything else is a 400. */
function parseScope(v: string | undefined): OverviewScope | undefined {
  if (v === undefined || v === 'host' || v === 'fabric') return v;
  throw new BadRequestError(`scope must be "host" or "fabric", not ${JSON.stringify(v)}`);
}
