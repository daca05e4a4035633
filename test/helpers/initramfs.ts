/**
 * The guest image for VM tests: the Debian cloud kernel from /boot and a tiny
 * busybox initramfs built around it, cached under `<repo>/.cache/vm/`, keyed
 * by the kernel version and a hash of everything that goes into it.
 *
 * The guest's `/init` loads the virtio-blk and virtio-net modules, configures `eth0` from the
 * kernel command line (`vmlink.ip=10.0.0.1/24 vmlink.mac=...`) and runs a
 * shell on ttyS0 for {@link Vm} (vm.ts) to drive.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Repository root (this file runs from `<repo>/dist/test/helpers/`). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Modules loaded with busybox insmod, in dependency order. */
export const VIRTIO_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
] as const;

/** Printed by /init when eth0 is configured and the shell is about to start. */
export const READY_LINE = 'vmlink-init: ready';

/** The guest's /init (busybox ash). Part of the cache key: edit freely. */
export const INIT_SCRIPT = `#!/bin/busybox sh
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run /www /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
dmesg -n 1
for m in ${VIRTIO_MODULES.join(' ')}; do
  insmod /lib/modules/$m.ko || echo "vmlink-init: insmod $m failed"
done
IP=
MAC=
INTERACTIVE=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmlink.ip=*) IP="\${arg#vmlink.ip=}" ;;
    vmlink.mac=*) MAC="\${arg#vmlink.mac=}" ;;
    vmlink.name=*) hostname "\${arg#vmlink.name=}" ;;
    vmlink.interactive=1) INTERACTIVE=1 ;;
  esac
done
ip link set lo up
# virtio_net probes asynchronously: wait for eth0 (up to 10 s) when it is to be configured.
i=0
while [ -n "$IP$MAC" ] && [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$MAC" ] && ip link set eth0 address "$MAC"
  [ -n "$IP" ] && ip addr add "$IP" dev eth0
  ip link set eth0 up
elif [ -n "$IP$MAC" ]; then
  echo "vmlink-init: no eth0 (is a virtio-net-pci device attached?)"
fi
export HOME=/root
if [ -n "$INTERACTIVE" ]; then
  echo "${READY_LINE}"
  exec setsid cttyhack sh
fi
# The harness's shell reads the console as a script: no echo, no prompt, no
# line editing, and its reads retry after signals (an interactive busybox ash
# with echo off reads with fgets, which ends the shell on the EINTR of a
# SIGCHLD). PID 1 stays this script: it reaps orphans and restarts the shell
# when Ctrl-C (the console is its controlling tty) or a syntax error ends it.
stty -echo
echo "${READY_LINE}"
while :; do
  setsid cttyhack sh /dev/ttyS0
  echo "vmlink-init: shell exited with status $?; restarting it"
done
`;

export interface GuestImage {
  /** Kernel image path (bzImage). */
  kernel: string;
  /** gzip'd newc cpio initramfs path. */
  initrd: string;
  /** Kernel release, e.g. `6.1.0-56-cloud-amd64`. */
  version: string;
}

/** The newest Debian cloud kernel in /boot (env VMLINK_VM_KERNEL overrides the image path). */
export function findKernel(): { kernel: string; version: string } {
  const override = process.env['VMLINK_VM_KERNEL'];
  if (override) {
    const version = /vmlinuz-(.+)$/.exec(override)?.[1];
    if (!version) throw new Error(`VMLINK_VM_KERNEL="${override}" must be a path ending in vmlinuz-<version>`);
    return { kernel: override, version };
  }
  const versions = readdirSync('/boot')
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined && existsSync(`/lib/modules/${v}`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (!version) {
    throw new Error(
      'no /boot/vmlinuz-*-cloud-amd64 with matching /lib/modules/<version>: run scripts/setup.sh (installs linux-image-cloud-amd64)',
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
  throw new Error(`kernel module ${name}.ko not found under ${root} (compressed modules are not supported)`);
}

function busyboxPath(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (existsSync(p)) return p;
  throw new Error('busybox not found: run scripts/setup.sh (installs busybox-static)');
}

let building: Promise<GuestImage> | undefined;

/**
 * Builds (or reuses from the cache) the initramfs for the current kernel.
 * Safe to call concurrently: one build per process, and the cache file is
 * written under a temporary name and renamed into place.
 */
export function buildInitramfs(cacheDir = join(REPO_ROOT, '.cache', 'vm')): Promise<GuestImage> {
  building ??= build(cacheDir).catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}

async function build(cacheDir: string): Promise<GuestImage> {
  const { kernel, version } = findKernel();
  const bb = busyboxPath();
  const modules = VIRTIO_MODULES.map((m) => findModule(version, m));
  const hash = createHash('sha256').update(INIT_SCRIPT);
  for (const f of [bb, ...modules]) {
    const st = statSync(f);
    hash.update(`${f}:${st.size}:${st.mtimeMs}\n`);
  }
  const key = hash.digest('hex').slice(0, 16);
  const initrd = join(cacheDir, `initramfs-${version}-${key}.cpio.gz`);
  if (existsSync(initrd)) return { kernel, initrd, version };

  await mkdir(cacheDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'vmlink-initramfs-'));
  try {
    const root = join(work, 'root');
    for (const d of ['bin', 'sbin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'run', 'www', 'root', 'etc']) {
      await mkdir(join(root, d), { recursive: true });
    }
    await copyFile(bb, join(root, 'bin/busybox'));
    await chmod(join(root, 'bin/busybox'), 0o755);
    const { stdout } = await execFileP(bb, ['--list']);
    for (const applet of stdout.split('\n')) {
      if (applet && applet !== 'busybox') await symlink('busybox', join(root, 'bin', applet));
    }
    for (const [i, m] of VIRTIO_MODULES.entries()) {
      await copyFile(modules[i] as string, join(root, 'lib/modules', `${m}.ko`));
    }
    await writeFile(join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    const tmpOut = `${initrd}.${process.pid}.tmp`;
    // newc is the only cpio format the kernel unpacks (Documentation/driver-api/early-userspace).
    await execFileP('sh', [
      '-c',
      `cd "$1" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 > "$2"`,
      'sh',
      root,
      tmpOut,
    ]);
    await rename(tmpOut, initrd);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { kernel, initrd, version };
}
