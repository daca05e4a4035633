import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEmbeddedStore, JOURNAL_FILE, STATE_FILE } from '../../src/control/embedded-store.js';
import { encodeRecord, type JournalRecord } from '../../src/control/journal.js';
import { hasCode } from '../../src/errors.js';

const root = await mkdtemp(join(tmpdir(), 'vmlink-journal-'));
after(() => rm(root, { recursive: true, force: true }));
let n = 0;
async function freshDir(): Promise<string> {
  const dir = join(root, `s${n++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** A logger whose lines (parsed) land in `lines`. */
function recorder(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const t of chunk.toString().split('\n')) if (t) lines.push(JSON.parse(t) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

const put = (seq: number, name: string, vni: number): JournalRecord => ({
  seq,
  op: 'put',
  kind: 'networks',
  item: { name, vni },
});
const journalOf = (...recs: JournalRecord[]): string => recs.map(encodeRecord).join('');
const size = async (file: string): Promise<number> => (await stat(file)).size;

describe('embedded state store journal', () => {
  test('writes one journal record per change and never rewrites the snapshot, whatever the number of items', async () => {
    // A single-file state of 2000 networks as earlier releases wrote it (version 1).
    const big = await freshDir();
    const networks = Array.from({ length: 2000 }, (_, i) => ({ name: `n${i}`, vni: 100 + i }));
    const v1 = JSON.stringify({ version: 1, networks, ports: [] }, null, 2);
    await writeFile(join(big, STATE_FILE), v1);
    const small = await freshDir();

    const growth: number[] = [];
    for (const dir of [small, big]) {
      const s = createEmbeddedStore({ dir });
      await s.load();
      const snap = await stat(join(dir, STATE_FILE)).catch(() => undefined);
      for (let i = 0; i < 3; i++) {
        const before = await size(join(dir, JOURNAL_FILE)).catch(() => 0);
        await s.putNetwork({ name: `new${i}`, vni: 90 + i });
        growth.push((await size(join(dir, JOURNAL_FILE))) - before);
      }
      await s.deleteNetwork('new0');
      // The snapshot is untouched by changes: same inode, same bytes.
      if (snap) {
        const now = await stat(join(dir, STATE_FILE));
        assert.equal(now.ino, snap.ino);
        assert.equal(await readFile(join(dir, STATE_FILE), 'utf8'), v1);
      }
      await s.close();
    }
    // Both stores number from 1 (a version-1 file counts as record 0): the same changes, the same bytes.
    const record = Buffer.byteLength(encodeRecord(put(1, 'new0', 90)));
    assert.deepEqual(growth, [record, record, record, record, record, record]);

    // Close migrates the old file: version 2, every item, no journal.
    assert.deepEqual(await readdir(big), [STATE_FILE]);
    const doc = JSON.parse(await readFile(join(big, STATE_FILE), 'utf8'));
    assert.equal(doc.version, 2);
    assert.equal(doc.seq, 4);
    assert.equal(doc.networks.length, 2002);
    assert.deepEqual(doc.networks.at(-1), { name: 'new2', vni: 92 });
  });

  test('drops a torn last record with a warning, and appends the next change where the last good one ended', async () => {
    const dir = await freshDir();
    const good = journalOf(put(1, 'a', 1), put(2, 'b', 2));
    const torn = encodeRecord(put(3, 'c', 3)).slice(0, 20);
    await writeFile(join(dir, JOURNAL_FILE), good + torn);
    const { logger, lines } = recorder();
    const s = createEmbeddedStore({ dir, logger });
    assert.deepEqual((await s.load()).networks, [
      { name: 'a', vni: 1 },
      { name: 'b', vni: 2 },
    ]);
    const warn = lines.find((l) => l['level'] === 40);
    assert.match(String(warn?.['msg']), /dropped a torn last record \(20 bytes at byte \d+\)/);
    assert.equal(warn?.['file'], join(dir, JOURNAL_FILE));
    await s.putNetwork({ name: 'd', vni: 4 });
    assert.equal(await readFile(join(dir, JOURNAL_FILE), 'utf8'), good + encodeRecord(put(3, 'd', 4)));
    await s.close();
  });

  test('drops a last record whose checksum fails, but refuses damage before an intact record', async () => {
    const dir = await freshDir();
    const bad = encodeRecord(put(2, 'b', 2)).replace('"vni":2', '"vni":7');
    await writeFile(join(dir, JOURNAL_FILE), journalOf(put(1, 'a', 1)) + bad);
    assert.deepEqual((await createEmbeddedStore({ dir }).load()).networks, [{ name: 'a', vni: 1 }]);

    await appendFile(join(dir, JOURNAL_FILE), encodeRecord(put(3, 'c', 3)));
    await assert.rejects(createEmbeddedStore({ dir }).load(), (err: Error) => {
      assert.ok(hasCode(err, 'ERR_STATE_CORRUPT'));
      assert.match(
        err.message,
        new RegExp(`${JOURNAL_FILE}.*record at byte \\d+ is damaged but later records are intact`),
      );
      assert.match(err.message, /move it away to start from the snapshot \(state\.json\) alone/);
      return true;
    });
  });

  test('refuses a journal with a gap in its numbering or a record of the wrong shape', async () => {
    for (const [text, why] of [
      [journalOf(put(1, 'a', 1), put(3, 'c', 3)), /record 3 at byte \d+ follows record 1/],
      [journalOf(put(2, 'a', 1)), /record 2 does not follow the snapshot's last record 0/],
      [encodeRecord({ seq: 1, op: 'put', kind: 'volumes' } as unknown as JournalRecord), /unknown kind "volumes"/],
    ] as const) {
      const dir = await freshDir();
      await writeFile(join(dir, JOURNAL_FILE), text);
      await assert.rejects(
        createEmbeddedStore({ dir }).load(),
        (err: Error) => hasCode(err, 'ERR_STATE_CORRUPT') && why.test(err.message),
      );
    }
  });

  test('skips records the snapshot already holds (a crash between compaction and truncation)', async () => {
    const dir = await freshDir();
    const snapshot = { version: 2, seq: 2, networks: [{ name: 'b', vni: 2 }], ports: [], exports: [] };
    await writeFile(join(dir, STATE_FILE), JSON.stringify(snapshot));
    // Records 1-2 are older than the snapshot: 'a' was deleted since, in a record the journal lost with the truncation.
    await writeFile(join(dir, JOURNAL_FILE), journalOf(put(1, 'a', 1), put(2, 'b', 2)));
    const s = createEmbeddedStore({ dir });
    assert.deepEqual((await s.load()).networks, [{ name: 'b', vni: 2 }]);
    await s.putNetwork({ name: 'c', vni: 3 });
    assert.equal(await readFile(join(dir, JOURNAL_FILE), 'utf8'), encodeRecord(put(3, 'c', 3)));
    assert.deepEqual(
      (await createEmbeddedStore({ dir }).load()).networks.map((x) => x.name),
      ['b', 'c'],
    );
    await s.close();
  });

  test('compacts the journal into the snapshot once it outgrows both limits, and keeps every change', async () => {
    const dir = await freshDir();
    const s = createEmbeddedStore({ dir, compactMinBytes: 1024, compactRatio: 1 });
    let journalMax = 0;
    for (let i = 0; i < 200; i++) {
      await s.putNetwork({ name: `n${i % 50}`, vni: i + 1 });
      journalMax = Math.max(journalMax, await size(join(dir, JOURNAL_FILE)));
    }
    // Bounded by the larger of the minimum and the snapshot (50 networks) plus one record.
    const snapshotBytes = await size(join(dir, STATE_FILE));
    assert.ok(journalMax < Math.max(1024, snapshotBytes) + 100, `journal reached ${journalMax} bytes`);
    const expected = Array.from({ length: 50 }, (_, i) => ({ name: `n${i}`, vni: 151 + i }));
    assert.deepEqual((await createEmbeddedStore({ dir }).load()).networks, expected);
    await s.close();
    assert.deepEqual((await createEmbeddedStore({ dir }).load()).networks, expected);
  });

  test('acknowledges changes while compaction fails, warns, and compacts once it can', async () => {
    const dir = await freshDir();
    const { logger, lines } = recorder();
    const s = createEmbeddedStore({ dir, logger, compactMinBytes: 256 });
    await s.load();
    const tmpName = join(dir, `${STATE_FILE}.tmp-${process.pid}`);
    await mkdir(tmpName);
    for (let i = 0; i < 10; i++) await s.putNetwork({ name: `n${i}`, vni: i + 1 });
    assert.ok(lines.some((l) => l['level'] === 40 && /compaction failed/.test(String(l['msg']))));
    await assert.rejects(stat(join(dir, STATE_FILE)), { code: 'ENOENT' });
    await rm(tmpName, { recursive: true });
    for (let i = 10; i < 20; i++) await s.putNetwork({ name: `n${i}`, vni: i + 1 });
    assert.equal(JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')).version, 2);
    await s.close();
    assert.equal((await createEmbeddedStore({ dir }).load()).networks.length, 20);
  });

  test('writes concurrent changes in order, a delete of an item put in the same batch included', async () => {
    const dir = await freshDir();
    const s = createEmbeddedStore({ dir });
    await s.load();
    await Promise.all([
      s.putPort({ name: 'p1', kind: 'stream' }),
      s.putPort({ name: 'p2', kind: 'stream' }),
      s.deletePort('p1'),
      s.deletePort('p1'),
      s.putPort({ name: 'p1', kind: 'dgram' }),
    ]);
    const text = await readFile(join(dir, JOURNAL_FILE), 'utf8');
    assert.equal(text.split('\n').length - 1, 4, 'the second delete of p1 writes nothing');
    assert.deepEqual((await createEmbeddedStore({ dir }).load()).ports, [
      { name: 'p2', kind: 'stream' },
      { name: 'p1', kind: 'dgram' },
    ]);
    await s.close();
  });
});
