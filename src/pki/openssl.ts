/**
 * The openssl command, as the pki modules run it (see ca.ts for why the
 * command and not a JavaScript X.509 library), and the small helpers they
 * share.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';
import { describeError } from '../errors.js';
import { CaError } from './errors.js';

const execFileP = promisify(execFile);

/** A host id: 1-32 letters, digits, '_', '.', '-', not starting with a punctuation mark (the config's name rule). */
export const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

/** openssl req options for a new unencrypted P-256 key. */
export const NEW_EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Runs `openssl ARGS...` (60 s at most); resolves to its stdout. Failures are CaErrors with openssl's first stderr line. */
export async function openssl(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP('openssl', args, { timeout: 60_000 });
    return stdout;
  } catch (err) {
    const e = err as { code?: unknown; stderr?: string };
    if (e.code === 'ENOENT') throw new CaError('the openssl command is not installed (apt-get install openssl)');
    const lines = (e.stderr ?? describeError(err)).trim().split('\n');
    // openssl 3 prints "Certificate request self-signature ok" before a later failure: name the failure.
    const why = lines.find((l) => /error|not|fail|unable|bad/i.test(l) && !/ ok$/.test(l)) ?? lines[0];
    throw new CaError(`openssl ${args[0]} failed: ${why}`, { cause: err });
  }
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A random positive 128-bit certificate serial number in openssl's `-set_serial 0x...` form. */
export function randomSerial(): string {
  return `0x${randomBytes(16)
    .toString('hex')
    .replace(/^[89a-f]/, '1')}`;
}
