/**
 * The event stream (docs/observe.md "Events"): what changes in the fabric,
 * as it happens: ports up and down, MACs learned and moved, links up and
 * down and their path, admission decisions, exports, cluster hosts, reloads.
 *
 * {@link EventHub} numbers each event (ids rise by one from 1 since the
 * daemon started), keeps the last ones in a replay ring so a client resumes
 * where it left off (`Last-Event-ID` or `?since=ID`), and hands them to the
 * subscribers. A subscriber that cannot keep up says so (its callback
 * returns false); it then gets a last `stream.lost` event and is cut off, so
 * a stuck client never makes the daemon hold more than its bound.
 *
 * {@link eventRoutes} serves `GET /v1/events` as server-sent events, on the
 * control socket and on the HTTP endpoint. Nothing here is on the data path:
 * the sources publish from the control plane (daemon/events.ts).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from '../log.js';
import { BadRequestError } from './errors.js';

/** Every event type the daemon publishes. */
export const EVENT_TYPES = [
  'port.added',
  'port.removed',
  'port.up',
  'port.down',
  'mac.learned',
  'mac.moved',
  'mac.forgotten',
  'link.up',
  'link.down',
  'link.path',
  'admission.accepted',
  'admission.refused',
  'export.open',
  'export.close',
  'host.up',
  'host.down',
  'reload',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/**
 * Events about the stream itself, never stored: `stream.lost` (the last one:
 * the client did not keep up and is cut off) and `stream.gap` (a resume from
 * an id the ring no longer holds, or from another run of the daemon). They
 * carry no id, so a client's last id stays the last real event's.
 */
export type StreamEventType = 'stream.lost' | 'stream.gap';

/** One event: its id, type, time (ISO 8601), the host that saw it, then its own fields. */
export interface VmlinkEvent {
  /** Absent on stream.* events. */
  id?: number;
  type: EventType | StreamEventType;
  time: string;
  host: string;
  [field: string]: unknown;
}

/** Which events a subscriber wants. */
export interface EventFilter {
  /** Replay the held events after this id first (0: all held). */
  since?: number | undefined;
  /** Types (`port.up`) or categories (`port`); absent or empty: all. */
  types?: readonly string[] | undefined;
}

/** Receives events; returns false when it cannot take more (it is then cut off with `stream.lost`). */
export type EventSubscriber = (ev: VmlinkEvent) => boolean | undefined;

export interface EventHubOptions {
  /** This host's id, on every event. */
  host: string;
  /** Events held for replay; default 1000. */
  capacity?: number | undefined;
  logger?: Logger | undefined;
  /** ms epoch (tests). */
  now?: () => number;
}

const CATEGORIES = [...new Set(EVENT_TYPES.map((t) => t.split('.')[0] as string))];

/** Checks a list of types and categories; throws BadRequestError (400) naming the bad one. */
export function checkEventTypes(types: readonly string[]): string[] {
  for (const t of types) {
    if (!(EVENT_TYPES as readonly string[]).includes(t) && !CATEGORIES.includes(t)) {
      throw new BadRequestError(
        `"${t}" is not an event type; use one of the categories ${CATEGORIES.join(', ')} or a type: ${EVENT_TYPES.join(', ')}`,
      );
    }
  }
  return [...types];
}

function matcher(types: readonly string[] | undefined): (type: string) => boolean {
  if (!types || types.length === 0) return () => true;
  const set = new Set(types);
  return (type) => set.has(type) || set.has(type.slice(0, type.indexOf('.')));
}

interface Sub {
  fn: EventSubscriber;
  wants: (type: string) => boolean;
  /** Events handed over (for the lost message). */
  delivered: number;
}

export class EventHub {
  readonly host: string;
  readonly #cap: number;
  /** The replay ring: the last {@link #cap} events, oldest at #head. */
  readonly #ring: VmlinkEvent[] = [];
  #head = 0;
  #nextId = 1;
  readonly #subs = new Set<Sub>();
  readonly #log: Logger | undefined;
  readonly #now: () => number;

  constructor(opts: EventHubOptions) {
    this.host = opts.host;
    this.#cap = opts.capacity ?? 1000;
    this.#log = opts.logger;
    this.#now = opts.now ?? Date.now;
  }

  /** Subscribers now. */
  get subscribers(): number {
    return this.#subs.size;
  }

  /** The id of the last event published (0: none yet). */
  get lastId(): number {
    return this.#nextId - 1;
  }

  /** Publishes one event: gives it an id, the time and this host, holds it for replay and hands it to every subscriber. */
  publish(type: EventType, fields: Record<string, unknown>): void {
    const ev: VmlinkEvent = { id: this.#nextId++, type, time: this.#stamp(), host: this.host, ...fields };
    if (this.#ring.length < this.#cap) this.#ring.push(ev);
    else {
      this.#ring[this.#head] = ev;
      this.#head = (this.#head + 1) % this.#cap;
    }
    for (const s of this.#subs) if (s.wants(type)) this.#deliver(s, ev);
  }

  /**
   * Calls `fn` with the held events after `since` (when given), then with
   * every new one, filtered by `types` (checked: BadRequestError). Returns the
   * function that stops it.
   */
  subscribe(fn: EventSubscriber, filter: EventFilter = {}): () => void {
    const types = filter.types ? checkEventTypes(filter.types) : undefined;
    const s: Sub = { fn, wants: matcher(types), delivered: 0 };
    this.#subs.add(s);
    if (filter.since !== undefined) this.#replay(s, filter.since);
    return () => {
      this.#subs.delete(s);
    };
  }

  #replay(s: Sub, since: number): void {
    const held = this.#held();
    const oldest = held[0]?.id ?? this.#nextId;
    if (since > this.lastId) {
      // An id this run never gave: the client followed an earlier run of the daemon.
      this.#deliver(
        s,
        this.#streamEvent('stream.gap', { after: since, reason: 'the daemon restarted; replaying what it holds' }),
      );
      since = 0;
    } else if (since + 1 < oldest) {
      this.#deliver(
        s,
        this.#streamEvent('stream.gap', {
          after: since,
          missed: oldest - since - 1,
          reason: `events ${since + 1} to ${oldest - 1} are no longer held (the daemon keeps the last ${this.#cap})`,
        }),
      );
    }
    for (const ev of held) {
      if (!this.#subs.has(s)) return;
      if ((ev.id as number) > since && s.wants(ev.type)) this.#deliver(s, ev);
    }
  }

  /** The held events, oldest first. */
  #held(): VmlinkEvent[] {
    return [...this.#ring.slice(this.#head), ...this.#ring.slice(0, this.#head)];
  }

  #deliver(s: Sub, ev: VmlinkEvent): void {
    let more: boolean | undefined;
    try {
      more = s.fn(ev);
    } catch (err) {
      this.#subs.delete(s);
      this.#log?.warn({ err }, 'an event subscriber threw; it is cut off');
      return;
    }
    s.delivered++;
    if (more !== false || ev.type === 'stream.lost') return;
    this.#subs.delete(s);
    this.#log?.warn({ delivered: s.delivered }, 'an event stream did not keep up; cut off');
    try {
      s.fn(
        this.#streamEvent('stream.lost', {
          reason: `the client did not keep up (after ${s.delivered} events); resume with Last-Event-ID or ?since=`,
        }),
      );
    } catch {
      // cut off already
    }
  }

  #streamEvent(type: StreamEventType, fields: Record<string, unknown>): VmlinkEvent {
    return { type, time: this.#stamp(), host: this.host, ...fields };
  }

  #stamp(): string {
    return new Date(this.#now()).toISOString();
  }
}

