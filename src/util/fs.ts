/** File-system helpers. */
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * `mkdir -p`: creates `dir` and missing parents with `mode`.
 * Returns the first directory it created, or undefined when `dir` existed.
 *
 * Node 20's `mkdir(..., { recursive: true })` never settles for some paths
 * under /proc (libuv retries forever), which would hang whoever awaits it; this
 * walks the path itself, one mkdir(2) per missing component.
 */
export async function mkdirp(dir: string, mode = 0o755): Promise<string | undefined> {
  try {
    await mkdir(dir, { mode });
    return dir;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if ((await stat(dir)).isDirectory()) return undefined;
      throw err;
    }
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw err;
    const first = await mkdirp(parent, mode);
    try {
      await mkdir(dir, { mode });
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    }
    return first ?? dir;
  }
}
