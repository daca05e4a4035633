/**
 * The embedded store's journal: one line per change, appended and fsynced
 * before the change is acknowledged.
 *
 * Line format: `CRC JSON\n`, where CRC is the CRC-32 (zlib) of the UTF-8
 * bytes of JSON as 8 lowercase hex digits and JSON is one record:
 * `{"seq":N,"op":"put","kind":"networks","item":{...}}` or
 * `{"seq":N,"op":"del","kind":"ports","name":"vm1"}`.
 * JSON.stringify never writes a raw newline, so the newline ends the record:
 * a record without its newline, or whose checksum does not match, was torn by
 * a crash while it was being appended.
 */
import { crc32 } from 'node:zlib';
import { StateJournalCorruptError } from './errors.js';
import type { StoredItem } from './store.js';

/** The kinds of item the store keeps, as named in records and in the snapshot. */
export const KINDS = ['networks', 'ports', 'exports', 'links'] as const;
export type Kind = (typeof KINDS)[number];

/** One change. `seq` counts changes since the store was first written (1, 2, ...). */
export type JournalRecord =
  | { seq: number; op: 'put'; kind: Kind; item: StoredItem }
  | { seq: number; op: 'del'; kind: Kind; name: string };

/** The journal line of `rec`, newline included. */
export function encodeRecord(rec: JournalRecord): string {
  const json = JSON.stringify(rec);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

export interface DecodedJournal {
  /** Records in file order (all checksummed and consecutive). */
  records: JournalRecord[];
  /** Bytes of the file up to the end of the last good record. */
  validBytes: number;
  /** Bytes after the last good record that were dropped (a torn tail); 0 when none. */
  tornBytes: number;
}

/**
 * Reads a journal's bytes. A bad tail (torn or checksum-failing lines with no
 * good record after them) is reported in `tornBytes`, not thrown: it is what
 * a crash in the middle of an append leaves. A bad line followed by a good one,
 * a good checksum over a record of the wrong shape, or a gap in `seq` is
 * corruption and throws {@link StateJournalCorruptError} naming `file`.
 */
export function decodeJournal(buf: Buffer, file: string): DecodedJournal {
  const records: JournalRecord[] = [];
  let validBytes = 0;
  let badAt = -1;
  for (let start = 0; start < buf.length; ) {
    const nl = buf.indexOf(0x0a, start);
    const end = nl < 0 ? buf.length : nl + 1;
    const rec = nl < 0 ? undefined : checkedRecord(buf.subarray(start, nl), file, start);
    if (rec === undefined) {
      if (badAt < 0) badAt = start;
    } else {
      if (badAt >= 0)
        throw new StateJournalCorruptError(
          file,
          `the journal record at byte ${badAt} is damaged but later records are intact (only the last record may be torn by a crash)`,
        );
      const prev = records.at(-1);
      if (prev && rec.seq !== prev.seq + 1)
        throw new StateJournalCorruptError(
          file,
          `journal record ${rec.seq} at byte ${start} follows record ${prev.seq}`,
        );
      records.push(rec);
      validBytes = end;
    }
    start = end;
  }
  return { records, validBytes, tornBytes: buf.length - validBytes };
}

/** The record of one line (without its newline), or undefined when its checksum fails. */
function checkedRecord(line: Buffer, file: string, at: number): JournalRecord | undefined {
  if (line.length < 10 || line[8] !== 0x20) return undefined;
  const hex = line.subarray(0, 8).toString('latin1');
  const json = line.subarray(9);
  if (!/^[0-9a-f]{8}$/.test(hex) || crc32(json) !== Number.parseInt(hex, 16)) return undefined;
  let rec: unknown;
  try {
    rec = JSON.parse(json.toString('utf8'));
  } catch {
    return undefined;
  }
  const problem = shapeProblem(rec);
  if (problem) throw new StateJournalCorruptError(file, `the journal record at byte ${at} ${problem}`);
  return rec as JournalRecord;
}

function shapeProblem(rec: unknown): string | undefined {
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return 'is not a JSON object';
  const r = rec as Record<string, unknown>;
  if (!Number.isSafeInteger(r['seq']) || (r['seq'] as number) < 1) return `has a bad seq ${JSON.stringify(r['seq'])}`;
  if (!KINDS.includes(r['kind'] as Kind)) return `has an unknown kind ${JSON.stringify(r['kind'])}`;
  if (r['op'] === 'put') {
    const item = r['item'];
    if (typeof item !== 'object' || item === null || typeof (item as { name?: unknown }).name !== 'string')
      return 'puts an item without a "name"';
    return undefined;
  }
  if (r['op'] === 'del') return typeof r['name'] === 'string' ? undefined : 'deletes without a "name"';
  return `has an unknown op ${JSON.stringify(r['op'])}`;
}
