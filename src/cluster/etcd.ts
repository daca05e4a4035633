/**
 * The daemon's one connection to etcd: the `etcd3` client namespaced to the
 * fabric's prefix, an availability state kept by a single bounded health
 * loop, and `run()`, which gives every operation a deadline and turns any
 * failure into ClusterUnavailableError.
 *
 * While etcd is away nothing spins: the health loop probes with exponential
 * backoff and jitter (250 ms .. 5 s), and logs once per state change (down
 * with the reason, up with the outage's length), never per retry. Calls fail
 * fast: a refused connection fails at once, a silent one at the deadline.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions, isRecoverableError, type Lease, type Namespace } from 'etcd3';
import { describeError, VmlinkError } from '../errors.js';
import type { Logger } from '../log.js';
import { ClusterTlsConfigError, ClusterUnavailableError } from './errors.js';

export interface EtcdConnectionOptions {
  /** Client URLs, e.g. `http://10.0.0.1:2379`; all http or all https. */
  endpoints: string[];
  /** Key prefix of the fabric; default `/vmlink/`. */
  prefix?: string;
  /** Client TLS: PEM file paths of the CA that signed etcd's certificate, and of this host's certificate and key. */
  tls?: { ca: string; cert: string; key: string };
  logger: Logger;
  /** Deadline of one operation (and of one health probe); default 3000 ms. */
  opTimeoutMs?: number;
  /** Time between health probes while etcd answers; default 5000 ms. */
  probeIntervalMs?: number;
}

/** Exponential backoff with jitter between `minMs` and `maxMs` (each delay is drawn in [cap/2, cap]). */
export class Backoff {
  #cap: number;

  constructor(
    readonly minMs = 250,
    readonly maxMs = 5000,
  ) {
    this.#cap = minMs;
  }

  /** The next delay; doubles the cap up to `maxMs`. */
  next(): number {
    const cap = this.#cap;
    this.#cap = Math.min(this.maxMs, cap * 2);
    return cap / 2 + Math.random() * (cap / 2);
  }

  reset(): void {
    this.#cap = this.minMs;
  }
}

type StateListener = (up: boolean, reason: string) => void;

function readPem(field: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ClusterTlsConfigError(field, file, describeError(err), { cause: err });
  }
}

/**
 * A failure worth another attempt: the network or the server (not the request) failed. An open circuit
 * breaker (every member failed its last calls) is not: the call rejects at once.
 */
function retryable(err: unknown): boolean {
  return err instanceof Error && isRecoverableError(err);
}

/** Rejects after `ms` with a timeout error; the timer is cleared by `clear()`. */
function deadline(ms: number): { promise: Promise<never>; clear: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return { promise, clear: () => clearTimeout(timer) };
}

export class EtcdConnection {
  /** The client, namespaced to the prefix: every key below is relative to it. */
  readonly kv: Namespace;
  readonly prefix: string;
  readonly endpoints: readonly string[];
  readonly logger: Logger;
  readonly #client: Etcd3;
  readonly #opTimeoutMs: number;
  readonly #probeIntervalMs: number;
  readonly #listeners = new Set<StateListener>();
  readonly #backoff = new Backoff();
  readonly #keepers = new Set<LeaseKeeper>();
  #available = false;
  #known = false;
  #downSince = 0;
  #timer: NodeJS.Timeout | undefined;
  #probing = false;
  #closed = false;

  constructor(opts: EtcdConnectionOptions) {
    this.endpoints = [...opts.endpoints];
    this.prefix = opts.prefix ?? '/vmlink/';
    this.logger = opts.logger;
    this.#opTimeoutMs = opts.opTimeoutMs ?? 3000;
    this.#probeIntervalMs = opts.probeIntervalMs ?? 5000;
    // Each attempt of a unary call gets a third of the operation's deadline: a request lost with a killed
    // leader fails its attempt and the client's retry (another member) still fits. Streams (watch, lease
    // keep-alive) get no deadline; keep-alive pings find a silent peer.
    const attemptMs = Math.max(250, Math.floor(this.#opTimeoutMs / 3));
    const options: IOptions = {
      hosts: this.endpoints as string[],
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptMs }),
      grpcOptions: {
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5000,
        'grpc.keepalive_permit_without_calls': 1,
      },
    };
    if (opts.tls)
      options.credentials = {
        rootCertificate: readPem('the CA certificate', opts.tls.ca),
        certChain: readPem('the client certificate', opts.tls.cert),
        privateKey: readPem('the client key', opts.tls.key),
      };
    this.#client = new Etcd3(options);
    this.kv = this.#client.namespace(this.prefix);
    this.#schedule(0);
  }

  /** True while the last health probe (or operation) found etcd answering. False until the first probe answers. */
  get available(): boolean {
    return this.#available;
  }

