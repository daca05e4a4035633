/**
 * The transmission-phase commands (proto.md "Request types"): one request
 * run against its export's backend, its reply (simple, or structured chunks
 * for READ and BLOCK_STATUS) handed to the connection's {@link CommandSink}.
 * Validation, scheduling, error replies and flow control stay in
 * connection.ts.
 */
import type { Extent } from '../backend.js';
import { payloadPool } from '../buffer-pool.js';
import type { NbdExport } from '../exports.js';
import { BASE_ALLOCATION_ID, CMD, CMD_FLAG, STATE_ZERO } from './constants.js';
import {
  blockStatusChunk,
  type NbdRequest,
  noneChunk,
  offsetDataHeader,
  offsetHoleChunk,
  simpleReply,
} from './transmission.js';

/** Most extents in one block status reply (proto.md: SHOULD NOT exceed 2^20). */
const MAX_EXTENTS = 1 << 20;

/** What a command needs of the connection it runs for. */
export interface CommandSink {
  /** The server's byte counters (bytes read and written for clients), bumped per request. */
  readonly stats: { bytesRead: number; bytesWritten: number };
  /** NBD_OPT_STRUCTURED_REPLY was negotiated: READ replies go out as chunks. */
  structured: boolean;
  /** Writes one reply's buffers contiguously. */
  send(...bufs: Buffer[]): void;
  /** Gives a pooled reply buffer back to the payload pool once the socket has taken it. */
  releaseAfterWrite(data: Buffer): void;
}

/**
 * Runs request `r` (already validated; not DISC) against `exp` and sends its
 * success reply through `sink`. Rejects with the backend's error: the caller
 * answers it with an error reply.
 */
export async function runCommand(r: NbdRequest, exp: NbdExport, sink: CommandSink): Promise<void> {
  const b = exp.backend;
  const fua = (r.flags & CMD_FLAG.FUA) !== 0;
  switch (r.type) {
    case CMD.READ:
      await read(r, exp, sink);
      break;
    case CMD.WRITE:
      await b.write(r.offset, r.data as Buffer, fua);
      if (b.pooledBuffers) payloadPool.release(r.data as Buffer);
      sink.stats.bytesWritten += r.length;
      exp.stats.bytesWritten += r.length;
      sink.send(simpleReply(r.cookie, 0));
      break;
    case CMD.FLUSH:
      await b.flush();
      sink.send(simpleReply(r.cookie, 0));
      break;
    case CMD.TRIM:
      await b.trim(r.offset, r.length, fua);
      sink.send(simpleReply(r.cookie, 0));
      break;
    case CMD.CACHE:
      await b.cache(r.offset, r.length);
      sink.send(simpleReply(r.cookie, 0));
      break;
    case CMD.WRITE_ZEROES:
      await b.writeZeroes(r.offset, r.length, {
        noHole: (r.flags & CMD_FLAG.NO_HOLE) !== 0,
        fastZero: (r.flags & CMD_FLAG.FAST_ZERO) !== 0,
        fua,
      });
      sink.send(simpleReply(r.cookie, 0));
      break;
    case CMD.BLOCK_STATUS:
      await blockStatus(r, exp, sink);
      break;
  }
}

async function read(r: NbdRequest, exp: NbdExport, sink: CommandSink): Promise<void> {
  const b = exp.backend;
  if (!sink.structured) {
    const data = await b.read(r.offset, r.length);
    sink.stats.bytesRead += r.length;
    exp.stats.bytesRead += r.length;
    sink.send(simpleReply(r.cookie, 0), data);
    if (b.pooledBuffers) sink.releaseAfterWrite(data);
    return;
  }
  if (r.length === 0) {
    sink.send(noneChunk(r.cookie));
    return;
  }
  if ((r.flags & CMD_FLAG.DF) !== 0 || !b.cheapExtents) {
    const data = await b.read(r.offset, r.length);
    sink.stats.bytesRead += r.length;
    exp.stats.bytesRead += r.length;
    sink.send(offsetDataHeader(r.cookie, true, r.offset, r.length), data);
    if (b.pooledBuffers) sink.releaseAfterWrite(data);
    return;
  }
  // Holes go out as OFFSET_HOLE chunks; data ranges are read and sent as OFFSET_DATA.
  const out: Buffer[] = [];
  let pos = r.offset;
  const end = r.offset + r.length;
  while (pos < end) {
    const ext = await b.extents(pos, end - pos);
    for (const e of ext) {
      const len = Math.min(e.length, end - pos);
      // A backend bug must not spin this loop forever: fail the request (EIO) instead.
      if (!(len > 0)) throw new Error(`backend returned an empty extent at offset ${pos}`);
      if ((e.flags & STATE_ZERO) !== 0) out.push(offsetHoleChunk(r.cookie, false, pos, len));
      else {
        const data = await b.read(pos, len);
        out.push(offsetDataHeader(r.cookie, false, pos, len), data);
      }
      pos += len;
      if (pos >= end) break;
    }
  }
  out.push(noneChunk(r.cookie));
  sink.stats.bytesRead += r.length;
  exp.stats.bytesRead += r.length;
  sink.send(...out);
}

async function blockStatus(r: NbdRequest, exp: NbdExport, sink: CommandSink): Promise<void> {
  const reqOne = (r.flags & CMD_FLAG.REQ_ONE) !== 0;
  let ext: Extent[] = await exp.backend.extents(r.offset, r.length);
  if (reqOne) {
    const first = ext[0] as Extent;
    ext = [{ length: Math.min(first.length, r.length), flags: first.flags }];
  } else if (ext.length > MAX_EXTENTS) ext = ext.slice(0, MAX_EXTENTS);
  sink.send(blockStatusChunk(r.cookie, BASE_ALLOCATION_ID, ext));
}
