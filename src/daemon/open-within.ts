/** Opening an export's backend with a deadline (a remote that accepts but never answers). */
import type { BlockBackend } from '../storage/backend.js';
import { type BackendSpec, openBackend } from '../storage/backends/index.js';

/** Opens a backend, or rejects after `ms`; a backend that opens later is closed at once. */
export function openWithin(spec: BackendSpec, ms: number): Promise<BlockBackend> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new Error(`it did not open within ${ms / 1000} s (is the remote NBD server answering?)`));
    }, ms);
    openBackend(spec).then(
      (b) => {
        clearTimeout(timer);
        if (late) void b.close().catch(() => undefined);
        else resolve(b);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