  /** Calls `fn` on every change of availability (not per retry). Returns the unsubscribe function. */
  onState(fn: StateListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Runs `op` within the operation deadline. A VmlinkError thrown by `op`
   * passes through; any other failure (refused, timed out, no quorum) becomes
   * a ClusterUnavailableError saying `cannot <what>`, and makes the health
   * loop probe at once. While etcd is believed up, a failure the client
   * calls recoverable (a leader election, a member just killed) is retried
   * within the deadline; while it is known to be down, the first failure
   * rejects. `op` may run more than once: make it idempotent (a put, or a
   * transaction guarded by comparisons).
   */
  async run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ClusterUnavailableError(what, 'the etcd connection is closed');
    const end = Date.now() + this.#opTimeoutMs;
    const limit = deadline(this.#opTimeoutMs);
    try {
      for (let pause = 50; ; pause *= 2) {
        try {
          return await Promise.race([op(), limit.promise]);
        } catch (err) {
          if (!this.#available || !retryable(err) || Date.now() + pause >= end) throw err;
        }
        await Promise.race([new Promise((r) => setTimeout(r, pause)), limit.promise]);
      }
    } catch (err) {
      if (err instanceof VmlinkError) throw err;
      this.suspect();
      throw new ClusterUnavailableError(what, describeError(err), { cause: err });
    } finally {
      limit.clear();
    }
  }

  /**
   * A lease of `ttlSec` seconds (the etcd3 Lease: `put(key)` binds a key to
   * it, `grant()` gives its id, `revoke()`/`release()` end it, 'lost' fires
   * when etcd says it is gone). Its keep-alives are driven here, not by
   * etcd3's loop (which retries every 100 ms during an outage and gives the
   * lease up locally after 2 TTLs): one every TTL/3, a bounded backoff after
   * a failure, none while etcd is known down, one at once when it is back.
   * etcd itself decides whether the lease survived (its leader renews leases
   * after an election); 'lost' follows its answer.
   */
  lease(ttlSec: number): Lease {
    const lease = this.kv.lease(ttlSec, { autoKeepAlive: false });
    const keeper = new LeaseKeeper(this, lease, ttlSec, this.#opTimeoutMs, () => this.#keepers.delete(keeper));
    this.#keepers.add(keeper);
    return lease;
  }

  /** An operation or a watch failed: probe now (when etcd is believed up) instead of at the next interval. */
  suspect(): void {
    if (this.#closed || !this.#available || this.#probing) return;
    this.#schedule(0);
  }

  /** Stops the health loop and closes the client. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Watches not closed first see a connection that is down for good, and wait instead of retrying.
    this.#available = false;
    clearTimeout(this.#timer);
    for (const k of this.#keepers) k.stop();
    this.#listeners.clear();
    this.#client.close();
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#probe(), ms);
    this.#timer.unref();
  }

  /** One probe: a linearizable read (it needs a quorum, as writes do), then the next probe is scheduled. */
  async #probe(): Promise<void> {
    if (this.#closed || this.#probing) return;
    this.#probing = true;
    let reason: string | undefined;
    const limit = deadline(this.#opTimeoutMs);
    try {
      await Promise.race([this.kv.get('fabric').exec(), limit.promise]);
    } catch (err) {
      reason = describeError(err);
    } finally {
      limit.clear();
      this.#probing = false;
    }
    if (this.#closed) return;
    this.#setState(reason === undefined, reason ?? 'etcd answers');
    if (reason === undefined) {
      this.#backoff.reset();
      this.#schedule(this.#probeIntervalMs);
    } else this.#schedule(this.#backoff.next());
  }

  #setState(up: boolean, reason: string): void {
    if (this.#known && up === this.#available) return;
    const first = !this.#known;
    this.#known = true;
    this.#available = up;
    const endpoints = this.endpoints.join(',');
    if (up && first) this.logger.info({ endpoints }, 'etcd reachable');
    else if (up) {
      const outageMs = Date.now() - this.#downSince;
      this.logger.info({ endpoints, outageMs }, `etcd reachable again after ${(outageMs / 1000).toFixed(1)} s`);
    } else {
      this.#downSince = Date.now();
      this.logger.warn({ endpoints, reason }, `etcd unreachable (${reason}); retrying with backoff`);
    }
    for (const fn of this.#listeners) {
      try {
        fn(up, reason);
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'etcd state listener failed');
      }
    }
  }
}

/** Drives the keep-alives of one lease (see EtcdConnection.lease). */
class LeaseKeeper {
  readonly #backoff: Backoff;
  readonly #intervalMs: number;
  readonly #offState: () => void;
  #timer: NodeJS.Timeout | undefined;
  #waiting = false;
  #stopped = false;

  constructor(
    readonly conn: EtcdConnection,
    readonly lease: Lease,
    ttlSec: number,
    readonly timeoutMs: number,
    readonly onStop: () => void,
  ) {
    this.#intervalMs = (ttlSec * 1000) / 3;
    this.#backoff = new Backoff(250, Math.max(250, this.#intervalMs));
    this.#offState = conn.onState((up) => {
      if (up && this.#waiting) {
        this.#waiting = false;
        this.#schedule(0);
      }
    });
    // A failed grant is reported by etcd3 as 'lost'.
    lease.grant().then(
      () => this.#schedule(this.#intervalMs),
      () => this.stop(),
    );
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#offState();
    this.onStop();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#beat(), ms);
  }

  async #beat(): Promise<void> {
    if (this.lease.revoked()) return this.stop();
    const limit = deadline(this.timeoutMs);
    try {
      const res = await Promise.race([this.lease.keepaliveOnce(), limit.promise]);
      this.#backoff.reset();
      this.lease.emit('keepaliveSucceeded', res);
      this.#schedule(this.#intervalMs);
    } catch (err) {
      // etcd said the lease is gone: etcd3 has emitted 'lost' and closed it.
      if (this.lease.revoked()) return this.stop();
      this.lease.emit('keepaliveFailed', err);
      this.conn.suspect();
      if (this.conn.available) this.#schedule(this.#backoff.next());
      else this.#waiting = true;
    } finally {
      limit.clear();
    }
  }
}
