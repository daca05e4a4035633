/**
 * The rig of the overlay end-to-end test: three vmlink daemons in three
 * network namespaces on one LAN segment (veths to a bridge in a fourth), with
 * host addresses from TEST-NET-1 (192.0.2.N/24, RFC 5737, as in the docs),
 * joined by TLS links in a star: the hub (h1, 192.0.2.1) relays and terminates
 * a VXLAN link to a kernel VTEP at 192.0.2.7; the spokes (h2, h3) dial out, h3
 * also listens. A real VM per host (10.0.0.1-3/24 on network `lab`). A second
 * CA signs a host (h9) that must not get in.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LinkView } from '../../src/api/client.js';
import { runCli, startDaemon, type TestDaemon } from './daemon.js';
import { attachVms, diagnoseOnFailure } from './e2e.js';
import { joinLan, Netns } from './netns.js';
import { untilAsync } from './overlay-rig.js';
import type { Vm } from './vm.js';

/** TCP port the hub (and h3) listen on for links. */
export const LINK_PORT = 7400;

/** The LAN address of host number `n`. */
export const lanAddr = (n: number): string => `192.0.2.${n}`;

async function cli(args: string[]): Promise<void> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`vmlink ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
}

/** The star: build it with {@link OverlayStar.start} in before(), tear it down with {@link OverlayStar.stop}. */
export class OverlayStar {
  /** Temp dir with both CAs and every host's certificate. */
  pki = '';
  /** Namespaces of the hosts, in the order they were made (h1, h2, h3, then any added by tests). */
  readonly hosts: Netns[] = [];
  /** The host-side veth of each of `hosts`. */
  readonly ifs: string[] = [];
  readonly daemons: TestDaemon[] = [];
  vms: Vm[] = [];
  #lan: Netns | undefined;

  get hub(): TestDaemon {
    return this.daemons[0] as TestDaemon;
  }
  get s2(): TestDaemon {
    return this.daemons[1] as TestDaemon;
  }
  get s3(): TestDaemon {
    return this.daemons[2] as TestDaemon;
  }

  /** The links of daemon `d` (`vmlink link list`). */
  links = async (d: TestDaemon): Promise<LinkView[]> => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  /** Runs `fn`; on failure prints the VMs' consoles and every daemon's log before rethrowing. */
  diagnose = <T>(fn: () => Promise<T>): Promise<T> =>
    diagnoseOnFailure(
      () => this.vms,
      () => undefined,
      async () => {
        try {
          return await fn();
        } catch (err) {
          for (const d of this.daemons) process.stderr.write(`\n===== daemon ${d.dir} =====\n${d.log}\n`);
          throw err;
        }
      },
    );

  /** A namespace on the LAN bridge with address 192.0.2.N/24. */
  async lanHost(tag: string, n: number): Promise<Netns> {
    const ns = await Netns.create(tag);
    this.hosts.push(ns);
    this.ifs.push(await joinLan(this.#lan as Netns, ns, `${lanAddr(n)}/24`, 'ov'));
    return ns;
  }

  /** Starts host `id`'s daemon in `ns` with this overlay section and links; it joins the star's daemons. */
  async startHost(id: string, ns: Netns, overlay: Record<string, unknown>, links: unknown[] = []): Promise<TestDaemon> {
    const d = await startDaemon({
      hostId: id,
      wrap: ['ip', 'netns', 'exec', ns.name],
      networks: [{ name: 'lab', vni: 100 }],
      // Port names differ per host: the default guest MAC is derived from the port name.
      ports: (dir: string) => [{ name: `vm-${id}`, network: 'lab', kind: 'stream', listen: `unix:${dir}/vm.sock` }],
      extra: () => ({ overlay, links }),
    });
    this.daemons.push(d);
    return d;
  }

  /** The TLS section of host `id`, with certificates from the star's PKI. */
  tls(id: string): { ca: string; cert: string; key: string } {
    return {
      ca: join(this.pki, id, 'ca.pem'),
      cert: join(this.pki, id, `${id}.pem`),
      key: join(this.pki, id, `${id}.key`),
    };
  }

  /** Makes the PKI, the LAN, the three hosts and their daemons, waits for the star, and boots a VM per host. */
  async start(): Promise<void> {
    this.pki = await mkdtemp(join(tmpdir(), 'vmlink-pki-'));
    const pki = this.pki;
    await cli(['ca', 'init', '--dir', join(pki, 'ca')]);
    for (const h of ['h1', 'h2', 'h3'])
      await cli(['host', 'cert', h, '--ca-dir', join(pki, 'ca'), '--out', join(pki, h)]);
    // A second fabric: its hosts must not get in.
    await cli(['ca', 'init', '--dir', join(pki, 'other-ca')]);
    await cli(['host', 'cert', 'h9', '--ca-dir', join(pki, 'other-ca'), '--out', join(pki, 'h9')]);

    this.#lan = await Netns.create('lan');
    await this.#lan.ip('link', 'add', 'br0', 'type', 'bridge');
    await this.#lan.ip('link', 'set', 'br0', 'up');
    const n1 = await this.lanHost('h1', 1);
    const n2 = await this.lanHost('h2', 2);
    const n3 = await this.lanHost('h3', 3);
    const hubAddr = `tcp:${lanAddr(1)}:${LINK_PORT}`;
    await this.startHost(
      'h1',
      n1,
      {
        listen: `tcp:0.0.0.0:${LINK_PORT}`,
        tls: this.tls('h1'),
        relay: true,
        vxlan: { listen: `udp:${lanAddr(1)}:4789` },
        direct_threshold_bps: 1_000_000,
      },
      // A Linux kernel VXLAN device (VTEP) on the LAN at 192.0.2.7.
      [{ name: 'vtep', connect: `udp:${lanAddr(7)}:4789` }],
    );
    const s2 = await this.startHost('h2', n2, { tls: this.tls('h2') }, [{ name: 'hub', connect: hubAddr }]);
    // h3 also listens, so the hub can ask h2 to link to it directly.
    const s3 = await this.startHost('h3', n3, { listen: `tcp:0.0.0.0:${LINK_PORT}`, tls: this.tls('h3') }, [
      { name: 'hub', connect: hubAddr },
    ]);
    await this.diagnose(() =>
      untilAsync('both spokes linked to the hub', async () => {
        const [a, b] = [await this.links(s2), await this.links(s3)];
        return a[0]?.state === 'up' && b[0]?.state === 'up';
      }),
    );
    this.vms = await this.diagnose(async () => [
      ...(await attachVms(this.hub, [{ port: 'vm-h1', name: 'vm1', ip: '10.0.0.1/24' }])),
      ...(await attachVms(s2, [{ port: 'vm-h2', name: 'vm2', ip: '10.0.0.2/24' }])),
      ...(await attachVms(s3, [{ port: 'vm-h3', name: 'vm3', ip: '10.0.0.3/24' }])),
    ]);
  }

  /** Stops the VMs and daemons, deletes the namespaces and the PKI. */
  async stop(): Promise<void> {
    await Promise.all(this.vms.map((v) => v.close()));
    for (const d of this.daemons) await d.cleanup();
    for (const ns of this.hosts) await ns.delete().catch(() => undefined);
    await this.#lan?.delete().catch(() => undefined);
    if (this.pki) await rm(this.pki, { recursive: true, force: true });
  }
}
