/**
 * The web dashboard's files on the HTTP endpoint (src/api/web-routes.ts): the
 * build in dist/web at `/` with a same-origin-only Content-Security-Policy, a
 * 503 page naming the build command when there is no build, and the JSON 404
 * of the endpoint for anything else.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fastify from 'fastify';
import { request } from 'undici';
import { WEB_ROOT, webRoutes } from '../../src/api/web-routes.js';
import { startDaemon, stopDaemon, tempDirs, twoPortConfig } from '../helpers/api-daemon.js';

const newDir = await tempDirs('vmlink-web-');

describe('the dashboard files', () => {
  it('are built by npm run build into dist/web', () => {
    for (const f of ['index.html', 'app.js', 'app.css']) assert.ok(existsSync(join(WEB_ROOT, f)), f);
  });

  it('are served by the HTTP endpoint at / with a same-origin-only content security policy', async () => {
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: 'tcp:127.0.0.1:0' } }, dir);
    after(() => stopDaemon(r));
    const base = `http://${String((await r.client.status()).http?.listen[0]).slice(4)}`;
    const index = await request(`${base}/`);
    const html = await index.body.text();
    assert.equal(index.statusCode, 200);
    assert.match(String(index.headers['content-type']), /^text\/html/);
    assert.match(String(index.headers['content-security-policy']), /default-src 'self'/);
    assert.match(html, /<script type="module" src="app\.js">/);
    assert.doesNotMatch(html, /https?:\/\//, 'nothing is loaded from elsewhere');
    const js = await request(`${base}/app.js`);
    const code = await js.body.text();
    assert.equal(js.statusCode, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    assert.match(String(js.headers['content-security-policy']), /default-src 'self'/);
    assert.ok(code.includes('v1/overview'), 'the bundle polls the overview');
    const css = await request(`${base}/app.css`);
    await css.body.text();
    assert.equal(css.statusCode, 200);
    assert.match(String(css.headers['content-type']), /^text\/css/);
    const missing = await request(`${base}/no-such-file.js`);
    const body = (await missing.body.json()) as { error: { code: string } };
    assert.equal(missing.statusCode, 404);
    assert.equal(body.error.code, 'ERR_ROUTE_NOT_FOUND');
    const ports = await request(`${base}/v1/ports`);
    assert.equal(ports.statusCode, 200, 'the API routes still answer');
    await ports.body.text();
  });

  it('answer 503 with a page naming the build command when the dashboard is not built', async () => {
    const app = fastify();
    after(() => app.close());
    webRoutes(join(newDir(), 'web'))(app);
    const res = await app.inject({ method: 'GET', url: '/' });
    assert.equal(res.statusCode, 503);
    assert.match(res.headers['content-type'] as string, /^text\/html/);
    assert.match(res.body, /npm run build/);
    assert.match(res.body, /not built/);
  });
});
