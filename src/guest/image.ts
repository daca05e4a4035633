/**
 * The small guest vmlink's tests boot and `vmlink guest-image` gives people:
 * the Debian cloud kernel of this machine and a busybox initramfs built
 * around it (the virtio modules loaded in order, a DHCP client, a shell on the
 * serial console; see init-script.ts). One implementation for both: the test
 * harness caches the initramfs by a hash of what goes into it
 * ({@link buildCachedInitramfs}), the CLI writes `vmlinuz` and `initrd.img`
 * into a directory ({@link buildGuestImage}).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describeError } from '../errors.js';
import { GuestImageError } from './errors.js';
import { DHCP_SCRIPT, DHCP_SCRIPT_PATH, INIT_SCRIPT, VIRTIO_MODULES } from './init-script.js';

const execFileP = promisify(execFile);

/** A kernel and the initramfs built for it. */
export interface GuestImage {
  /** Kernel image path (bzImage). */
  kernel: string;
  /** gzip'd newc cpio initramfs path. */
  initrd: string;
  /** Kernel release, e.g. `6.1.0-57-cloud-amd64`. */
  version: string;
}

/** A kernel image and its release (the name of its `/lib/modules/<version>` directory). */
export interface Kernel {
  kernel: string;
  version: string;
}

/**
 * The kernel to build for: `override` (a path ending in `vmlinuz-<version>`),
 * else env `VMLINK_VM_KERNEL`, else the newest `/boot/vmlinuz-*-cloud-amd64`
 * that has its modules in `/lib/modules/<version>`.
 */
export function findKernel(override = process.env['VMLINK_VM_KERNEL']): Kernel {
  if (override) {
    const version = /vmlinuz-(.+)$/.exec(override)?.[1];
    if (!version) throw new GuestImageError(`kernel "${override}" must be a path ending in vmlinuz-<version>`);
    if (!existsSync(override)) throw new GuestImageError(`kernel "${override}" does not exist`);
    if (!existsSync(`/lib/modules/${version}`)) {
      throw new GuestImageError(`kernel "${override}": its modules are not in /lib/modules/${version}`);
    }
    return { kernel: override, version };
  }
  const versions = readdirSync('/boot')
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined && existsSync(`/lib/modules/${v}`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (!version) {
    throw new GuestImageError(
      'no /boot/vmlinuz-*-cloud-amd64 with matching /lib/modules/<version>: install linux-image-cloud-amd64 (scripts/setup.sh does), or give --kernel /boot/vmlinuz-<version>',
    );
  }
  return { kernel: `/boot/vmlinuz-${version}`, version };
}

/** Finds `name.ko` under /lib/modules/<version>/kernel. */
function findModule(version: string, name: string): string {
  const root = `/lib/modules/${version}/kernel`;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) stack.push(p);
      else if (ent.name === `${name}.ko`) return p;
    }
  }
  throw new GuestImageError(
    `kernel module ${name}.ko not found under ${root} (compressed modules are not supported; the Debian cloud kernel has them uncompressed)`,
  );
}

function busyboxPath(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (existsSync(p)) return p;
  throw new GuestImageError('busybox not found: install busybox-static (scripts/setup.sh does)');
}

/** Everything that goes into an initramfs, and a key that changes when any of it does. */
interface Inputs extends Kernel {
  busybox: string;
  modules: string[];
  key: string;
}

function inputs(kernel: Kernel): Inputs {
  const busybox = busyboxPath();
  const modules = VIRTIO_MODULES.map((m) => findModule(kernel.version, m));
  const hash = createHash('sha256').update(INIT_SCRIPT).update(DHCP_SCRIPT);
  for (const f of [busybox, ...modules]) {
    const st = statSync(f);
    hash.update(`${f}:${st.size}:${st.mtimeMs}\n`);
  }
  return { ...kernel, busybox, modules, key: hash.digest('hex').slice(0, 16) };
}