// ---- server-sent events ---------------------------------------------------------------

/** What `GET /v1/events` was asked for. */
export interface EventQuery {
  types: string[] | undefined;
  since: number | undefined;
}

function idArg(what: string, text: string): number {
  const n = /^\d{1,15}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n)) {
    throw new BadRequestError(`${what} must be an event id (a whole number from 0), not "${text.slice(0, 40)}"`);
  }
  return n;
}

/**
 * Reads `?types=port,mac.moved&since=ID` and the `Last-Event-ID` header
 * (which wins over `since`: a reconnecting browser sends it with the first URL).
 * Throws BadRequestError (400) for a bad value or a repeated parameter.
 */
export function eventQuery(query: Record<string, unknown>, lastEventId: unknown): EventQuery {
  for (const [k, v] of Object.entries(query)) {
    if (k !== 'types' && k !== 'since') {
      throw new BadRequestError(`unknown query parameter "${k}" for /v1/events; it takes types= and since=`);
    }
    if (typeof v !== 'string') throw new BadRequestError(`query parameter "${k}" must be given once`);
  }
  const t = query['types'] as string | undefined;
  const types = t === undefined || t === '' ? undefined : checkEventTypes(t.split(',').map((s) => s.trim()));
  let since = query['since'] === undefined ? undefined : idArg('since', query['since'] as string);
  if (typeof lastEventId === 'string' && lastEventId !== '') since = idArg('Last-Event-ID', lastEventId.trim());
  else if (lastEventId !== undefined && typeof lastEventId !== 'string') {
    throw new BadRequestError('Last-Event-ID must be given once');
  }
  return { types, since };
}

