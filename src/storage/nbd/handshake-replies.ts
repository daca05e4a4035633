/**
 * The byte layouts of the fixed newstyle handshake (proto.md "Newstyle
 * negotiation", "Option haggling"): the greeting, option replies and their
 * payloads, and the parsing of NBD_OPT_INFO/GO and metadata context option
 * data. Pure functions over Buffers; the state machine in handshake.ts
 * decides what to send.
 */
import type { NbdExport } from '../exports.js';
import {
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  MAX_PAYLOAD,
  NBDMAGIC,
  OPT_REPLY_MAGIC,
  TF,
} from './constants.js';

/** Preferred block size we advertise in NBD_INFO_BLOCK_SIZE. */
export const PREFERRED_BLOCK = 4096;

/** Transmission flags for an export, given what was negotiated. */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  let f = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_CACHE;
  if (exp.readOnly) f |= TF.READ_ONLY;
  else f |= TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO;
  if (structured) f |= TF.SEND_DF;
  if (exp.backend.canMultiConn) f |= TF.CAN_MULTI_CONN;
  return f;
}

/** The server's greeting: NBDMAGIC, IHAVEOPT and the handshake flags we offer (fixed newstyle, no zeroes). */
export function greeting(): Buffer {
  const g = Buffer.alloc(18);
  g.writeBigUInt64BE(NBDMAGIC, 0);
  g.writeBigUInt64BE(IHAVEOPT, 8);
  g.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return g;
}

/** The 20-byte header of an option reply; `length` bytes of payload follow it. */
export function optionReplyHeader(opt: number, type: number, length: number): Buffer {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(length, 16);
  return h;
}

/** The answer to NBD_OPT_EXPORT_NAME: size (bytes) and transmission flags, then 124 zero bytes unless the client set NO_ZEROES. */
export function exportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/** The payload of one NBD_REP_SERVER reply to NBD_OPT_LIST: name length, name, description. */
export function listEntry(name: string, description: string): Buffer {
  const n = Buffer.from(name);
  const d = Buffer.from(description);
  const p = Buffer.alloc(4 + n.length + d.length);
  p.writeUInt32BE(n.length, 0);
  n.copy(p, 4);
  d.copy(p, 4 + n.length);
  return p;
}

/** Parses NBD_OPT_INFO/GO data (name length, name, count, information requests); returns a reason string when it is malformed. */
export function parseInfoRequest(data: Buffer): { name: string; reqs: Set<number> } | string {
  if (data.length < 6) return 'option data shorter than 6 bytes';
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return `export name length ${nameLen} exceeds the option data`;
  const name = data.toString('utf8', 4, 4 + nameLen);
  const nreq = data.readUInt16BE(4 + nameLen);
  if (6 + nameLen + 2 * nreq !== data.length) return `${nreq} information requests do not match the option length`;
  const reqs = new Set<number>();
  for (let i = 0; i < nreq; i++) reqs.add(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name, reqs };
}

/** NBD_INFO_EXPORT: size (bytes) and transmission flags. */
export function infoExport(size: number, flags: number): Buffer {
  const info = Buffer.alloc(12);
  info.writeUInt16BE(INFO.EXPORT, 0);
  info.writeBigUInt64BE(BigInt(size), 2);
  info.writeUInt16BE(flags, 10);
  return info;
}

/** NBD_INFO_BLOCK_SIZE: minimum 1, preferred {@link PREFERRED_BLOCK}, maximum payload MAX_PAYLOAD (bytes). */
export function infoBlockSize(): Buffer {
  const bs = Buffer.alloc(14);
  bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  bs.writeUInt32BE(1, 2);
  bs.writeUInt32BE(PREFERRED_BLOCK, 6);
  bs.writeUInt32BE(MAX_PAYLOAD, 10);
  return bs;
}

/** An NBD_INFO_NAME or NBD_INFO_DESCRIPTION payload: the type, then the text. */
export function infoString(type: number, s: string): Buffer {
  const b = Buffer.from(s);
  const p = Buffer.alloc(2 + b.length);
  p.writeUInt16BE(type, 0);
  b.copy(p, 2);
  return p;
}

/** The payload of an NBD_REP_META_CONTEXT reply: the context id (0 for LIST), then its name. */
export function metaContextEntry(id: number, name: string): Buffer {
  const n = Buffer.from(name);
  const p = Buffer.alloc(4 + n.length);
  p.writeUInt32BE(id, 0);
  n.copy(p, 4);
  return p;
}

/** Parses LIST/SET_META_CONTEXT data; returns a reason string when it is malformed. */
export function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | string {
  if (data.length < 8) return 'metadata context request shorter than 8 bytes';
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return `export name length ${nameLen} exceeds the option data`;
  const name = data.toString('utf8', 4, 4 + nameLen);
  let p = 4 + nameLen;
  const n = data.readUInt32BE(p);
  p += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    if (p + 4 > data.length) return `query ${i} of ${n} lies beyond the option data`;
    const len = data.readUInt32BE(p);
    p += 4;
    if (len > data.length - p) return `query ${i} length ${len} exceeds the option data`;
    queries.push(data.toString('utf8', p, p + len));
    p += len;
  }
  if (p !== data.length) return `${data.length - p} stray bytes after the queries`;
  return { name, queries };
}
