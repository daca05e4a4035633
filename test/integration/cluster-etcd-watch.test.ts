/**
 * watchPrefix against real etcd: the first read, live changes, resuming
 * after an outage (all members killed and started again) and after the
 * watcher's own connection was cut (a TCP proxy between it and etcd), a
 * fresh read after compaction, no CPU spin while etcd is away, and one log
 * line per state change.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { EtcdConnection } from '../../src/cluster/etcd.js';
import { type WatchItem, watchPrefix } from '../../src/cluster/watch.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';

async function waitFor(pred: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A logger that keeps its lines (parsed) for counting. */
function recordingLogger() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

/** A TCP proxy in front of etcd: cut() drops every connection and refuses new ones until restore(). */
async function tcpProxy(target: string) {
  const { hostname, port } = new URL(target);
  const open = new Set<Socket>();
  let cut = false;
  const server: Server = createServer((sock) => {
    if (cut) return void sock.destroy();
    const up = tcpConnect(Number(port), hostname);
    for (const s of [sock, up]) {
      open.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        open.delete(s);
        sock.destroy();
        up.destroy();
      });
    }
    sock.pipe(up).pipe(sock);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${addr.port}`,
    cut() {
      cut = true;
      for (const s of open) s.destroy();
    },
    restore() {
      cut = false;
    },
    close: () => {
      for (const s of open) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A watch whose handlers keep the view and count resets. */
function view(conn: EtcdConnection, prefix: string) {
  const items = new Map<string, string>();
  const state = { resets: 0, events: [] as string[] };
  const w = watchPrefix(conn, prefix, {
    reset(all: Map<string, WatchItem>) {
      state.resets++;
      items.clear();
      for (const [k, v] of all) items.set(k, v.value.toString());
    },
    put(key, value) {
      items.set(key, value.toString());
      state.events.push(`put ${key}=${value}`);
    },
    delete(key) {
      items.delete(key);
      state.events.push(`delete ${key}`);
    },
  });
  return { items, state, close: () => w.close() };
}

describe('cluster etcd watch', () => {
  let etcd: EtcdCluster;
  let writer: Etcd3;

  before(async () => {
    etcd = await startEtcd();
    writer = new Etcd3({ hosts: etcd.endpoints });
  });
  after(async () => {
    writer?.close();
    await etcd?.stop();
  });

  it('reads the prefix first, then delivers puts and deletes with keys relative to the prefix', async () => {
    const { logger } = recordingLogger();
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger, prefix: '/t1/' });
    await writer.put('/t1/things/a').value('1');
    await writer.put('/t1/other/x').value('no');
    const v = view(conn, 'things/');
    try {
      await waitFor(() => v.state.resets === 1, 'the first read');
      assert.deepEqual([...v.items], [['a', '1']]);
      await writer.put('/t1/things/b').value('2');
      await writer.delete().key('/t1/things/a');
      await writer.put('/t1/other/y').value('no');
      await waitFor(() => v.state.events.length === 2, 'two events');
      assert.deepEqual(v.state.events, ['put b=2', 'delete a']);
      assert.deepEqual([...v.items], [['b', '2']]);
    } finally {
      await v.close();
      await conn.close();
    }
  });

  it('resumes after every member was killed and started again, without spinning, logging each state change once', async () => {
    const { logger, lines } = recordingLogger();
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger, prefix: '/t2/' });
    await writer.put('/t2/k/a').value('1');
    const v = view(conn, 'k/');
    try {
      await waitFor(() => v.state.resets === 1 && conn.available, 'the first read');
      await etcd.killAll();
      await waitFor(() => !conn.available, 'the connection to notice the outage');
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await new Promise((r) => setTimeout(r, 10_000));
      const cpu = process.cpuUsage(cpu0);
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const cpuMs = (cpu.user + cpu.system) / 1000;
      console.log(`# CPU during a ${(wallMs / 1000).toFixed(1)} s etcd outage: ${cpuMs.toFixed(0)} ms`);
      assert.ok(cpuMs < wallMs * 0.2, `the process used ${cpuMs} ms of CPU in ${wallMs} ms of outage: a spin`);
      await etcd.startAll();
      // Written as soon as etcd serves: most likely before the watcher is back, and delivered either way.
      await writer.put('/t2/k/b').value('2');
      await waitFor(() => v.items.get('b') === '2', 'the change made while the watcher was away');
      await writer.delete().key('/t2/k/a');
      await waitFor(() => !v.items.has('a'), 'a change after the watcher is back');
      assert.equal(v.state.resets, 1, 'resumed from its revision, not read afresh');
      await waitFor(() => conn.available, 'the connection to be up');
      const warn = lines.filter((l) => l.level >= 30);
      assert.equal(warn.filter((l) => l.msg.startsWith('etcd unreachable')).length, 1, JSON.stringify(warn));
      assert.equal(warn.filter((l) => l.msg.startsWith('etcd reachable again')).length, 1, JSON.stringify(warn));
      assert.equal(lines.filter((l) => l.msg === 'etcd watch lost; it resumes from the last revision seen').length, 1);
    } finally {
      await v.close();
      await conn.close();
    }
  });

  it('delivers changes made while its own connection was cut, from the revision it had seen', async () => {
    const proxy = await tcpProxy(etcd.endpoints[0] as string);
    const { logger } = recordingLogger();
    const conn = new EtcdConnection({ endpoints: [proxy.url], logger, prefix: '/t3/' });
    await writer.put('/t3/k/a').value('1');
    await writer.put('/t3/k/b').value('1');
    const v = view(conn, 'k/');
    try {
      await waitFor(() => v.state.resets === 1, 'the first read');
      proxy.cut();
      await waitFor(() => !conn.available, 'the connection to notice the cut');
      await writer.put('/t3/k/c').value('3');
      await writer.delete().key('/t3/k/a');
      await writer.put('/t3/k/b').value('2');
      proxy.restore();
      await waitFor(() => v.state.events.length === 3, 'the three changes');
      assert.deepEqual(v.state.events, ['put c=3', 'delete a', 'put b=2']);
      assert.deepEqual(Object.fromEntries(v.items), { b: '2', c: '3' });
      assert.equal(v.state.resets, 1);
    } finally {
      await v.close();
      await conn.close();
      await proxy.close();
    }
  });

  it('reads the prefix afresh and calls reset() when the revision it resumes from was compacted', async () => {
    const proxy = await tcpProxy(etcd.endpoints[0] as string);
    const { logger, lines } = recordingLogger();
    const conn = new EtcdConnection({ endpoints: [proxy.url], logger, prefix: '/t4/' });
    await writer.put('/t4/k/a').value('1');
    const v = view(conn, 'k/');
    try {
      await waitFor(() => v.state.resets === 1, 'the first read');
      proxy.cut();
      await waitFor(() => !conn.available, 'the connection to notice the cut');
      await writer.delete().key('/t4/k/a');
      const put = await writer.put('/t4/k/z').value('26').exec();
      await writer.kv.compact({ revision: put.header.revision, physical: true });
      proxy.restore();
      await waitFor(() => v.state.resets === 2, 'a fresh read');
      assert.deepEqual(Object.fromEntries(v.items), { z: '26' });
      assert.ok(lines.some((l) => l.msg.startsWith('etcd cancelled the watch')));
      await writer.put('/t4/k/y').value('25');
      await waitFor(() => v.items.get('y') === '25', 'a change after the fresh read');
    } finally {
      await v.close();
      await conn.close();
      await proxy.close();
    }
  });

  it('logs a handler that throws and goes on watching', async () => {
    const { logger, lines } = recordingLogger();
    const conn = new EtcdConnection({ endpoints: etcd.endpoints, logger, prefix: '/t5/' });
    const seen: string[] = [];
    let read = false;
    const w = watchPrefix(conn, 'k/', {
      reset() {
        read = true;
      },
      put(key) {
        seen.push(key);
        if (key === 'bad') throw new Error('consumer bug');
      },
      delete() {},
    });
    try {
      await waitFor(() => read, 'the first read');
      await writer.put('/t5/k/bad').value('1');
      await writer.put('/t5/k/good').value('1');
      await waitFor(() => seen.includes('good'), 'the event after the failing one');
      assert.ok(lines.some((l) => l.level === 50 && l.msg === 'etcd watch put handler failed'));
    } finally {
      await w.close();
      await conn.close();
    }
  });
});
