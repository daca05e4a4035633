/**
 * `vmlink top`: a live terminal view of the busiest ports and links
 * (top-view.ts lays it out).
 *
 * Every interval it reads `GET /v1/ports` and `GET /v1/links` (counters the
 * daemon keeps anyway: nothing is sampled on the data path) and redraws.
 * On a terminal it draws on the alternate screen with the cursor hidden and
 * reads keys raw: `q` or Ctrl-C quit with status 0 and put the terminal back
 * as it was (also on SIGINT, SIGTERM, SIGHUP). `--once`, or a stdout that is
 * not a terminal, prints one frame as plain text (after one interval, so it
 * has rates) and exits.
 */
import type { Command } from 'commander';
import type { ControlClient } from '../api/client.js';
import { describeError } from '../errors.js';
import { choiceArg, numberArg, UsageError } from './args.js';
import { defineAction } from './context.js';
import { print } from './output.js';
import { renderFrame, SORT_KEYS, type SortKey, type TopSample, topRows } from './top-view.js';

/** Alternate screen on, cursor hidden; and back. */
const ENTER = '\x1b[?1049h\x1b[?25l';
const LEAVE = '\x1b[?25h\x1b[?1049l';
const CTRL_C = '\x03';

interface TopOptions {
  interval: number;
  sort: SortKey;
  once: boolean;
}

async function sample(client: ControlClient): Promise<TopSample> {
  const [ports, links] = await Promise.all([client.listPorts(), client.listLinks()]);
  return { at: performance.now(), ports, links };
}

const clock = (): string => new Date().toTimeString().slice(0, 8);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One frame as plain text, after one interval (for scripts and pipes). */
async function once(client: ControlClient, host: string, o: TopOptions): Promise<number> {
  const first = await sample(client);
  await sleep(o.interval * 1000);
  const rows = topRows(first, await sample(client));
  const opts = { rows: Number.MAX_SAFE_INTEGER, cols: Number.MAX_SAFE_INTEGER, sort: o.sort, interval: o.interval };
  const lines = renderFrame(rows, { ...opts, host, time: clock(), live: false });
  print(`${lines.join('\n')}\n`);
  return 0;
}

/** The live view until `q`, Ctrl-C or a signal; resolves with 0 once the terminal is restored. */
function live(client: ControlClient, host: string, o: TopOptions): Promise<number> {
  const out = process.stdout;
  const input = process.stdin;
  let prev: TopSample | undefined;
  let cur: TopSample | undefined;
  let error: string | undefined;
  let busy = false;
  let stopped = false;

  const draw = (): void => {
    if (stopped) return;
    const rows = cur ? topRows(prev, cur) : { ports: [], links: [] };
    const size = { rows: out.rows || 24, cols: out.columns || 80 };
    const lines = renderFrame(rows, {
      ...size,
      sort: o.sort,
      interval: o.interval,
      host,
      time: clock(),
      live: true,
      error,
    });
    // Home, each line cleared to its end, everything below cleared: no flicker, no leftovers after a resize.
    out.write(`\x1b[H${lines.join('\x1b[K\r\n')}\x1b[K\x1b[J`);
  };
  const tick = async (): Promise<void> => {
    if (busy || stopped) return;
    busy = true;
    try {
      const s = await sample(client);
      prev = cur;
      cur = s;
      error = undefined;
    } catch (err) {
      error = `cannot read the daemon: ${describeError(err)}`;
    } finally {
      busy = false;
    }
    draw();
  };

  return new Promise((resolve) => {
    const timer = setInterval(() => void tick(), o.interval * 1000);
    const raw = input.isTTY === true;
    const onKey = (data: Buffer): void => {
      const s = data.toString('latin1');
      if (s.includes('q') || s.includes('Q') || s.includes(CTRL_C)) stop();
    };
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    // The terminal is put back even if the process ends some other way.
    const restore = (): void => {
      if (raw) input.setRawMode(false);
      out.write(LEAVE);
    };
    function stop(): void {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      out.off('resize', draw);
      input.off('data', onKey);
      for (const s of signals) process.off(s, stop);
      process.off('exit', restore);
      restore();
      input.pause();
      resolve(0);
    }
    for (const s of signals) process.on(s, stop);
    process.on('exit', restore);
    out.on('resize', draw); // SIGWINCH
    if (raw) input.setRawMode(true);
    input.on('data', onKey);
    input.resume();
    out.write(ENTER);
    draw();
    void tick();
  });
}

export function addTopCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('top')
    .description('live view of the busiest ports and links: rates (bits/s, frames/s) and drops by reason; q quits')
    .option('--interval <seconds>', 'seconds between refreshes (default 1, at least 0.1)', '1')
    .option('--sort <key>', `order rows by: ${SORT_KEYS.join(', ')} (default rate: rx + tx bits/s)`, 'rate')
    .option(
      '--once',
      'print one frame (rates over one interval) as plain text and exit; the default when stdout is not a terminal',
    );
  defineAction(cmd, done, async (_args, opts, cli) => {
    const interval = numberArg('--interval', String(opts['interval']), 3600);
    if (interval < 0.1) throw new UsageError(`--interval "${opts['interval']}" is below 0.1 seconds`);
    const sort = choiceArg('--sort', String(opts['sort']), SORT_KEYS);
    const o = { interval, sort, once: opts['once'] === true || process.stdout.isTTY !== true };
    // Fails (exit 1) before the screen is taken when the daemon does not answer.
    const host = (await cli.client.status()).host.id;
    return o.once ? once(cli.client, host, o) : live(cli.client, host, o);
  });
}
