/**
 * Wakes the sessions whose front-end memory faulted. The addon's SIGBUS guard
 * (src/native/c/guard.c) turns an access beyond the end of a front-end's
 * memory file into zeros and a count on that mapping, and writes an eventfd;
 * this watches the eventfd (one Poller per process, started while a session
 * is registered) and asks every registered session to look at its mappings.
 * A fault in a native ring call is also reported by the call itself; this
 * catches the accesses made from JavaScript (frames handed on in place,
 * the ring walk) and those into another guest's memory.
 */
import type { NativeAddon, Poller } from '../../native/index.js';

const checks = new Set<() => void>();
let poller: Poller | undefined;

/**
 * Calls `check` after every guarded fault in this process until the returned
 * function is called. `check` looks at its own mappings and acts; it must
 * not throw.
 */
export function watchFaults(n: NativeAddon, check: () => void): () => void {
  checks.add(check);
  if (poller === undefined) {
    const fd = n.guardFd();
    poller = new n.Poller(fd, () => {
      n.eventfdRead(fd);
      // A copy: a check may close its session, which unregisters it.
      for (const c of [...checks]) c();
    });
    poller.start(n.READABLE);
  }
  return () => {
    checks.delete(check);
    if (checks.size === 0 && poller !== undefined) {
      poller.close();
      poller = undefined;
    }
  };
}
