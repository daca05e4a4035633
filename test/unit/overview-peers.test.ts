/**
 * The other hosts' overviews (daemon/overview-peers.ts) against a real HTTP
 * server on loopback: a good answer is rebuilt from the expected fields with
 * the host's id on every item; viewers at once share one request; a host
 * that never answers, answers an error, too much, or something else is
 * refused with the reason, logged once per reason. And the endpoint a member
 * publishes (cluster-fabric.ts publishedHttp).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { after, describe, test } from 'node:test';
import type { OverviewView } from '../../src/api/client.js';
import { publishedHttp } from '../../src/daemon/cluster-fabric.js';
import { PeerOverviews } from '../../src/daemon/overview-peers.js';
import { recordingLogger } from '../helpers/api-daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';

const GOOD: OverviewView = {
  at: 1_700_000_000_000,
  host: 'p',
  scope: 'host',
  hosts: [{ id: 'p', state: 'up', local: true }],
  networks: [{ name: 'lab', vni: 100, mtu: 1500, hosts: ['p'] }],
  ports: [
    {
      host: 'p',
      name: 'vm1',
      kind: 'stream',
      network: 'lab',
      state: 'up',
      macs: ['02:00:00:00:00:01'],
      mac_count: 1,
      rx_bytes: 100,
      rx_frames: 2,
      tx_bytes: 50,
      tx_frames: 1,
      drops: { runt: 0, mtu: 1 },
      qos: { min: 1e6, max: 1e7, rate: 5 },
    },
  ],
  links: [
    {
      host: 'p',
      name: 'wan',
      peer: 'q',
      state: 'up',
      path: 'relay',
      transport: 'tcp',
      rtt_ms: 0.5,
      tx_bps: 1,
      rx_bps: 2,
      tx_bytes: 3,
      rx_bytes: 4,
      drops: { queue_full: 0 },
    },
  ],
  exports: [
    {
      host: 'p',
      name: 'disk',
      state: 'up',
      size: 4096,
      clients: 1,
      requests: 9,
      errors: 0,
      bytes_read: 512,
      bytes_written: 1024,
    },
  ],
};

/** A server on loopback answering with `handler`; its base URL and the number of requests it got. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  let requests = 0;
  const s = createServer((req, res) => {
    requests++;
    handler(req, res);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  return { url: `http://127.0.0.1:${(s.address() as { port: number }).port}`, requests: () => requests };
}

const json = (body: unknown) => (_req: IncomingMessage, res: ServerResponse) =>
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('the overviews of other hosts', () => {
  test('takes a good answer field by field, with the peer id on every item, from /v1/overview?scope=host', async () => {
    let path = '';
    const srv = await serve((req, res) => {
      path = req.url ?? '';
      // Extra fields and a wrong host on an item do not come through.
      const body = { ...GOOD, secret: 'x', ports: GOOD.ports.map((p) => ({ ...p, host: 'someone-else', extra: 1 })) };
      json(body)(req, res);
    });
    const peers = new PeerOverviews({ logger: recordingLogger().logger });
    const a = await peers.get('p', srv.url);
    assert.ok('view' in a);
    assert.equal(path, '/v1/overview?scope=host');
    assert.deepEqual(a.view, { ...GOOD, hosts: [] });
  });

  test('viewers asking at once share one request, and the answer is reused within the cache time', async () => {
    const srv = await serve(json(GOOD));
    const peers = new PeerOverviews({ logger: recordingLogger().logger, cacheMs: 60_000 });
    const answers = await Promise.all(Array.from({ length: 20 }, () => peers.get('p', srv.url)));
    assert.ok(answers.every((x) => 'view' in x));
    await peers.get('p', srv.url);
    assert.equal(srv.requests(), 1);
  });

  test('asks again once the cache time has passed', async () => {
    const srv = await serve(json(GOOD));
    const peers = new PeerOverviews({ logger: recordingLogger().logger, cacheMs: 0 });
    await peers.get('p', srv.url);
    await peers.get('p', srv.url);
    assert.equal(srv.requests(), 2);
  });

  test('while a new answer is slow, viewers get the previous one (one request in flight), then the new one', async () => {
    let n = 0;
    let release: (() => void) | undefined;
    const srv = await serve((req, res) => {
      n++;
      const body = { ...GOOD, at: GOOD.at + n };
      if (n === 2) release = () => json(body)(req, res);
      else json(body)(req, res);
    });
    const peers = new PeerOverviews({ logger: recordingLogger().logger, cacheMs: 0, staleMs: 50 });
    const first = await peers.get('p', srv.url);
    assert.ok('view' in first && first.view.at === GOOD.at + 1);
    const slow = await peers.get('p', srv.url);
    assert.deepEqual(slow, first, 'the previous answer while the second hangs');
    await untilAsync('the second request arrived', async () => release !== undefined);
    assert.deepEqual(await peers.get('p', srv.url), first);
    assert.equal(n, 2, 'no second request to a host while one is in flight');
    release?.();
    await untilAsync('the answer after it', async () => {
      const a = await peers.get('p', srv.url);
      return 'view' in a && a.view.at > GOOD.at + 1;
    });
  });

  test('a host that never answers is refused at the timeout', async () => {
    const srv = await serve(() => undefined);
    const peers = new PeerOverviews({ logger: recordingLogger().logger, timeoutMs: 200 });
    const a = await peers.get('p', srv.url);
    assert.ok('error' in a);
    assert.match(a.error, /^no answer from http:\/\/127\.0\.0\.1:\d+: .*(timeout|abort)/i);
    assert.equal(peers.refused, 1);
  });

  test('an error status, a body over the limit, bad JSON or another host are refused with the reason', async () => {
    const cases: [string, (req: IncomingMessage, res: ServerResponse) => void, RegExp][] = [
      ['status', (_q, res) => res.writeHead(503).end('busy'), /answered HTTP 503/],
      ['big', json({ ...GOOD, pad: 'x'.repeat(4096) }), /sent more than 1024 bytes \(refused\)/],
      ['bad', (_q, res) => res.writeHead(200).end('{"at":'), /sent a body that is not JSON/],
      ['other', json({ ...GOOD, host: 'q' }), /not an overview: host is "q", not "p"/],
      ['array', json([]), /not an overview: not a JSON object/],
      ['drops', json({ ...GOOD, ports: [{ ...GOOD.ports[0], drops: { runt: 'many' } }] }), /port "vm1" has no drops/],
      ['link', json({ ...GOOD, links: [{ name: 'wan', state: 'up', drops: {} }] }), /link "wan" lacks tx_bps/],
    ];
    for (const [name, handler, want] of cases) {
      const srv = await serve(handler);
      const peers = new PeerOverviews({ logger: recordingLogger().logger, maxBytes: 1024 });
      const a = await peers.get('p', srv.url);
      assert.ok('error' in a, name);
      assert.match(a.error, want, name);
    }
  });

  test('an endpoint that is not an http:// URL is refused without a request', async () => {
    const peers = new PeerOverviews({ logger: recordingLogger().logger });
    const a = await peers.get('p', 'ftp://127.0.0.1:1');
    assert.ok('error' in a);
    assert.match(a.error, /is not http:\/\//);
    const b = await peers.get('q', 'not a url');
    assert.ok('error' in b);
    assert.match(b.error, /is not a URL/);
  });

  test('logs a refusal once per host until its reason changes or the host answers again', async () => {
    let ok = false;
    const srv = await serve((req, res) => (ok ? json(GOOD)(req, res) : res.writeHead(500).end()));
    const log = recordingLogger();
    const peers = new PeerOverviews({ logger: log.logger, cacheMs: 0 });
    const warnings = () => log.lines.filter((l) => /overview of host "p" unavailable/.test(String(l['msg']))).length;
    await peers.get('p', srv.url);
    await peers.get('p', srv.url);
    assert.equal(warnings(), 1);
    ok = true;
    assert.ok('view' in (await peers.get('p', srv.url)));
    ok = false;
    await peers.get('p', srv.url);
    assert.equal(warnings(), 2);
    assert.equal(peers.refused, 3);
  });
});

describe('the HTTP endpoint a member publishes', () => {
  test('is the bound address, a wildcard replaced by the advertised address or else the local one', () => {
    assert.equal(publishedHttp('tcp:127.0.0.1:9470', 'tcp:10.0.0.1:4789', '10.0.0.9'), 'http://127.0.0.1:9470');
    assert.equal(publishedHttp('tcp:0.0.0.0:9470', 'tcp:10.0.0.1:4789', '10.0.0.9'), 'http://10.0.0.1:9470');
    assert.equal(publishedHttp('tcp:0.0.0.0:9470', undefined, '10.0.0.9'), 'http://10.0.0.9:9470');
    assert.equal(publishedHttp('tcp:[::]:9470', 'tcp:[fd00::1]:4789', undefined), 'http://[fd00::1]:9470');
    assert.equal(publishedHttp('tcp:0.0.0.0:9470', undefined, undefined), undefined);
    assert.equal(publishedHttp(undefined, 'tcp:10.0.0.1:4789', '10.0.0.9'), undefined);
  });
});
