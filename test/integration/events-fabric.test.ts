/**
 * Events of links and exports on real daemons (in this process): a link
 * between two hosts coming up and going down when its peer stops, or going
 * down and coming back at once when its connection is cut; an NBD export
 * served, clients connecting and leaving (also at once), the export removed.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { VmlinkEvent } from '../../src/api/client.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { hostConfig, startDaemon, stopDaemon, tempDirs } from '../helpers/api-daemon.js';
import { freeTcpPort } from '../helpers/host-net.js';

const newDir = await tempDirs('vmlink-events-fabric-');

/** Follows the daemon's events (through the client) into a list; stopped in after(). */
function follow(client: { events: (o: { signal: AbortSignal; since: number }) => AsyncGenerator<VmlinkEvent> }) {
  const ac = new AbortController();
  after(() => ac.abort());
  const events: VmlinkEvent[] = [];
  const waiters: (() => void)[] = [];
  void (async () => {
    for await (const e of client.events({ signal: ac.signal, since: 0 })) {
      events.push(e);
      for (const w of waiters.splice(0)) w();
    }
  })();
  const waitFor = async (what: string, p: (e: VmlinkEvent) => boolean): Promise<VmlinkEvent> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const e = events.find(p);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`no ${what} within 60 s: ${JSON.stringify(events)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 1000).unref();
      });
    }
  };
  return { events, waitFor };
}

/** A TCP relay to `port` on 127.0.0.1 whose connections the test can cut; closed in after(). */
async function cuttableProxy(port: number): Promise<{ port: number; cut: () => number }> {
  const pairs = new Set<[Socket, Socket]>();
  const server = createServer((inbound) => {
    const outbound = connect(port, '127.0.0.1');
    const pair: [Socket, Socket] = [inbound, outbound];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    for (const s of pair) s.on('error', end).on('close', end);
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => {
    for (const [i, o] of pairs) {
      i.destroy();
      o.destroy();
    }
    server.close();
  });
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return {
    port: address.port,
    cut: () => {
      const n = pairs.size;
      for (const [i, o] of [...pairs]) {
        i.destroy();
        o.destroy();
      }
      return n;
    },
  };
}

describe('events of links and exports', () => {
  it('tells of a link to another host coming up, then going down when that host stops', async () => {
    const port = await freeTcpPort();
    const da = newDir();
    const a = await startDaemon(
      {
        ...hostConfig(da, { overlay: { listen: `tcp:127.0.0.1:${port}`, plain: true } }),
        host: { id: 'ha', control: join(da, 'run', 'a.sock'), state_dir: join(da, 'state') },
        networks: [{ name: 'lan', vni: 10 }],
      },
      da,
    );
    let aStopped = false;
    after(async () => {
      if (!aStopped) await stopDaemon(a);
    });
    const db = newDir();
    const b = await startDaemon(
      {
        ...hostConfig(db, {
          overlay: { plain: true },
          links: [{ name: 'to-a', connect: `tcp:127.0.0.1:${port}` }],
        }),
        networks: [{ name: 'lan', vni: 10 }],
      },
      db,
    );
    after(() => stopDaemon(b));
    const f = follow(b.client);
    const up = await f.waitFor('link up', (e) => e.type === 'link.up' && e['link'] === 'to-a');
    assert.equal(up['peer'], 'ha');
    assert.equal(up['transport'], 'tcp');
    aStopped = true;
    await stopDaemon(a);
    const down = await f.waitFor('link down', (e) => e.type === 'link.down' && e['link'] === 'to-a');
    assert.ok((down.id as number) > (up.id as number));
    assert.equal(typeof down['reason'], 'string');
  });

  it('tells of a link whose connection is cut going down and coming back up, once each', async () => {
    const port = await freeTcpPort();
    const da = newDir();
    const a = await startDaemon(
      {
        ...hostConfig(da, { overlay: { listen: `tcp:127.0.0.1:${port}`, plain: true } }),
        host: { id: 'ha', control: join(da, 'run', 'a.sock'), state_dir: join(da, 'state') },
        networks: [{ name: 'lan', vni: 10 }],
      },
      da,
    );
    after(() => stopDaemon(a));
    const proxy = await cuttableProxy(port);
    const db = newDir();
    const b = await startDaemon(
      {
        ...hostConfig(db, {
          overlay: { plain: true, reconnect: { min_ms: 10, max_ms: 50 } },
          links: [{ name: 'to-a', connect: `tcp:127.0.0.1:${proxy.port}` }],
        }),
        networks: [{ name: 'lan', vni: 10 }],
      },
      db,
    );
    after(() => stopDaemon(b));
    const f = follow(b.client);
    const up = await f.waitFor('link up', (e) => e.type === 'link.up' && e['link'] === 'to-a');
    assert.equal(proxy.cut(), 1, 'one connection carried the link');
    // Re-dialled within tens of ms: between two looks a second apart the link would seem up all along.
    const again = await f.waitFor(
      'link up again',
      (e) => e.type === 'link.up' && e['link'] === 'to-a' && (e.id as number) > (up.id as number),
    );
    const link = f.events
      .filter((e) => e.type.startsWith('link.') && e['link'] === 'to-a' && (e.id as number) <= (again.id as number))
      .map((e) => `${e.type}/${e['peer']}`);
    assert.deepEqual(link, ['link.up/ha', 'link.down/ha', 'link.up/ha']);
    const down = f.events.find((e) => e.type === 'link.down');
    assert.equal(down?.['state'], 'down');
    assert.equal(typeof down?.['reason'], 'string');
  });

  it('tells of NBD clients that connect and leave at once, each coming and going', async () => {
    const dir = newDir();
    const nbd = join(dir, 'nbd.sock');
    const r = await startDaemon(hostConfig(dir, { storage: { listen: [`unix:${nbd}`] } }), dir);
    after(() => stopDaemon(r));
    const f = follow(r.client);
    await r.client.addExport({ name: 'quick', backend: { type: 'memory', size: '1M' } });
    for (let i = 0; i < 2; i++) {
      const c = await NbdClient.connect({ address: { type: 'unix', path: nbd }, export: 'quick' });
      await c.disconnect();
    }
    await f.waitFor(
      'two clients gone',
      () => f.events.filter((e) => e.type === 'export.close' && e['subject'] === 'client').length === 2,
    );
    assert.deepEqual(
      f.events.filter((e) => e.type.startsWith('export.')).map((e) => `${e.type}/${e['subject']}/${e['clients']}`),
      [
        'export.open/export/0',
        'export.open/client/1',
        'export.close/client/0',
        'export.open/client/1',
        'export.close/client/0',
      ],
    );
  });

  it('tells of an export served, a client connecting and leaving, and the export removed', async () => {
    const dir = newDir();
    const nbd = join(dir, 'nbd.sock');
    const r = await startDaemon(hostConfig(dir, { storage: { listen: [`unix:${nbd}`] } }), dir);
    after(() => stopDaemon(r));
    const f = follow(r.client);
    await r.client.addExport({ name: 'scratch', backend: { type: 'memory', size: '1M' } });
    await f.waitFor('served', (e) => e.type === 'export.open' && e['subject'] === 'export');
    const c = await NbdClient.connect({ address: { type: 'unix', path: nbd }, export: 'scratch' });
    await f.waitFor('client', (e) => e.type === 'export.open' && e['subject'] === 'client');
    await c.disconnect();
    await f.waitFor('client gone', (e) => e.type === 'export.close' && e['subject'] === 'client');
    await r.client.deleteExport('scratch');
    const gone = await f.waitFor('removed', (e) => e.type === 'export.close' && e['subject'] === 'export');
    assert.equal(gone['export'], 'scratch');
    assert.deepEqual(
      f.events.filter((e) => e.type.startsWith('export.')).map((e) => `${e.type}/${e['subject']}/${e['clients']}`),
      ['export.open/export/0', 'export.open/client/1', 'export.close/client/0', 'export.close/export/0'],
    );
  });
});
