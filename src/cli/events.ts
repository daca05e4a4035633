/**
 * `vmlink events [--json] [--type T...] [--since ID]`: follows the daemon's
 * event stream (docs/observe.md "Events"): one line per event for people, or
 * one JSON object per line. Runs until Ctrl-C (status 0), until the reader of
 * stdout goes away (EPIPE, status 0), or until the daemon ends the stream
 * (status 1, with the reason).
 */
import type { Command } from 'commander';
import { EVENT_TYPES, type VmlinkEvent } from '../api/client.js';
import { intArg, UsageError } from './args.js';
import { defineAction, EXIT_FAILED, EXIT_OK } from './context.js';
import { style, useColour } from './output.js';

const CATEGORIES = [...new Set(EVENT_TYPES.map((t) => t.split('.')[0] as string))];

/** `--type port --type mac.moved` or `--type port,mac.moved`: checked here, so a typo is exit 2. */
function typesArg(values: unknown): string[] | undefined {
  if (values === undefined) return undefined;
  const list = (values as string[]).flatMap((v) => v.split(',')).map((v) => v.trim());
  for (const t of list) {
    if (!(EVENT_TYPES as readonly string[]).includes(t) && !CATEGORIES.includes(t)) {
      throw new UsageError(
        `--type "${t}" is not an event type: use a category (${CATEGORIES.join(', ')}) or a type (${EVENT_TYPES.join(', ')})`,
      );
    }
  }
  return list;
}

const SKIP = new Set(['id', 'type', 'time', 'host']);

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v);
}

/** One event for people: `TIME HOST TYPE key=value ...` (undefined fields left out). */
export function formatEvent(ev: VmlinkEvent, colour = useColour()): string {
  const fields = Object.entries(ev)
    .filter(([k, v]) => !SKIP.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
  const bad = ev.type.endsWith('.down') || ev.type.endsWith('.refused') || ev.type.startsWith('stream.');
  const type = style(ev.type.padEnd(18), bad ? 'red' : ev.type.endsWith('.up') ? 'green' : 'bold', colour);
  return `${ev.time} ${ev.host} ${type} ${fields}`.trimEnd();
}

export function addEventsCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('events')
    .description(
      "follow the daemon's events: ports up/down, MACs learned/moved, links, admission, exports (Ctrl-C stops)",
    )
    .option('--json', 'one JSON object per line')
    .option('-t, --type <type...>', 'only these types or categories (port, mac, link, admission, export, host, reload)')
    .option('--since <id>', 'first replay the events the daemon still holds after this id (0: all it holds)');
  defineAction(cmd, done, async (_args, opts, cli) => {
    const types = typesArg(opts['type']);
    const since = opts['since'] === undefined ? undefined : intArg('--since', String(opts['since']), 0, 2 ** 53 - 1);
    const json = opts['json'] === true;
    const ac = new AbortController();
    const stop = () => ac.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // EPIPE: whoever read stdout is gone (e.g. `| head`); stop quietly.
    process.stdout.on('error', stop);
    let last: VmlinkEvent | undefined;
    let lastId = since;
    try {
      const stream = cli.client.events({
        ...(types ? { types } : {}),
        ...(since === undefined ? {} : { since }),
        signal: ac.signal,
        onOpen: () => process.stderr.write(`following the events of the daemon at ${cli.controlPath} (Ctrl-C stops)\n`),
      });
      for await (const ev of stream) {
        last = ev;
        if (ev.id !== undefined) lastId = ev.id;
        if (ac.signal.aborted) break;
        process.stdout.write(`${json ? JSON.stringify(ev) : formatEvent(ev)}\n`);
      }
    } finally {
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
    }
    if (ac.signal.aborted) return EXIT_OK;
    const resume = lastId === undefined ? '' : `; resume with: vmlink events --since ${lastId}`;
    const why =
      last?.type === 'stream.lost'
        ? `the daemon cut the stream off: ${String(last['reason'])}`
        : 'the daemon ended the event stream (did it stop?)';
    process.stderr.write(`error: ${why}${resume}\n`);
    return EXIT_FAILED;
  });
}
