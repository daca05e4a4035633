/**
 * Per-export NBD I/O statistics: requests, errors and a latency histogram
 * per command, and requests in flight. Kept by the connections at request
 * time with a few typed-array increments (no allocation per request); read
 * by views and metrics when asked.
 */
import { CMD } from './nbd/constants.js';

/**
 * The operations counted, in the order of the per-op arrays. `other`: a
 * command this server does not know (answered EINVAL).
 */
export const IO_OPS = ['read', 'write', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status', 'other'] as const;

export type IoOp = (typeof IO_OPS)[number];

/**
 * Upper bounds of the latency buckets in seconds (log-spaced 1-2.5-5 from
 * 50 µs to 10 s); a last bucket (+Inf) takes what is slower. Latency is
 * from the request's arrival (parsed) to its reply being handed to the
 * socket: queueing in the I/O scheduler included, the network not.
 */
export const LATENCY_BOUNDS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const NB = LATENCY_BOUNDS_SECONDS.length + 1;
const NOPS = IO_OPS.length;
const OTHER = NOPS - 1;
/** Bounds in milliseconds (what performance.now() measures), searched per request. */
const BOUNDS_MS = Float64Array.from(LATENCY_BOUNDS_SECONDS, (s) => s * 1000);

/** The index of an NBD command (NBD_CMD_*) in {@link IO_OPS}. */
export function opIndex(type: number): number {
  switch (type) {
    case CMD.READ:
      return 0;
    case CMD.WRITE:
      return 1;
    case CMD.FLUSH:
      return 2;
    case CMD.TRIM:
      return 3;
    case CMD.CACHE:
      return 4;
    case CMD.WRITE_ZEROES:
      return 5;
    case CMD.BLOCK_STATUS:
      return 6;
    default:
      return OTHER;
  }
}

/** One operation's numbers in a {@link IoStatsView}. */
export interface IoOpView {
  /** Requests answered (successes and errors). */
  requests: number;
  /** Requests answered with an error. */
  errors: number;
  /** Sum of their latencies in seconds. */
  seconds: number;
  /**
   * Requests per latency bucket (not cumulative): one count per bound of
   * `latency_bounds_seconds` (at most that many seconds, more than the
   * previous bound), then one for slower ones. Sums to `requests`.
   */
  buckets: number[];
}

/** The I/O statistics of an export as the API shows them. */
export interface IoStatsView {
  /** Requests received and not yet answered (queued in the scheduler or in the backend), over all clients. */
  in_flight: number;
  /** The most there have been in flight at once since the export was added. */
  max_in_flight: number;
  /** Upper bounds of the latency buckets, seconds. */
  latency_bounds_seconds: readonly number[];
  /** One entry per operation, every operation present (zeros when unused). */
  ops: Record<IoOp, IoOpView>;
}

/** Live I/O statistics of one export (mutated by its connections). */
export class IoStats {
  /** Requests received and not yet answered. */
  inFlight = 0;
  /** High-water mark of {@link inFlight}. */
  maxInFlight = 0;
  readonly #requests = new Float64Array(NOPS);
  readonly #errors = new Float64Array(NOPS);
  readonly #seconds = new Float64Array(NOPS);
  /** NOPS rows of NB bucket counts. */
  readonly #buckets = new Float64Array(NOPS * NB);

  /** A request arrived: call {@link end} once it is answered. */
  begin(): void {
    if (++this.inFlight > this.maxInFlight) this.maxInFlight = this.inFlight;
  }

  /**
   * A request was answered.
   * @param op index in {@link IO_OPS} (see {@link opIndex})
   * @param ms its latency in milliseconds (a performance.now() difference)
   * @param failed answered with an error
   */
  end(op: number, ms: number, failed: boolean): void {
    this.inFlight--;
    const r = this.#requests;
    r[op] = (r[op] as number) + 1;
    if (failed) this.#errors[op] = (this.#errors[op] as number) + 1;
    this.#seconds[op] = (this.#seconds[op] as number) + ms / 1000;
    // Linear scan: 17 bounds, most requests stop in the first few.
    let b = 0;
    while (b < NB - 1 && ms > (BOUNDS_MS[b] as number)) b++;
    const k = op * NB + b;
    this.#buckets[k] = (this.#buckets[k] as number) + 1;
  }

  /** A snapshot for the API. */
  view(): IoStatsView {
    const ops = {} as Record<IoOp, IoOpView>;
    IO_OPS.forEach((name, i) => {
      ops[name] = {
        requests: this.#requests[i] as number,
        errors: this.#errors[i] as number,
        seconds: this.#seconds[i] as number,
        buckets: Array.from(this.#buckets.subarray(i * NB, (i + 1) * NB)),
      };
    });
    return {
      in_flight: this.inFlight,
      max_in_flight: this.maxInFlight,
      latency_bounds_seconds: LATENCY_BOUNDS_SECONDS,
      ops,
    };
  }
}
