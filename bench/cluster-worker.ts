/**
 * One worker process of bench/cluster.ts: runs many ClusterAgents (no data
 * plane) sharing one EtcdConnection, counts their sinks' installs, and answers
 * the parent over IPC. Spawned by bench/cluster.ts; not run by hand.
 */
import { performance } from 'node:perf_hooks';
import { ClusterAgent } from '../src/cluster/agent.js';
import { EtcdConnection } from '../src/cluster/etcd.js';
import type { LocationSink } from '../src/cluster/locations.js';
import { silentLogger } from '../src/log.js';
import { benchMac } from './util.js';

/** Messages from the parent. */
export type ToWorker =
  | {
      op: 'start';
      endpoints: string[];
      prefix: string;
      hosts: string[];
      ports: number;
      base: number;
      ttlSec: number;
      /** Agents per shared connection. */
      perConn: number;
      /** MACs published per second by this worker at start-up. */
      rate: number;
    }
  | { op: 'learn'; id: number; host: string; mac: string; port: string }
  | { op: 'expect'; id: number; tag: string; count: number }
  | { op: 'synced'; id: number; up: number; known: number }
  | { op: 'usage' }
  | { op: 'join'; id: number; host: string; endpoints: string[]; prefix: string; ttlSec: number }
  | { op: 'exit' };

/** Messages to the parent. */
export type FromWorker =
  | { op: 'started'; rssBase: number }
  | { op: 'learned'; id: number; at: number }
  | { op: 'reached'; id: number; at: number }
  | { op: 'synced'; id: number; at: number }
  | { op: 'usage'; cpuMs: number; rss: number; agents: number }
  | { op: 'joined'; id: number; ms: number };

const now = () => performance.timeOrigin + performance.now();
const send = (m: FromWorker) => process.send?.(m);

const agents = new Map<string, ClusterAgent>();
/** Installs per `mac|host|seq` over every agent of this worker, and when the last one came. */
const installs = new Map<string, number>();
const waiting = new Map<string, { id: number; count: number }>();
const conns: EtcdConnection[] = [];

const sink: LocationSink = {
  install(_network, mac, host, seq) {
    const tag = `${mac}|${host}|${seq}`;
    const n = (installs.get(tag) ?? 0) + 1;
    installs.set(tag, n);
    const w = waiting.get(tag);
    if (w && n >= w.count) {
      waiting.delete(tag);
      send({ op: 'reached', id: w.id, at: now() });
    }
  },
  withdraw() {},
};

async function start(m: Extract<ToWorker, { op: 'start' }>): Promise<void> {
  global.gc?.();
  send({ op: 'started', rssBase: process.memoryUsage().rss });
  // Agents share a connection in groups of `perConn` (one HTTP/2 connection each group).
  let c: EtcdConnection | undefined;
  // Start in small groups, each registered and read before the next: a thousand grants, reads and watch
  // creations at once only measure etcd's queue.
  const group = 10;
  for (let i = 0; i < m.hosts.length; i += group) {
    await Promise.all(
      m.hosts.slice(i, i + group).map(async (host, j) => {
        if ((i + j) % m.perConn === 0 || !c) {
          c = new EtcdConnection({
            endpoints: m.endpoints,
            prefix: m.prefix,
            logger: silentLogger(),
            opTimeoutMs: 10_000,
          });
          conns.push(c);
        }
        const agent = new ClusterAgent({ conn: c, host, logger: silentLogger(), sink, ttlSec: m.ttlSec });
        agents.set(host, agent);
        agent.setNetworks(['net0']);
        await agent.start();
        await agent.ready();
      }),
    );
  }
  // Then the MACs, at `rate` per second from this worker: a watcher that falls behind costs etcd far more
  // (it replays history for it) than one that keeps up.
  const hosts = [...agents.keys()];
  const per = Math.max(1, Math.round(m.rate / 10));
  for (let k = 0; k < hosts.length * m.ports; k += per) {
    for (let x = k; x < Math.min(k + per, hosts.length * m.ports); x++) {
      const h = Math.floor(x / m.ports);
      const p = x % m.ports;
      agents.get(hosts[h] as string)?.learn('net0', benchMac((m.base + h) * m.ports + p), `p${p}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function synced(m: Extract<ToWorker, { op: 'synced' }>): void {
  const check = () => {
    for (const a of agents.values()) {
      const s = a.stats();
      if (!a.registered || s.up < m.up || s.known < m.known || s.unwritten > 0) return false;
    }
    return true;
  };
  const poll = () => {
    if (check()) send({ op: 'synced', id: m.id, at: now() });
    else setTimeout(poll, 50);
  };
  poll();
}

let lastCpu = process.cpuUsage();
process.on('message', (m: ToWorker) => {
  switch (m.op) {
    case 'start':
      void start(m);
      break;
    case 'learn': {
      const at = now();
      agents.get(m.host)?.learn('net0', m.mac, m.port, true);
      send({ op: 'learned', id: m.id, at });
      break;
    }
    case 'expect': {
      if ((installs.get(m.tag) ?? 0) >= m.count) send({ op: 'reached', id: m.id, at: now() });
      else waiting.set(m.tag, { id: m.id, count: m.count });
      break;
    }
    case 'synced':
      synced(m);
      break;
    case 'usage': {
      const cpu = process.cpuUsage(lastCpu);
      lastCpu = process.cpuUsage();
      send({ op: 'usage', cpuMs: (cpu.user + cpu.system) / 1000, rss: process.memoryUsage().rss, agents: agents.size });
      break;
    }
    case 'join':
      void (async () => {
        // One more host joining the populated fabric, on its own connection: registered, read, installed.
        const t0 = now();
        const c = new EtcdConnection({ endpoints: m.endpoints, prefix: m.prefix, logger: silentLogger() });
        conns.push(c);
        const agent = new ClusterAgent({ conn: c, host: m.host, logger: silentLogger(), sink, ttlSec: m.ttlSec });
        agents.set(m.host, agent);
        await agent.start();
        await agent.ready();
        send({ op: 'joined', id: m.id, ms: now() - t0 });
      })();
      break;
    case 'exit':
      void (async () => {
        await Promise.all([...agents.values()].map((a) => a.close({ revoke: false }).catch(() => {})));
        await Promise.all(conns.map((c) => c.close()));
        process.exit(0);
      })();
      break;
  }
});
