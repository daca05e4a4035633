/**
 * The read-only HTTP endpoint (`http:`): off unless configured; serves the
 * control API's read-only views; refuses anything that changes state; a
 * listener that cannot bind leaves the daemon up with the reason in status.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { formatStatus } from '../../src/cli/network.js';
import { startDaemon, stopDaemon, tempDirs, twoPortConfig } from '../helpers/api-daemon.js';

const newDir = await tempDirs('vmlink-http-');

async function get(base: string, path: string, method = 'GET'): Promise<{ status: number; json: unknown }> {
  const res = await request(`${base}${path}`, { method: method as 'GET' });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : undefined };
}

describe('the HTTP endpoint', () => {
  it('is off when the config has no http section', async () => {
    const dir = newDir();
    const r = await startDaemon(twoPortConfig(dir), dir);
    after(() => stopDaemon(r));
    const st = await r.client.status();
    assert.equal(st.http, undefined);
  });

  it('serves the read-only views on the configured address and shows it in status', async () => {
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: 'tcp:127.0.0.1:0' } }, dir);
    after(() => stopDaemon(r));
    const st = await r.client.status();
    const at = st.http?.listen[0];
    assert.match(at ?? '', /^tcp:127\.0\.0\.1:\d+$/);
    const base = `http://${(at as string).slice(4)}`;
    const ports = await get(base, '/v1/ports');
    assert.equal(ports.status, 200);
    assert.deepEqual(
      (ports.json as { ports: { name: string }[] }).ports.map((p) => p.name),
      ['a', 'b'],
    );
    assert.match(formatStatus(st), new RegExp(`http +${base.replace(/\./g, '\\.')}/ \\(metrics, events, dashboard\\)`));
    const status = await get(base, '/v1/status');
    assert.equal((status.json as { host: { id: string } }).host.id, 'h1');
  });

  it('refuses a request that would change state with 405, naming the control socket', async () => {
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: 'tcp:127.0.0.1:0' } }, dir);
    after(() => stopDaemon(r));
    const base = `http://${((await r.client.status()).http?.listen[0] ?? '').slice(4)}`;
    for (const [method, path] of [
      ['DELETE', '/v1/ports/a'],
      ['POST', '/v1/reload'],
      ['POST', '/v1/ports'],
    ] as const) {
      const res = await get(base, path, method);
      assert.equal(res.status, 405, `${method} ${path}`);
      const err = (res.json as { error: { code: string; message: string } }).error;
      assert.equal(err.code, 'ERR_HTTP_READ_ONLY');
      assert.match(err.message, /control socket/);
    }
    assert.equal((await r.client.listPorts()).length, 2, 'nothing was deleted');
  });

  it('answers an unknown path with 404 and a JSON error', async () => {
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: 'tcp:127.0.0.1:0' } }, dir);
    after(() => stopDaemon(r));
    const base = `http://${((await r.client.status()).http?.listen[0] ?? '').slice(4)}`;
    const res = await get(base, '/nothing/here');
    assert.equal(res.status, 404);
    assert.equal((res.json as { error: { code: string } }).error.code, 'ERR_ROUTE_NOT_FOUND');
  });

  it('keeps the daemon up when the address is taken, with the reason in status', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    after(() => new Promise<void>((resolve) => busy.close(() => resolve())));
    const port = (busy.address() as { port: number }).port;
    const dir = newDir();
    const r = await startDaemon({ ...twoPortConfig(dir), http: { listen: `tcp:127.0.0.1:${port}` } }, dir);
    after(() => stopDaemon(r));
    const st = await r.client.status();
    assert.deepEqual(st.http?.listen, []);
    assert.match(st.http?.reason ?? '', new RegExp(`cannot listen on tcp:127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    assert.equal(st.ports.total, 2);
  });
});
