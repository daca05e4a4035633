/**
 * Fair dispatch of NBD requests to backends: one flow of the QoS scheduler
 * (qos/scheduler.ts, the same one the switch uses) per export,
 * weighted by the export's weight, cost in bytes, and a bound on requests
 * executing in backends at once. When that bound is reached requests wait in
 * their export's queue; the DWRR order decides who goes next. Nothing is
 * ever dropped: clients are slowed by their own in-flight bound (the
 * connection stops reading its socket), not by losing requests.
 */
import { QosScheduler } from '../qos/scheduler.js';
import type { NbdExport } from './exports.js';

/** A unit of backend work; `run` resolves when the backend is done with it. */
export interface IoJob {
  run(): Promise<void>;
}

export interface IoSchedulerOptions {
  /** Requests executing in backends at once over all exports; default 64. */
  concurrency?: number;
  /** DWRR quantum in bytes per unit of weight; default 128 KiB. */
  quantum?: number;
}

/** Fixed cost added to every request so tiny requests are not free (bytes). */
export const REQUEST_OVERHEAD = 512;

export class IoScheduler {
  #dwrr: QosScheduler<IoJob>;
  #queues = new Map<NbdExport, number>();
  #concurrency: number;
  #running = 0;
  #idleWaiters: (() => void)[] = [];

  constructor(opts: IoSchedulerOptions = {}) {
    this.#concurrency = Math.max(1, opts.concurrency ?? 64);
    this.#dwrr = new QosScheduler<IoJob>({ quantum: opts.quantum ?? 128 * 1024 });
  }

  /** Requests executing now. */
  get running(): number {
    return this.#running;
  }

  /** Exports with a queue here (each queue holds its export, and so its backend). */
  get exportQueues(): number {
    return this.#queues.size;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#dwrr.size;
  }

  /** Queues a job for `exp` with a cost in bytes. */
  submit(exp: NbdExport, job: IoJob, cost: number): void {
    let q = this.#queues.get(exp);
    if (q === undefined) {
      q = this.#dwrr.addFlow({ weight: exp.weight });
      this.#queues.set(exp, q);
    }
    this.#dwrr.enqueue(q, job, cost + REQUEST_OVERHEAD);
    this.#pump();
  }

  /**
   * Drops the queue of an export that is no longer served, so the scheduler
   * holds no reference to it (nor to its backend's memory). A queue that
   * still holds jobs is kept so they run (the daemon removes an export only
   * when no client uses it, so its queue is empty then).
   */
  forget(exp: NbdExport): void {
    const q = this.#queues.get(exp);
    if (q === undefined || this.#dwrr.queued(q) > 0) return;
    this.#dwrr.removeFlow(q);
    this.#queues.delete(exp);
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.#running === 0 && this.#dwrr.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #done = (): void => {
    this.#running--;
    this.#pump();
  };

  #pump(): void {
    while (this.#running < this.#concurrency) {
      const job = this.#dwrr.dequeue();
      if (job === undefined) break;
      this.#running++;
      // job.run never rejects (the connection turns failures into replies); both ends are handled anyway.
      job.run().then(this.#done, this.#done);
    }
    if (this.#running === 0 && this.#dwrr.size === 0 && this.#idleWaiters.length) {
      const w = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const f of w) f();
    }
  }
}
