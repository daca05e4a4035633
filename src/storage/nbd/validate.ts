/**
 * Checks an NBD request against the export and what the handshake settled,
 * before it goes to a backend: flags each command accepts, ranges, read-only,
 * negotiated features.
 */
import type { NbdExport } from '../exports.js';
import { CMD, CMD_FLAG, MAX_PAYLOAD, NBD_ERR } from './constants.js';
import type { Negotiated } from './handshake.js';
import type { NbdRequest } from './transmission.js';

/** Flags each command accepts (proto.md "Command flags"); FUA is valid everywhere. */
const ALLOWED_FLAGS: Record<number, number> = {
  [CMD.READ]: CMD_FLAG.FUA | CMD_FLAG.DF,
  [CMD.WRITE]: CMD_FLAG.FUA,
  [CMD.DISC]: CMD_FLAG.FUA,
  [CMD.FLUSH]: CMD_FLAG.FUA,
  [CMD.TRIM]: CMD_FLAG.FUA,
  [CMD.CACHE]: CMD_FLAG.FUA,
  [CMD.WRITE_ZEROES]: CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO,
  [CMD.BLOCK_STATUS]: CMD_FLAG.FUA | CMD_FLAG.REQ_ONE,
};

/** 0 when the request may go to the backend, else the NBD error to reply with (proto.md "Error values"). */
export function validateRequest(r: NbdRequest, exp: NbdExport, neg: Negotiated | undefined): number {
  const allowed = ALLOWED_FLAGS[r.type];
  if (allowed === undefined) return NBD_ERR.EINVAL;
  if ((r.flags & ~allowed) !== 0) return NBD_ERR.EINVAL;
  if ((r.flags & CMD_FLAG.DF) !== 0 && !neg?.structuredReplies) return NBD_ERR.EINVAL;
  const size = exp.backend.size;
  const inRange = r.offset + r.length <= size;
  switch (r.type) {
    case CMD.READ:
      if (r.length > MAX_PAYLOAD) return NBD_ERR.EINVAL;
      return inRange ? 0 : NBD_ERR.EINVAL;
    case CMD.WRITE:
    case CMD.WRITE_ZEROES:
      if (exp.readOnly) return NBD_ERR.EPERM;
      return inRange ? 0 : NBD_ERR.ENOSPC;
    case CMD.TRIM:
      if (exp.readOnly) return NBD_ERR.EPERM;
      return inRange ? 0 : NBD_ERR.EINVAL;
    case CMD.CACHE:
      return inRange ? 0 : NBD_ERR.EINVAL;
    case CMD.BLOCK_STATUS:
      if (!neg?.baseAllocation) return NBD_ERR.EINVAL;
      return inRange && r.length > 0 ? 0 : NBD_ERR.EINVAL;
    default:
      return 0;
  }
}
