/**
 * The guest image for VM tests: the Debian cloud kernel from /boot and the
 * busybox initramfs of src/guest/image.ts (the same one `vmlink guest-image`
 * writes), cached under `<repo>/.cache/vm/`, keyed by the kernel version and
 * a hash of everything that goes into it.
 *
 * The guest's `/init` (src/guest/init-script.ts) loads the virtio-blk and
 * virtio-net modules, configures `eth0` from the kernel command line
 * (`vmlink.ip=10.0.0.1/24 vmlink.mac=...`) and runs a shell on ttyS0 for
 * {@link Vm} (vm.ts) to drive.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCachedInitramfs, type GuestImage } from '../../src/guest/image.js';

export type { GuestImage } from '../../src/guest/image.js';
export { READY_LINE } from '../../src/guest/init-script.js';

/** Repository root (this file runs from `<repo>/dist/test/helpers/`). */
export const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));

let building: Promise<GuestImage> | undefined;

/**
 * Builds (or reuses from the cache) the initramfs for the current kernel.
 * Safe to call concurrently: one build per process, and the cache file is
 * written under a temporary name and renamed into place.
 */
export function buildInitramfs(cacheDir = join(REPO_ROOT, '.cache', 'vm')): Promise<GuestImage> {
  building ??= buildCachedInitramfs(cacheDir).catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}
