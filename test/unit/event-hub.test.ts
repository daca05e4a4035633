/**
 * The event hub (api/events.ts): ids, the replay ring, type filters, and a
 * subscriber that does not keep up being cut off; the SSE stream over a real
 * socket whose reader stops reading.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import fastify from 'fastify';
import { EventHub, eventQuery, eventRoutes, sseFrame, type VmlinkEvent } from '../../src/api/events.js';

const hubAt = (capacity = 1000) => new EventHub({ host: 'h1', capacity, now: () => Date.UTC(2026, 0, 1) });

function collect(hub: EventHub, filter = {}): { got: VmlinkEvent[]; stop: () => void } {
  const got: VmlinkEvent[] = [];
  const stop = hub.subscribe((ev) => {
    got.push(ev);
    return true;
  }, filter);
  return { got, stop };
}

describe('the event hub', () => {
  it('numbers events from 1 and stamps them with the time and the host', () => {
    const hub = hubAt();
    const { got } = collect(hub);
    hub.publish('port.up', { port: 'a', reason: 'peer connected' });
    hub.publish('port.down', { port: 'a', reason: 'peer gone' });
    assert.deepEqual(got, [
      { id: 1, type: 'port.up', time: '2026-01-01T00:00:00.000Z', host: 'h1', port: 'a', reason: 'peer connected' },
      { id: 2, type: 'port.down', time: '2026-01-01T00:00:00.000Z', host: 'h1', port: 'a', reason: 'peer gone' },
    ]);
    assert.equal(hub.lastId, 2);
  });

  it('replays the held events after the id a subscriber resumes from, then goes on live', () => {
    const hub = hubAt();
    for (let i = 0; i < 5; i++) hub.publish('mac.learned', { n: i });
    const { got } = collect(hub, { since: 3 });
    hub.publish('mac.moved', {});
    assert.deepEqual(
      got.map((e) => e.id),
      [4, 5, 6],
    );
  });

  it('says so with stream.gap when the resume id is older than the ring holds', () => {
    const hub = hubAt(3);
    for (let i = 0; i < 10; i++) hub.publish('port.up', { n: i });
    const { got } = collect(hub, { since: 2 });
    assert.equal(got[0]?.type, 'stream.gap');
    assert.equal(got[0]?.id, undefined, 'stream events carry no id');
    assert.equal(got[0]?.['missed'], 5);
    assert.deepEqual(
      got.slice(1).map((e) => e.id),
      [8, 9, 10],
    );
  });

  it('replays everything held after stream.gap when the id is from an earlier run of the daemon', () => {
    const hub = hubAt();
    hub.publish('reload', { ok: true });
    const { got } = collect(hub, { since: 500 });
    assert.deepEqual(
      got.map((e) => e.type),
      ['stream.gap', 'reload'],
    );
  });

  it('filters by category and by type', () => {
    const hub = hubAt();
    const { got } = collect(hub, { types: ['mac', 'port.down'] });
    hub.publish('port.up', {});
    hub.publish('port.down', {});
    hub.publish('mac.learned', {});
    hub.publish('link.up', {});
    assert.deepEqual(
      got.map((e) => e.type),
      ['port.down', 'mac.learned'],
    );
  });

  it('refuses an unknown type with a 400 error naming it', () => {
    const hub = hubAt();
    assert.throws(
      () => hub.subscribe(() => true, { types: ['ports'] }),
      (err: Error & { code?: string; status?: number }) =>
        err.code === 'ERR_BAD_REQUEST' && err.status === 400 && /"ports"/.test(err.message),
    );
    assert.equal(hub.subscribers, 0);
  });

  it('cuts off a subscriber that says it is full, with a last stream.lost event', () => {
    const hub = hubAt();
    const got: VmlinkEvent[] = [];
    hub.subscribe((ev) => {
      got.push(ev);
      return got.length < 3;
    });
    for (let i = 0; i < 10; i++) hub.publish('mac.learned', { n: i });
    assert.deepEqual(
      got.map((e) => e.type),
      ['mac.learned', 'mac.learned', 'mac.learned', 'stream.lost'],
    );
    assert.equal(hub.subscribers, 0);
  });

  it('drops a subscriber that throws and goes on with the others', () => {
    const hub = hubAt();
    hub.subscribe(() => {
      throw new Error('boom');
    });
    const { got } = collect(hub);
    hub.publish('port.up', {});
    hub.publish('port.up', {});
    assert.equal(got.length, 2);
    assert.equal(hub.subscribers, 1);
  });
});

describe('the event query', () => {
  it('reads types and since, and lets Last-Event-ID win over since', () => {
    assert.deepEqual(eventQuery({ types: 'port,mac.moved', since: '7' }, undefined), {
      types: ['port', 'mac.moved'],
      since: 7,
    });
    assert.deepEqual(eventQuery({ since: '7' }, '12'), { types: undefined, since: 12 });
  });

  it('refuses bad values, unknown and repeated parameters', () => {
    for (const [q, h] of [
      [{ types: 'nope' }, undefined],
      [{ since: '-1' }, undefined],
      [{ since: '1e3' }, undefined],
      [{ since: 'x' }, undefined],
      [{ limit: '5' }, undefined],
      [{ types: ['port', 'mac'] }, undefined],
      [{}, 'abc'],
      [{}, ['1', '2']],
    ] as [Record<string, unknown>, unknown][]) {
      assert.throws(
        () => eventQuery(q, h),
        (err: Error & { status?: number }) => err.status === 400,
        JSON.stringify([q, h]),
      );
    }
  });

  it('frames an event as SSE with its id, and a stream event without one', () => {
    assert.equal(
      sseFrame({ id: 3, type: 'port.up', time: 't', host: 'h' }),
      'id: 3\ndata: {"id":3,"type":"port.up","time":"t","host":"h"}\n\n',
    );
    assert.equal(
      sseFrame({ type: 'stream.lost', time: 't', host: 'h' }),
      'data: {"type":"stream.lost","time":"t","host":"h"}\n\n',
    );
  });
});

describe('the SSE stream', () => {
  it('opens with a comment naming the host and the last id, and sends heartbeat comments on a quiet stream', async () => {
    const hub = hubAt();
    hub.publish('reload', { ok: true });
    const app = fastify();
    eventRoutes(hub, { heartbeatMs: 50 })(app);
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    const sock = connect(port, '127.0.0.1');
    after(async () => {
      sock.destroy();
      await app.close();
    });
    sock.setEncoding('utf8');
    let text = '';
    sock.write('GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n');
    while (!text.includes(': heartbeat\n\n')) {
      const [chunk] = (await once(sock, 'data')) as [string];
      text += chunk;
    }
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /content-type: text\/event-stream/i);
    assert.match(text, /: vmlink events of host h1, last id 1\n\n/);
    assert.doesNotMatch(text, /data:/, 'no replay without since');
  });

  it('cuts off a client that stops reading once its bound is full, and ends with stream.lost', async () => {
    const hub = hubAt();
    const app = fastify();
    eventRoutes(hub, { maxBufferedBytes: 64 * 1024 })(app);
    await app.listen({ host: '127.0.0.1', port: 0 });
    after(() => app.close());
    const port = (app.server.address() as { port: number }).port;
    const sock = connect(port, '127.0.0.1');
    await once(sock, 'connect');
    sock.write('GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n');
    // Wait for the stream to open, then stop reading.
    await once(sock, 'data');
    sock.pause();
    assert.equal(hub.subscribers, 1);
    const pad = 'x'.repeat(400);
    let published = 0;
    // Publish, a turn of the event loop at a time, until the hub cut the reader off (or far more than any buffer).
    while (hub.subscribers > 0 && published < 200_000) {
      for (let i = 0; i < 500; i++, published++) hub.publish('mac.learned', { pad });
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(hub.subscribers, 0, 'the slow reader was cut off');
    // What it gets when it reads again: the stream, ending with stream.lost, far less than everything published.
    let text = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => {
      text += c;
    });
    sock.resume();
    await once(sock, 'end');
    sock.destroy();
    const types = [...text.matchAll(/^data: \{(?:"id":\d+,)?"type":"([a-z.]+)"/gm)].map((m) => m[1]);
    assert.equal(types.at(-1), 'stream.lost', `the last of ${types.length} events`);
    assert.ok(text.endsWith('0\r\n\r\n'), 'the response ended');
    const got = types.length - 1;
    assert.ok(got < published, `got ${got} of ${published}`);
  });
});
