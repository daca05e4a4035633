/**
 * Glue for end-to-end tests: attach VMs to a test daemon's ports, and print
 * every VM console and the daemon log when something fails.
 */
import { after, before } from 'node:test';
import { type DaemonOptions, startDaemon, type TestDaemon } from './daemon.js';
import { type BootOptions, bootVm, dumpConsoles, type Vm } from './vm.js';

export interface Attach {
  /** vmlink port the VM's NIC joins. */
  port: string;
  /** Guest address, e.g. `10.0.0.1/24`. */
  ip: string;
  /** VM name; default the port name. */
  name?: string;
  /** Guest memory in MiB; default 160. */
  memMb?: number;
}

/**
 * Boots one VM per entry, each with the arguments `vmlink qemu-args PORT --json`
 * prints, all in parallel, and waits until every guest is ready. On failure
 * the VMs already started are closed and their consoles printed.
 */
export async function attachVms(daemon: TestDaemon, list: Attach[]): Promise<Vm[]> {
  const opts: BootOptions[] = await Promise.all(
    list.map(async (a) => ({
      name: a.name ?? a.port,
      ip: a.ip,
      memMb: a.memMb ?? 160,
      netArgs: (await daemon.qemuArgs(a.port)).args,
    })),
  );
  const vms: Vm[] = [];
  try {
    for (const o of opts) vms.push(await bootVm(o));
    await Promise.all(vms.map((v) => v.waitReady()));
  } catch (err) {
    await dumpConsoles(vms);
    await Promise.all(vms.map((v) => v.close()));
    throw err;
  }
  return vms;
}

/**
 * Runs `fn`; if it throws, prints the consoles of `vms()` and the log of
 * `daemon()` (both read at failure time), then rethrows.
 */
export async function diagnoseOnFailure<T>(
  vms: () => Iterable<Vm | undefined>,
  daemon: () => TestDaemon | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    await dumpConsoles([...vms()].filter((v): v is Vm => v !== undefined));
    const d = daemon();
    if (d) process.stderr.write(`\n===== vmlink daemon log (${d.dir}) =====\n${d.log}\n===== end daemon log =====\n`);
    throw err;
  }
}

/** What `useVmFabric` sets up: one daemon and the VMs on its ports. */
export interface FabricSetup {
  /** The daemon's options, or a function that builds them (e.g. after picking free ports). */
  daemon: DaemonOptions | (() => Promise<DaemonOptions>);
  /** Runs after the daemon starts and before the VMs boot (e.g. a namespace behind a TAP port). */
  prepare?: (daemon: TestDaemon) => Promise<void>;
  /** The VMs to attach with `attachVms`, or a function that boots them its own way. */
  vms: Attach[] | ((daemon: TestDaemon) => Promise<Vm[]>);
  /** Runs in `after`, once the VMs are closed and before the daemon stops. */
  teardown?: () => Promise<void>;
}

/** The daemon and VMs of a suite, valid from its `before` hook on. */
export interface VmFabric {
  readonly daemon: TestDaemon;
  /** The VMs in the order given; a test may push more (they are closed too). */
  readonly vms: Vm[];
  /** `diagnoseOnFailure` for this fabric's VMs and daemon. */
  diagnose<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * Registers the `before` and `after` hooks of a suite that runs real VMs on
 * one daemon: call it inside `describe`. The daemon starts, `prepare` runs,
 * the VMs boot; afterwards the VMs close, `teardown` runs, and the daemon
 * stops. A failure while booting prints the consoles and the daemon log.
 */
export function useVmFabric(setup: FabricSetup): VmFabric {
  let daemon: TestDaemon | undefined;
  const vms: Vm[] = [];
  const fabric: VmFabric = {
    get daemon(): TestDaemon {
      if (!daemon) throw new Error('the fabric is used before its before() hook ran (or the daemon failed to start)');
      return daemon;
    },
    vms,
    diagnose: (fn) =>
      diagnoseOnFailure(
        () => vms,
        () => daemon,
        fn,
      ),
  };
  before(async () => {
    const opts = typeof setup.daemon === 'function' ? await setup.daemon() : setup.daemon;
    const d = await startDaemon(opts);
    daemon = d;
    await fabric.diagnose(async () => {
      await setup.prepare?.(d);
      const booted = typeof setup.vms === 'function' ? await setup.vms(d) : await attachVms(d, setup.vms);
      vms.push(...booted);
    });
  });
  after(async () => {
    await Promise.all(vms.map((v) => v.close()));
    await setup.teardown?.();
    await daemon?.cleanup();
  });
  return fabric;
}
