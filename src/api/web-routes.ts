/**
 * The web dashboard on the HTTP endpoint (docs/observe.md "The web
 * dashboard"): the files `npm run build` bundles from web/ into dist/web,
 * served at `/` with @fastify/static. Nothing is fetched from elsewhere (no
 * CDN, no external fonts); the Content-Security-Policy says so to the browser.
 *
 * Without a build (a checkout where only tsc ran), `/` answers 503 with a page
 * naming the command that builds it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyReply } from 'fastify';
import type { HttpRoutes } from './http-server.js';

/** dist/web: where `npm run build` puts the bundle (this file runs as dist/src/api/web-routes.js). */
export const WEB_ROOT = fileURLToPath(new URL('../../web', import.meta.url));

/** Only this origin: scripts, styles, fetches; inline styles for Preact's style props. */
const CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

const MISSING = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vmlink: dashboard not built</title></head>
<body><h1>The vmlink dashboard is not built</h1>
<p>This daemon serves the dashboard from <code>ROOT</code>, which has no <code>index.html</code>.
Build it in the vmlink checkout with <code>npm run build</code> (it bundles <code>web/</code> into
<code>dist/web</code>) and reload this page; the daemon need not be restarted.</p>
<p>The read-only API answers meanwhile: <a href="v1/status">/v1/status</a>, <a href="v1/overview">/v1/overview</a>.</p>
</body></html>
`;

function security(reply: FastifyReply): void {
  reply.header('content-security-policy', CSP);
  reply.header('x-content-type-options', 'nosniff');
}

/** Serves the built dashboard in `root` (dist/web) at `/`. */
export function webRoutes(root: string): HttpRoutes {
  const index = join(root, 'index.html');
  return (app) => {
    app.get('/', async (_req, reply) => {
      security(reply);
      if (!existsSync(index)) {
        return reply
          .code(503)
          .header('cache-control', 'no-store')
          .type('text/html; charset=utf-8')
          .send(MISSING.replace('ROOT', root));
      }
      reply.header('cache-control', 'no-cache');
      return reply.sendFile('index.html');
    });
    app.register(fastifyStatic, {
      root,
      prefix: '/',
      index: false,
      // A checkout without a build is answered by `/` above; no warning at start.
      suppressWarning: true,
      cacheControl: false,
      setHeaders: (reply) => {
        security(reply);
        reply.header('cache-control', 'no-cache');
      },
    });
  };
}
