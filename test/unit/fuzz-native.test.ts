/**
 * The addon's libFuzzer harnesses (fuzz/*.c), each built with
 * -fsanitize=fuzzer,address,undefined and run for a fixed number of inputs
 * from its seed corpus on: a bounded run of what scripts/fuzz.sh does for
 * minutes. A crash, a sanitizer report or a failed check in a harness fails
 * its test, with the harness's log.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../helpers/initramfs.js';

const RUNS = 20_000;

function hasClang(): boolean {
  const cc = process.env['CC'] ?? 'clang';
  return (process.env['PATH'] ?? '').split(':').some((d) => {
    try {
      return readdirSync(d).includes(cc);
    } catch {
      return false;
    }
  });
}

const harnesses = readdirSync(join(REPO_ROOT, 'fuzz'))
  .filter((f) => f.endsWith('.c'))
  .map((f) => f.slice(0, -2))
  .sort();

const skip = hasClang()
  ? false
  : 'clang is not installed (the fuzz harnesses need clang with libFuzzer: apt install clang)';

describe('fuzzing the addon C code that reads peer input', { skip, concurrency: 1 }, () => {
  test('there is a harness for the vring walks, address translation, the checksum and UDP receive parsing', () => {
    assert.deepEqual(harnesses, ['gpa', 'inet-sum', 'udp-parse', 'vring-rx', 'vring-tx']);
  });

  for (const h of harnesses) {
    test(`${h}: ${RUNS} inputs find no crash, sanitizer report or failed check`, { timeout: 300_000 }, async () => {
      const code = await new Promise<number>((resolve) => {
        execFile(
          'sh',
          [join(REPO_ROOT, 'scripts', 'fuzz.sh'), '0', h],
          { env: { ...process.env, FUZZ_RUNS: String(RUNS) }, maxBuffer: 16 << 20 },
          (err) => resolve(err ? (typeof err.code === 'number' ? err.code : 1) : 0),
        );
      });
      const log = readFileSync(join(REPO_ROOT, 'build', 'fuzz', `${h}.log`), 'utf8');
      assert.equal(code, 0, log.slice(-4000));
      assert.match(log, new RegExp(`stat::number_of_executed_units: ${RUNS}\\b`));
    });
  }
});