/** Builds the initramfs of `i` into `out` (written under a temporary name, then renamed into place). */
async function writeInitramfs(i: Inputs, out: string): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'vmlink-initramfs-'));
  try {
    const root = join(work, 'root');
    for (const d of ['bin', 'sbin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'run', 'www', 'root', 'etc']) {
      await mkdir(join(root, d), { recursive: true });
    }
    await copyFile(i.busybox, join(root, 'bin/busybox'));
    await chmod(join(root, 'bin/busybox'), 0o755);
    const { stdout } = await execFileP(i.busybox, ['--list']);
    for (const applet of stdout.split('\n')) {
      if (applet && applet !== 'busybox') await symlink('busybox', join(root, 'bin', applet));
    }
    for (const [n, m] of VIRTIO_MODULES.entries()) {
      await copyFile(i.modules[n] as string, join(root, 'lib/modules', `${m}.ko`));
    }
    await writeFile(join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
    await mkdir(join(root, dirname(DHCP_SCRIPT_PATH)), { recursive: true });
    await writeFile(join(root, DHCP_SCRIPT_PATH), DHCP_SCRIPT, { mode: 0o755 });
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    const tmpOut = `${out}.${process.pid}.tmp`;
    // newc is the only cpio format the kernel unpacks (Documentation/driver-api/early-userspace).
    try {
      await execFileP('sh', [
        '-c',
        `set -e; cd "$1"; find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 > "$2"`,
        'sh',
        root,
        tmpOut,
      ]);
    } catch (err) {
      await rm(tmpOut, { force: true });
      throw new GuestImageError(`packing the initramfs failed (are cpio and gzip installed?): ${describeError(err)}`, {
        cause: err,
      });
    }
    await rename(tmpOut, out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Builds (or reuses) `<cacheDir>/initramfs-<version>-<key>.cpio.gz` for the
 * kernel of {@link findKernel}; the key covers the init script, busybox and
 * the modules, so a change to any of them builds a new file.
 */
export async function buildCachedInitramfs(cacheDir: string): Promise<GuestImage> {
  const i = inputs(findKernel());
  const initrd = join(cacheDir, `initramfs-${i.version}-${i.key}.cpio.gz`);
  if (!existsSync(initrd)) {
    await mkdir(cacheDir, { recursive: true });
    await writeInitramfs(i, initrd);
  }
  return { kernel: i.kernel, initrd, version: i.version };
}

/** Options of {@link buildGuestImage}. */
export interface GuestImageOptions {
  /** Directory to write `vmlinuz` and `initrd.img` into (created when missing). */
  outDir: string;
  /** Kernel image path ending in `vmlinuz-<version>`; default: see {@link findKernel}. */
  kernel?: string | undefined;
}

/** Writes `DIR/vmlinuz` (a copy of the kernel) and `DIR/initrd.img`; returns their absolute paths. */
export async function buildGuestImage(opts: GuestImageOptions): Promise<GuestImage> {
  const k = findKernel(opts.kernel ?? process.env['VMLINK_VM_KERNEL']);
  const i = inputs(k);
  const dir = resolve(opts.outDir);
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw new GuestImageError(`cannot create --out directory "${dir}": ${describeError(err)}`, { cause: err });
  }
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.img');
  try {
    await copyFile(k.kernel, `${kernel}.tmp`);
    await rename(`${kernel}.tmp`, kernel);
  } catch (err) {
    throw new GuestImageError(`cannot copy ${k.kernel} to ${kernel}: ${describeError(err)}`, { cause: err });
  }
  await writeInitramfs(i, initrd);
  return { kernel, initrd, version: k.version };
}

/** Options of {@link qemuCommand}. */
export interface QemuCommandOptions {
  /** vmlink port the NIC joins (its arguments come from `vmlink qemu-args PORT`); default the word `PORT`. */
  port?: string | undefined;
  /** eth0's address: `dhcp` (default) or a CIDR like `192.0.2.10/24`. */
  ip?: string | undefined;
  /** Guest RAM in MiB; default 256. */
  memMb?: number | undefined;
}

/** Quotes a word for a POSIX shell when it needs it. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The QEMU arguments that boot `image` headless with an interactive shell
 * on the serial console (this terminal; Ctrl-A X quits QEMU), without the NIC.
 * TCG, so it runs without KVM (add `-accel kvm` first where /dev/kvm exists).
 */
export function qemuBootArgs(image: GuestImage, opts: QemuCommandOptions = {}): string[] {
  // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can time out and panic.
  const append = [
    'console=ttyS0',
    'panic=-1',
    'no_timer_check',
    'vmlink.interactive=1',
    `vmlink.ip=${opts.ip ?? 'dhcp'}`,
  ];
  return [
    ...['-accel', 'tcg', '-machine', 'q35', '-cpu', 'max', '-m', String(opts.memMb ?? 256)],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'mon:stdio', '-no-reboot'],
    ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', append.join(' ')],
  ];
}

/** The whole command line, shell-quoted, ending in `$(vmlink qemu-args PORT)`. */
export function qemuCommand(image: GuestImage, opts: QemuCommandOptions = {}): string {
  const words = ['qemu-system-x86_64', ...qemuBootArgs(image, opts)].map(shellWord);
  return `${words.join(' ')} $(vmlink qemu-args ${shellWord(opts.port ?? 'PORT')})`;
}
