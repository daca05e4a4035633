/**
 * The daemon process's own health for `GET /v1/status`: resident memory,
 * open file descriptors and event-loop delay. The delay is measured by
 * perf_hooks' monitorEventLoopDelay (a libuv timer sampling every 20 ms) and
 * reported over the last complete one-second window, so readers do not
 * disturb each other.
 */
import { readdirSync } from 'node:fs';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { ProcessStatusView } from '../api/client.js';

/** Sampling resolution of the event-loop delay monitor, ms. */
const RESOLUTION_MS = 20;
/** Length of the window the delay is reported over, ms. */
const WINDOW_MS = 1000;

export interface ProcessStats {
  /** The current figures. */
  view(): ProcessStatusView;
  /** Stops the monitor and its timer. Idempotent. */
  stop(): void;
}

/** Starts measuring; call {@link ProcessStats.stop} when the daemon stops. */
export function startProcessStats(): ProcessStats {
  const h: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  h.enable();
  let last = { p50: 0, p99: 0, max: 0 };
  let maxEver = 0;
  // The histogram records each timer interval whole (at least the resolution): report the lateness beyond it.
  const ms = (ns: number): number => Math.max(0, Math.round((ns / 1e6 - RESOLUTION_MS) * 100) / 100);
  const timer = setInterval(() => {
    // An empty histogram reports NaN/huge values: no sample means no delay to report.
    last = h.count ? { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) } : last;
    maxEver = Math.max(maxEver, last.max);
    h.reset();
  }, WINDOW_MS);
  timer.unref();
  return {
    view(): ProcessStatusView {
      let fds = -1;
      try {
        fds = readdirSync('/proc/self/fd').length - 1; // minus the one reading the directory
      } catch {
        // Not Linux: unknown.
      }
      const mem = process.memoryUsage();
      return {
        rss_bytes: mem.rss,
        heap_used_bytes: mem.heapUsed,
        fds,
        event_loop_delay_ms: { ...last, max_since_start: maxEver },
      };
    },
    stop(): void {
      clearInterval(timer);
      h.disable();
    },
  };
}
