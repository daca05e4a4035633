/**
 * The rig of the cluster end-to-end test: four hosts in four network
 * namespaces on one LAN segment (veths to a bridge in a fifth), 192.0.2.N/24,
 * a 3-member etcd cluster running in the namespaces of h1-h3, and a vmlink
 * daemon per host with no `cluster:` section and no links in its config
 * (`overlay.tls: fabric`: its links start with the certificate from init or join).
 * h1 (relay) and h2 listen for links; h3 and h4 only dial out. The test
 * builds the fabric through the CLI (`cluster init`, `token`, `join`).
 */
import type { ClusterView, LinkView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from './daemon.js';
import { diagnoseOnFailure } from './e2e.js';
import { type EtcdCluster, startEtcd } from './etcd.js';
import { joinLan, Netns } from './netns.js';
import type { Vm } from './vm.js';

/** TCP port of the link listeners. */
export const LINK_PORT = 7400;
/** TCP port where h1 serves joins. */
export const JOIN_PORT = 7401;
/** The LAN address of host number `n`. */
export const lanAddr = (n: number): string => `192.0.2.${n}`;

export class ClusterRig {
  readonly hosts: Netns[] = [];
  /** Daemons h1..h4 in order. */
  readonly daemons: TestDaemon[] = [];
  vms: Vm[] = [];
  etcd: EtcdCluster | undefined;
  #lan: Netns | undefined;

  /** The daemon of host `hN`. */
  d(n: number): TestDaemon {
    return this.daemons[n - 1] as TestDaemon;
  }

  /** `vmlink link list` of a daemon. */
  links = async (d: TestDaemon): Promise<LinkView[]> => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  /** `vmlink cluster status` of a daemon. */
  status = (d: TestDaemon): Promise<ClusterView> => d.json<ClusterView>(['cluster', 'status']);

  /** Runs `fn`; on failure prints the VMs' consoles and every daemon's log before rethrowing. */
  diagnose = <T>(fn: () => Promise<T>): Promise<T> =>
    diagnoseOnFailure(
      () => this.vms,
      () => undefined,
      async () => {
        try {
          return await fn();
        } catch (err) {
          for (const d of this.daemons) process.stderr.write(`\n===== daemon ${d.dir} =====\n${d.log.slice(-20000)}\n`);
          throw err;
        }
      },
    );

  async #lanHost(tag: string, n: number): Promise<Netns> {
    const ns = await Netns.create(tag);
    this.hosts.push(ns);
    await joinLan(this.#lan as Netns, ns, `${lanAddr(n)}/24`, 'cl');
    return ns;
  }

  /** Makes the LAN, four hosts, etcd on h1-h3 and a daemon per host (not yet a fabric). */
  async start(): Promise<void> {
    this.#lan = await Netns.create('clan');
    await this.#lan.ip('link', 'add', 'br0', 'type', 'bridge');
    await this.#lan.ip('link', 'set', 'br0', 'up');
    for (let n = 1; n <= 4; n++) await this.#lanHost(`c${n}`, n);
    this.etcd = await startEtcd({
      hosts: [1, 2, 3].map((n) => ({ host: lanAddr(n), netns: (this.hosts[n - 1] as Netns).name })),
    });
    for (let n = 1; n <= 4; n++) {
      const reachable = n <= 2;
      // TLS links with the certificates the fabric issues at init and join: nothing made or copied by hand.
      const overlay = {
        tls: 'fabric',
        ...(reachable ? { listen: `tcp:0.0.0.0:${LINK_PORT}` } : {}),
        ...(n === 1 ? { relay: true, direct_threshold_bps: 0 } : {}),
      };
      this.daemons.push(
        await startDaemon({
          hostId: `h${n}`,
          wrap: ['ip', 'netns', 'exec', (this.hosts[n - 1] as Netns).name],
          extra: () => ({ overlay }),
        }),
      );
    }
  }

  /** Stops the VMs, daemons and etcd, deletes the namespaces. */
  async stop(): Promise<void> {
    await Promise.all(this.vms.map((v) => v.close()));
    for (const d of this.daemons) await d.cleanup();
    await this.etcd?.stop();
    for (const ns of this.hosts) await ns.delete().catch(() => undefined);
    await this.#lan?.delete().catch(() => undefined);
  }
}
