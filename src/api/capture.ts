/**
 * Streams a port's frames as a pcap over an HTTP response
 * (`GET /v1/ports/:name/capture`).
 *
 * Bounded: records are gathered in a {@link PcapWriter} and written once per
 * event-loop turn; once more than {@link MAX_BUFFERED} bytes wait in the
 * response (the client does not keep up), new frames are dropped and counted,
 * never queued, until the response drains. The switch never waits for a capture.
 */
import type { ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { PcapWriter } from '../net/switch/pcap.js';
import type { CaptureTap } from './backend.js';

/** Bytes allowed to wait in the response (plus the writer) before frames are dropped. */
export const MAX_BUFFERED = 4 * 1024 * 1024;

export interface PcapCaptureOptions {
  /** Port name, for log lines. */
  port: string;
  /** End the response after this many frames; default: run until the client goes away. */
  count?: number | undefined;
  logger: Logger;
}

export class PcapCapture implements CaptureTap {
  readonly #res: ServerResponse;
  readonly #opts: PcapCaptureOptions;
  readonly #writer = new PcapWriter();
  #detach: (() => void) | undefined;
  #started = false;
  #done = false;
  #congested = false;
  #flushScheduled = false;
  /** Frames written to the pcap. */
  frames = 0;
  /** Frames dropped because the client did not keep up. */
  dropped = 0;

  constructor(res: ServerResponse, opts: PcapCaptureOptions) {
    this.#res = res;
    this.#opts = opts;
  }

  /** Sends the headers and the pcap file header; `detach` removes the tap when the capture ends. */
  start(detach: () => void): void {
    this.#detach = detach;
    this.#started = true;
    const res = this.#res;
    res.on('close', () => this.#finish('the client went away'));
    res.on('drain', () => {
      this.#congested = false;
    });
    res.writeHead(200, { 'content-type': 'application/vnd.tcpdump.pcap', 'cache-control': 'no-store' });
    res.write(this.#writer.header());
  }

  frame(buf: Buffer, off: number, len: number): void {
    if (this.#done || !this.#started) return;
    if (this.#congested || this.#writer.pending > MAX_BUFFERED) {
      this.dropped++;
      return;
    }
    this.#writer.record(buf, off, len);
    this.frames++;
    if (this.#opts.count !== undefined && this.frames >= this.#opts.count) {
      this.end('count reached');
      return;
    }
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
  }

  /** Writes what is pending and ends the response. Idempotent. */
  end(reason: string): void {
    if (this.#done) return;
    this.#flush();
    if (this.#started) this.#res.end();
    this.#finish(reason);
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const chunk = this.#writer.take();
    if (chunk === undefined || this.#done) return;
    const res = this.#res;
    // write() returns false past the 16 KiB high-water mark; allow bursts up to MAX_BUFFERED before dropping.
    // Once congested, 'drain' (the buffer emptied) lets frames through again.
    res.write(chunk);
    if (res.writableLength > MAX_BUFFERED) this.#congested = true;
  };

  #finish(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#detach?.();
    const fields = { port: this.#opts.port, frames: this.frames, dropped: this.dropped, reason };
    if (this.dropped > 0) this.#opts.logger.warn(fields, 'capture ended; frames dropped because the client was slow');
    else this.#opts.logger.info(fields, 'capture ended');
  }
}
