/**
 * `vmlink capture PORT -w FILE|- [-c COUNT]`: streams the daemon's pcap of a
 * port (both directions) to a file or stdout, without holding it in memory.
 * Ends after COUNT frames, when the daemon ends the stream, or on
 * SIGINT/SIGTERM; only whole records are written, so the file stays valid.
 */
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import type { PortView } from '../api/client.js';
import { intArg, UsageError } from './args.js';
import { captureFileError, checkCaptureFile } from './capture-file.js';
import { defineAction } from './context.js';
import { PcapSplitter } from './pcap.js';

/**
 * What to tell someone who captures on a port that carries no frames now (no
 * peer connected, or down), so the wait is not silent; undefined when it is up.
 */
export function idleNotice(p: Pick<PortView, 'name' | 'state' | 'reason'>): string | undefined {
  const why = p.reason ? ` (${p.reason})` : '';
  switch (p.state) {
    case 'up':
      return undefined;
    case 'listening':
      return `port "${p.name}" is listening: no peer is connected${why}, so no frames flow yet; waiting for them (Ctrl-C stops)`;
    case 'connecting':
      return `port "${p.name}" is connecting: its peer does not answer yet${why}; waiting for frames (Ctrl-C stops)`;
    default:
      return `port "${p.name}" is ${p.state}${why}: no frames flow until it is up; waiting (Ctrl-C stops)`;
  }
}

/** Resolves on the stream's 'drain', 'close' or 'error', whichever comes first (at once if it is gone). */
function drained(out: Writable): Promise<void> {
  if (out.destroyed || out.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      out.off('error', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
    out.on('error', done);
  });
}

/** True when bytes wait in the stream's buffer (a pipe on stdout that failed with EPIPE never drains). */
function pending(out: Writable): boolean {
  return out.writableLength > 0 && !out.destroyed && !out.errored;
}

/** Writes `buf`; waits for 'drain' when the stream asks to (backpressure), or until it fails. */
async function write(out: Writable, buf: Buffer): Promise<void> {
  if (!out.write(buf) && pending(out)) await drained(out);
}

/** Ends a file stream and waits until it is flushed and closed; stdout is only drained, not closed. */
async function finish(out: Writable, isStdout: boolean): Promise<void> {
  if (isStdout) {
    if (pending(out)) await drained(out);
    return;
  }
  if (out.destroyed) return;
  const closed = new Promise((resolve) => out.once('close', resolve));
  out.end();
  await closed;
}

function isAbort(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  const code = (err as { code?: unknown } | null)?.code;
  return name === 'AbortError' || code === 'ABORT_ERR' || code === 'UND_ERR_ABORTED';
}

export function addCaptureCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('capture')
    .description('write a pcap of the frames a port receives and sends (stop with Ctrl-C or -c)')
    .argument('<port>', 'port name')
    .requiredOption('-w, --write <file>', 'pcap file to write, or - for stdout (e.g. | tshark -r -)')
    .option('-c, --count <N>', 'stop after N frames');
  defineAction(cmd, done, async ([port], opts, cli) => {
    const file = String(opts['write']);
    if (file === '') throw new UsageError('-w needs a file name, or - for stdout');
    const count = opts['count'] === undefined ? undefined : intArg('-c', String(opts['count']), 1, 2 ** 32 - 1);
    const ac = new AbortController();
    const stop = () => ac.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const splitter = new PcapSplitter(count);
    const isStdout = file === '-';
    if (!isStdout) await checkCaptureFile(file);
    // Said before the wait, on stderr (stdout may be the pcap): why no frames may come for a while.
    const notice = idleNotice(await cli.client.getPort(port as string));
    if (notice) process.stderr.write(`${notice}\n`);
    let out: Writable | undefined;
    try {
      const body = await cli.client.capture(port as string, {
        ...(count === undefined ? {} : { count }),
        signal: ac.signal,
      });
      // Opened only once the daemon accepted: a refused capture leaves no file behind.
      out = isStdout ? process.stdout : createWriteStream(file);
      out.on('error', stop); // EPIPE on stdout, disk full: stop reading, report below
      try {
        for await (const chunk of body) {
          const whole = splitter.push(chunk as Buffer);
          if (whole) await write(out, whole);
          if (splitter.full || out.destroyed) break; // leaving the loop closes the request
        }
      } catch (err) {
        if (!isAbort(err)) throw err;
      }
      if (!isStdout && out.errored) throw captureFileError(file, out.errored);
    } catch (err) {
      if (!isAbort(err)) throw err;
    } finally {
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      if (out) await finish(out, isStdout);
    }
    if (out) process.stderr.write(`${splitter.records} frames captured to ${isStdout ? 'stdout' : file}\n`);
    return 0;
  });
}
