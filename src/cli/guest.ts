/**
 * `vmlink guest-image [--out DIR]`: builds the small busybox guest (the one
 * the tests boot) from this machine's Debian cloud kernel, and prints how to
 * boot it on a port with a command that works verbatim on a headless machine.
 * Runs locally; needs no daemon.
 */
import type { Command } from 'commander';
import { buildGuestImage, qemuBootArgs, qemuCommand } from '../guest/image.js';
import { intArg, UsageError } from './args.js';
import { defineAction } from './context.js';
import { formatJson, print } from './output.js';

/** Default `--out`: a directory in the current one. */
const DEFAULT_OUT = 'vmlink-guest';

/** `dhcp` or an IPv4 CIDR (the guest's /init gives it to `ip addr add`). */
function ipArg(text: string): string {
  if (text === 'dhcp' || /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(text)) return text;
  throw new UsageError(`--ip "${text}" is not dhcp or an address with prefix like 192.0.2.10/24`);
}

export function addGuestImageCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('guest-image')
    .description('build a small busybox guest (kernel + initramfs) and print the QEMU command that boots it on a port')
    .option('--out <dir>', `directory for vmlinuz and initrd.img (default: ./${DEFAULT_OUT})`)
    .option(
      '--kernel <file>',
      'kernel to use, /boot/vmlinuz-VERSION with modules in /lib/modules/VERSION (default: the newest Debian cloud kernel)',
    )
    .option('--port <name>', 'the vmlink port in the printed command (default: the word PORT)')
    .option('--ip <cidr|dhcp>', "the guest's eth0 address in the printed command (default: dhcp)")
    .option('--memory-mb <N>', 'guest RAM in MiB in the printed command (default: 256)')
    .option('--json', 'print {kernel, initrd, version, args, command} as JSON');
  defineAction(cmd, done, async (_args, opts) => {
    const ip = opts['ip'] === undefined ? undefined : ipArg(String(opts['ip']));
    const memMb =
      opts['memoryMb'] === undefined ? undefined : intArg('--memory-mb', String(opts['memoryMb']), 64, 65536);
    const port = opts['port'] as string | undefined;
    const image = await buildGuestImage({
      outDir: String(opts['out'] ?? DEFAULT_OUT),
      kernel: opts['kernel'] as string | undefined,
    });
    const q = { port, ip, memMb };
    const command = qemuCommand(image, q);
    if (opts['json']) {
      print(formatJson({ ...image, args: qemuBootArgs(image, q), command }));
      return 0;
    }
    print(
      [
        `kernel  ${image.kernel}  (${image.version})`,
        `initrd  ${image.initrd}`,
        '',
        `Boot it on ${port === undefined ? 'a vmlink port (replace PORT)' : `port ${port}`}; the console is this terminal, Ctrl-A X quits QEMU:`,
        '',
        command,
        '',
      ].join('\n'),
    );
    return 0;
  });
}
