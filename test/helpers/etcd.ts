/**
 * Real etcd servers for tests (Debian's `etcd-server`, etcd 3.4): a 1- or
 * 3-member cluster on loopback addresses (or on given addresses, optionally
 * inside network namespaces), each member in its own temporary data
 * directory. Members can be killed (SIGKILL) and started again on the same
 * data, so tests can take etcd away and bring it back.
 *
 *   const etcd = await startEtcd({ members: 3 });
 *   etcd.endpoints                  // ['http://127.0.0.1:P1', ...]
 *   await etcd.members[0].kill();   // one member gone: the cluster keeps quorum
 *   await etcd.killAll(); await etcd.startAll();
 *   await etcd.stop();              // in after(): kills every member, removes the data
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort } from './host-net.js';

export interface EtcdMemberOptions {
  /** Address the member listens on (client and peer URLs); default 127.0.0.1. */
  host?: string;
  /** Network namespace to run the member in (`ip netns exec NAME etcd ...`). */
  netns?: string;
}

export interface StartEtcdOptions {
  /** Members of the cluster: 1 or 3 (default 1). */
  members?: number;
  /** Per-member address and namespace; its length overrides `members`. */
  hosts?: EtcdMemberOptions[];
  /** Client TLS: the members serve HTTPS with this certificate and require client certificates signed by `ca`. */
  tls?: { ca: string; cert: string; key: string };
  /** etcd's --auto-compaction-retention etc.; extra flags for every member. */
  extraArgs?: string[];
}

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** Kills the member with SIGKILL and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts the member again on its data directory (no-op when running) and waits until it serves. */
  start(): Promise<void>;
}

export interface EtcdCluster {
  readonly endpoints: string[];
  readonly members: EtcdMember[];
  /** Kills every member. */
  killAll(): Promise<void>;
  /** Starts every stopped member and waits until the cluster serves. */
  startAll(): Promise<void>;
  /** Kills every member and removes the data directories. Idempotent. */
  stop(): Promise<void>;
}

class Member implements EtcdMember {
  #proc: ChildProcess | undefined;
  #log = '';

  constructor(
    readonly name: string,
    readonly clientUrl: string,
    readonly args: string[],
    readonly netns: string | undefined,
    readonly tls: boolean,
  ) {}

  get running(): boolean {
    return this.#proc !== undefined && this.#proc.exitCode === null && this.#proc.signalCode === null;
  }

  /** The last lines of the member's output, for failure messages. */
  get log(): string {
    return this.#log.split('\n').slice(-15).join('\n');
  }

  spawn(): void {
    if (this.running) return;
    const [cmd, args] = this.netns ? ['ip', ['netns', 'exec', this.netns, 'etcd', ...this.args]] : ['etcd', this.args];
    const p = spawn(cmd as string, args as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (b: Buffer) => {
      this.#log = (this.#log + b.toString()).slice(-8192);
    };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    this.#proc = p;
  }

  async kill(): Promise<void> {
    const p = this.#proc;
    if (!p || !this.running) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async start(): Promise<void> {
    this.spawn();
    if (!this.tls) await serving(this, Date.now() + 30_000, [this]);
  }
}

/** True when the member answers its health check (from inside its namespace, where it has one). */
async function healthy(m: Member): Promise<boolean> {
  const ns = m.netns;
  if (ns) {
    const r = await new Promise<boolean>((resolve) =>
      execFile(
        'ip',
        ['netns', 'exec', ns, 'etcdctl', '--endpoints', m.clientUrl, '--dial-timeout', '1s', 'endpoint', 'health'],
        { timeout: 5000 },
        (err) => resolve(!err),
      ),
    );
    return r;
  }
  try {
    const r = await fetch(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    return r.ok && ((await r.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

async function serving(m: Member, deadline: number, members: Member[]): Promise<void> {
  for (;;) {
    if (await healthy(m)) return;
    if (Date.now() > deadline)
      throw new Error(
        `etcd at ${m.clientUrl} did not become healthy:\n${members.map((x) => `${x.name}: ${x.log}`).join('\n')}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts an etcd cluster and waits until it is healthy. */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdCluster> {
  const hosts: EtcdMemberOptions[] = opts.hosts ?? Array.from({ length: opts.members ?? 1 }, () => ({}));
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-etcd-'));
  const scheme = opts.tls ? 'https' : 'http';
  const spec = [];
  for (let i = 0; i < hosts.length; i++) {
    const host = hosts[i]?.host ?? '127.0.0.1';
    spec.push({ name: `m${i}`, host, client: await freeTcpPort(), peer: await freeTcpPort(), netns: hosts[i]?.netns });
  }
  const cluster = spec.map((s) => `${s.name}=http://${s.host}:${s.peer}`).join(',');
  const token = `vmlink-test-${process.pid}-${Date.now()}`;
  const members = spec.map((s) => {
    const clientUrl = `${scheme}://${s.host}:${s.client}`;
    const args = [
      '--name',
      s.name,
      '--data-dir',
      join(dir, s.name),
      '--listen-client-urls',
      clientUrl,
      '--advertise-client-urls',
      clientUrl,
      '--listen-peer-urls',
      `http://${s.host}:${s.peer}`,
      '--initial-advertise-peer-urls',
      `http://${s.host}:${s.peer}`,
      '--initial-cluster',
      cluster,
      '--initial-cluster-token',
      token,
      '--initial-cluster-state',
      'new',
      '--log-level',
      'warn',
      '--logger',
      'zap',
      ...(opts.tls
        ? [
            '--cert-file',
            opts.tls.cert,
            '--key-file',
            opts.tls.key,
            '--trusted-ca-file',
            opts.tls.ca,
            '--client-cert-auth',
          ]
        : []),
      ...(opts.extraArgs ?? []),
    ];
    return new Member(s.name, clientUrl, args, s.netns, opts.tls !== undefined);
  });
  for (const m of members) m.spawn();
  const stopAll = async () => {
    await Promise.all(members.map((m) => m.kill()));
  };
  // The health endpoint needs a client certificate with --client-cert-auth; wait on the plain port otherwise.
  const waitAll = async () => {
    if (opts.tls) {
      await new Promise((r) => setTimeout(r, 1500));
      return;
    }
    const deadline = Date.now() + 30_000;
    await Promise.all(members.filter((m) => m.running).map((m) => serving(m, deadline, members)));
  };
  try {
    await waitAll();
  } catch (err) {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    endpoints: members.map((m) => m.clientUrl),
    members,
    killAll: stopAll,
    async startAll() {
      for (const m of members) m.spawn();
      await waitAll();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