export interface EventStreamOptions {
  /** Bytes that may wait unsent on one stream before it is cut off; default 1 MiB. */
  maxBufferedBytes?: number | undefined;
  /** A comment line this often keeps proxies and idle timers from closing a quiet stream, ms; default 15000. */
  heartbeatMs?: number | undefined;
}

/** One event as SSE: `id:` (real events only) and `data:` (the JSON), then a blank line. */
export function sseFrame(ev: VmlinkEvent): string {
  const id = ev.id === undefined ? '' : `id: ${ev.id}\n`;
  return `${id}data: ${JSON.stringify(ev)}\n\n`;
}

/** Streams the hub's events to `res` as server-sent events until either side ends. */
export function streamEvents(res: ServerResponse, hub: EventHub, q: EventQuery, opts: EventStreamOptions = {}): void {
  const max = opts.maxBufferedBytes ?? 1 << 20;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    // The connection is the stream's: closed with it (a cut-off client then sees the end at once).
    connection: 'close',
    'x-accel-buffering': 'no',
  });
  // Tells the client the stream is open (and which id it starts after), before any event.
  res.write(`: vmlink events of host ${hub.host}, last id ${hub.lastId}\n\n`);
  let stop: (() => void) | undefined;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(beat);
    stop?.();
    res.end();
  };
  const beat = setInterval(() => {
    if (!res.destroyed) res.write(': heartbeat\n\n');
  }, opts.heartbeatMs ?? 15_000);
  beat.unref();
  res.on('close', end);
  res.on('error', end);
  stop = hub.subscribe(
    (ev) => {
      if (ended || res.destroyed) return false;
      res.write(sseFrame(ev));
      if (ev.type === 'stream.lost') {
        setImmediate(end);
        return false;
      }
      return res.writableLength <= max;
    },
    { since: q.since, types: q.types },
  );
}

/** Registers `GET /v1/events` (server-sent events) on `app`. */
export function eventRoutes(hub: EventHub, opts: EventStreamOptions = {}): (app: FastifyInstance) => void {
  return (app) => {
    app.get('/v1/events', async (req: FastifyRequest, reply) => {
      const q = eventQuery(req.query as Record<string, unknown>, req.headers['last-event-id']);
      reply.hijack();
      streamEvents(reply.raw, hub, q, opts);
      return reply;
    });
  };
}
