/**
 * Glue for end-to-end tests: attach VMs to a test daemon's ports, and print
 * every VM console and the daemon log when something fails.
 */
import type { TestDaemon } from './daemon.js';
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
