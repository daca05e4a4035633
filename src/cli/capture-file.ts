/**
 * The file `vmlink capture -w FILE` writes: checked before the daemon is
 * asked, and write failures said in words (which file, what is wrong, what to
 * do) instead of a raw system error.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { VmlinkError } from '../errors.js';

/** The capture file cannot be written. */
export class CaptureWriteError extends VmlinkError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_CAPTURE_WRITE', message, options);
  }
}

/** A CaptureWriteError for a system error `err` on `file`. */
export function captureFileError(file: string, err: unknown): CaptureWriteError {
  const code = (err as { code?: unknown } | null)?.code;
  const dir = dirname(resolve(file));
  const other = 'give -w a path in an existing directory, or - for stdout';
  const why: Record<string, [string, string]> = {
    ENOENT: [`the directory ${dir} does not exist`, `create it, or ${other}`],
    ENOTDIR: [`a part of ${dir} is not a directory`, other],
    EACCES: ['permission denied', 'give -w a path you may write to, or - for stdout'],
    EPERM: ['permission denied', 'give -w a path you may write to, or - for stdout'],
    EISDIR: ['it is a directory', 'give -w a file name in it, or - for stdout'],
    EROFS: ['the file system is read-only', other],
    ENOSPC: ['the disk is full', 'free space, or give -w a path on another disk, or - for stdout'],
    EDQUOT: ['the disk quota is used up', 'free space, or give -w a path on another disk, or - for stdout'],
  };
  const known = typeof code === 'string' ? why[code] : undefined;
  const text = known ? `${known[0]} (${code}); ${known[1]}` : `${(err as Error)?.message || String(err)}; ${other}`;
  return new CaptureWriteError(`cannot write the capture to ${file}: ${text}`, { cause: err });
}

/** Throws a {@link CaptureWriteError} unless `file` can be created or replaced (checked before the daemon is asked). */
export async function checkCaptureFile(file: string): Promise<void> {
  try {
    const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (st?.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (st) await access(file, constants.W_OK);
    else {
      const dir = dirname(resolve(file));
      if (!(await stat(dir)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      await access(dir, constants.W_OK);
    }
  } catch (err) {
    throw captureFileError(file, err);
  }
}
