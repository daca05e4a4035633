/**
 * Command-line entry to the VM harness, for scripts (scripts/up.sh):
 *
 *   node dist/test/helpers/vm-cli.js build-initramfs
 *     builds (or finds in the cache) the guest initramfs; prints kernel, initrd, version as JSON.
 *
 *   node dist/test/helpers/vm-cli.js demo --control SOCK --vm PORT=IP/PREFIX --vm PORT=IP/PREFIX [--once]
 *     boots one VM per --vm on that vmlink port (arguments from `vmlink qemu-args PORT --json`),
 *     has the first two ping each other, prints the pings, `vmlink status` and `vmlink port list`,
 *     then keeps the VMs running until SIGINT/SIGTERM (with --once: stops at once).
 *     Exit status 0 only if every ping got its replies.
 */
import { parseArgs } from 'node:util';
import { runCli } from './daemon.js';
import { addr, ping, pingUntilReply } from './guest-net.js';
import { buildInitramfs } from './initramfs.js';
import { bootVm, dumpConsoles, type Vm } from './vm.js';

const USAGE = `usage:
  node dist/test/helpers/vm-cli.js build-initramfs
  node dist/test/helpers/vm-cli.js demo --control SOCK --vm PORT=IP/PREFIX --vm PORT=IP/PREFIX [--once]`;

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      control: { type: 'string' },
      vm: { type: 'string', multiple: true },
      once: { type: 'boolean', default: false },
    },
  });
  const control = values.control;
  const specs = (values.vm ?? []).map((s) => {
    const m = /^([^=]+)=(\d+\.\d+\.\d+\.\d+\/\d+)$/.exec(s);
    if (!m) throw new Error(`--vm "${s}" must be PORT=IP/PREFIX, e.g. vm1=10.0.0.1/24`);
    return { port: m[1] as string, ip: m[2] as string };
  });
  if (!control || specs.length < 2) throw new Error(`demo needs --control and at least two --vm\n${USAGE}`);

  const vms: Vm[] = [];
  let stopping = false;
  const stop = async (code: number): Promise<number> => {
    stopping = true;
    await Promise.all(vms.map((v) => v.close()));
    return code;
  };
  try {
    const image = await buildInitramfs();
    console.log(`booting ${specs.length} VMs (kernel ${image.version}, TCG) ...`);
    for (const s of specs) {
      const q = await runCli(['qemu-args', s.port, '--json'], { control });
      if (q.code !== 0) throw new Error(`vmlink qemu-args ${s.port} failed: ${q.stderr.trim()}`);
      const { args } = JSON.parse(q.stdout) as { args: string[] };
      console.log(`  ${s.port}: ${s.ip}  qemu-system-x86_64 ... ${args.join(' ')}`);
      vms.push(await bootVm({ name: s.port, ip: s.ip, memMb: 160, netArgs: args }));
    }
    await Promise.all(vms.map((v) => v.waitReady()));
    const [a, b] = vms as [Vm, Vm];
    let ok = (await pingUntilReply(a, b)).code === 0;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      const r = await ping(from, to, { count: 3 });
      console.log(`\n${from.name}$ ping -c 3 ${addr(to)}\n${r.output.trimEnd()}`);
      ok &&= r.code === 0;
    }
    for (const cmd of [['status'], ['port', 'list']]) {
      const r = await runCli(cmd, { control });
      console.log(`\n$ vmlink ${cmd.join(' ')}\n${(r.stdout + r.stderr).trimEnd()}`);
    }
    console.log(ok ? '\nthe VMs ping each other through vmlink' : '\nPING FAILED');
    if (!ok) await dumpConsoles(vms);
    if (values.once) return await stop(ok ? 0 : 1);
    console.log('VMs running; Ctrl-C stops them and the daemon');
    const sig = await new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
    console.log(`${sig}: stopping the VMs`);
    return await stop(ok ? 0 : 1);
  } catch (err) {
    if (!stopping) await dumpConsoles(vms);
    await stop(1);
    throw err;
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'build-initramfs') {
    console.log(JSON.stringify(await buildInitramfs()));
    return 0;
  }
  if (cmd === 'demo') return demo(rest);
  console.error(USAGE);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`vm-cli: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
