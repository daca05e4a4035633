/**
 * `GET /v1/events` on a daemon in this process: server-sent events over the
 * HTTP endpoint and the control socket, resuming with Last-Event-ID, bad
 * queries refused with 400 on both, and the events of a reload and of QoS
 * admission decisions.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createParser } from 'eventsource-parser';
import { request } from 'undici';
import type { VmlinkEvent } from '../../src/api/client.js';
import { attach, hostConfig, type Running, startDaemon, stopDaemon, tempDirs } from '../helpers/api-daemon.js';

const newDir = await tempDirs('vmlink-events-');

/** An SSE stream over HTTP: its events as they come, with their SSE ids; closed in after(). */
async function sse(base: string, path = '/v1/events', headers: Record<string, string> = {}) {
  const ac = new AbortController();
  after(() => ac.abort());
  const res = await request(`${base}${path}`, { headers, signal: ac.signal, bodyTimeout: 0 });
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /^text\/event-stream/);
  const events: (VmlinkEvent & { sseId?: string | undefined })[] = [];
  const waiters: (() => void)[] = [];
  const parser = createParser({
    onEvent: (m) => {
      events.push({ ...(JSON.parse(m.data) as VmlinkEvent), sseId: m.id });
      for (const w of waiters.splice(0)) w();
    },
  });
  const text = new TextDecoder();
  void (async () => {
    try {
      for await (const chunk of res.body) parser.feed(text.decode(chunk as Buffer, { stream: true }));
    } catch {
      // aborted
    }
  })();
  const waitFor = async (what: string, p: (e: VmlinkEvent) => boolean): Promise<VmlinkEvent> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const e = events.find(p);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`no ${what} within 30 s: ${JSON.stringify(events)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 1000).unref();
      });
    }
  };
  return { events, waitFor, close: () => ac.abort() };
}

/** GET on the control socket: status and body. */
function controlGet(control: string, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest({ socketPath: control, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('GET /v1/events', () => {
  let r: Running;
  let base: string;
  let doc: Record<string, unknown>;

  before(async () => {
    const dir = newDir();
    doc = hostConfig(dir, {
      http: { listen: 'tcp:127.0.0.1:0' },
      networks: [{ name: 'lan', vni: 10 }],
      ports: [
        { name: 'a', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'a.sock')}` },
        { name: 'b', kind: 'stream', network: 'lan', listen: `unix:${join(dir, 'b.sock')}` },
        {
          name: 'sink',
          kind: 'stream',
          network: 'lan',
          listen: `unix:${join(dir, 'sink.sock')}`,
          qos: { capacity: '2mbit' },
        },
      ],
    });
    r = await startDaemon(doc, dir);
    const at = (await r.client.status()).http?.listen[0] ?? '';
    base = `http://${at.slice(4)}`;
  });
  after(() => stopDaemon(r));

  it('streams a port going up and down over the HTTP endpoint, each event with its SSE id', async () => {
    const s = await sse(base);
    const { sock } = await attach(r, 'a');
    const up = await s.waitFor('a up', (e) => e.type === 'port.up' && e['port'] === 'a');
    assert.equal(up.host, 'h1');
    assert.equal(up['kind'], 'stream');
    assert.equal(up['network'], 'lan');
    assert.equal((up as { sseId?: string }).sseId, String(up.id));
    sock.destroy();
    const down = await s.waitFor('a down', (e) => e.type === 'port.down' && e['port'] === 'a');
    assert.ok((down.id as number) > (up.id as number));
    assert.equal(down['state'], 'listening');
    s.close();
  });

  it('resumes after the Last-Event-ID it is given, with nothing missed or repeated', async () => {
    const first = await sse(base, '/v1/events?since=0');
    const held = await first.waitFor('a down', (e) => e.type === 'port.down' && e['port'] === 'a');
    first.close();
    const from = (held.id as number) - 2;
    const again = await sse(base, '/v1/events', { 'last-event-id': String(from) });
    await again.waitFor('a down again', (e) => e.id === held.id);
    assert.deepEqual(
      again.events.slice(0, 2).map((e) => e.id),
      [from + 1, from + 2],
    );
    // On the control socket too, through the client: the same events after the same id.
    const ac = new AbortController();
    const got: VmlinkEvent[] = [];
    for await (const e of r.client.events({ since: from, signal: ac.signal })) {
      got.push(e);
      if (e.id === held.id) ac.abort();
    }
    assert.deepEqual(
      got.map((e) => e.id),
      [from + 1, from + 2],
    );
  });

  it('refuses a bad query with 400 on the HTTP endpoint and on the control socket', async () => {
    for (const [path, headers] of [
      ['/v1/events?types=ports', {}],
      ['/v1/events?since=-1', {}],
      ['/v1/events?since=soon', {}],
      ['/v1/events?types=port&types=mac', {}],
      ['/v1/events?limit=3', {}],
      ['/v1/events', { 'last-event-id': 'yesterday' }],
    ] as [string, Record<string, string>][]) {
      const h = await request(`${base}${path}`, { headers });
      const body = (await h.body.json()) as { error: { code: string; message: string } };
      assert.equal(h.statusCode, 400, `${path} over HTTP`);
      assert.equal(body.error.code, 'ERR_BAD_REQUEST');
      const c = await controlGet(r.control, path, headers);
      assert.equal(c.status, 400, `${path} on the control socket`);
      assert.equal((JSON.parse(c.text) as { error: { code: string } }).error.code, 'ERR_BAD_REQUEST');
    }
    const h = await request(`${base}/v1/events?types=ports`);
    assert.match(
      ((await h.body.json()) as { error: { message: string } }).error.message,
      /"ports" is not an event type/,
    );
  });

  it('tells of QoS admission decisions, accepted and refused with the reason', async () => {
    const s = await sse(base, '/v1/events?types=admission');
    await r.client.qosRequest('a', { min: '1mbit' });
    await assert.rejects(r.client.qosRequest('b', { min: '1.5mbit' }));
    const yes = await s.waitFor('accepted', (e) => e.type === 'admission.accepted');
    assert.equal(yes['kind'], 'port');
    assert.equal(yes['name'], 'a');
    assert.equal(yes['min'], 1_000_000);
    const no = await s.waitFor('refused', (e) => e.type === 'admission.refused');
    assert.equal(no['name'], 'b');
    assert.equal(no['code'], 'ERR_QOS_ADMISSION');
    assert.match(String(no['reason']), /capacity 2mbit/);
    assert.ok(s.events.every((e) => e.type.startsWith('admission.')));
    s.close();
  });

  it('tells of a reload and what it changed', async () => {
    const s = await sse(base, '/v1/events?types=reload');
    await assert.rejects(r.client.reload()); // no config file: refused
    const no = await s.waitFor('refused reload', (e) => e.type === 'reload');
    assert.equal(no['ok'], false);
    assert.equal(typeof no['reason'], 'string');
    // JSON is YAML: the same config, now in the file the daemon reads.
    await writeFile(join(r.dir, 'vmlink.yaml'), JSON.stringify(doc));
    await r.client.reload();
    const yes = await s.waitFor('reload', (e) => e.type === 'reload' && e['ok'] === true);
    assert.deepEqual([yes['created'], yes['removed']], [[], []]);
    s.close();
  });
});
