/**
 * Crash safety of the state store through the real daemon: SIGKILL in the
 * middle of a burst of API writes, restart, and check that what the daemon
 * has is a prefix of what each writer asked for, with every acknowledged
 * change in it.
 */
import assert from 'node:assert/strict';
import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/api/client.js';
import { JOURNAL_FILE } from '../../src/control/embedded-store.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';

const WRITERS = 4;

/** One writer's operations, in order: create `w<w>-<i>`, and every fifth step delete an earlier one. */
function opAt(w: number, i: number): { op: 'put' | 'del'; name: string; vni: number } {
  if (i % 5 === 4) {
    const j = i - 3;
    return { op: 'del', name: `w${w}-${j}`, vni: 0 };
  }
  return { op: 'put', name: `w${w}-${i}`, vni: 10_000 + w * 100_000 + i };
}

/** The networks of writer `w` after its first `k` operations (name -> vni). */
function stateAfter(w: number, k: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < k; i++) {
    const o = opAt(w, i);
    if (o.op === 'put') m.set(o.name, o.vni);
    else m.delete(o.name);
  }
  return m;
}

describe('state store crash safety (daemon killed with SIGKILL during API writes)', () => {
  let d: TestDaemon;
  /** Operations each writer has sent so far (over all rounds) and how many were acknowledged. */
  const sent = Array.from({ length: WRITERS }, () => 0);
  const acked = Array.from({ length: WRITERS }, () => 0);

  before(async () => {
    d = await startDaemon({ networks: [{ name: 'cfg', vni: 1 }] });
  });
  after(() => d?.cleanup());

  /** Runs the writers until `killAfter` acknowledgements in total, then SIGKILLs the daemon with requests in flight. */
  async function burstAndKill(killAfter: number): Promise<void> {
    const client = new ControlClient({ socketPath: d.control, timeoutMs: 10_000 });
    let total = 0;
    let killed: Promise<unknown> | undefined;
    const writer = async (w: number): Promise<void> => {
      for (;;) {
        const i = sent[w] as number;
        // An operation whose outcome is unknown is resent after the restart: step back to it then.
        const o = opAt(w, i);
        sent[w] = i + 1;
        try {
          if (o.op === 'put') await client.createNetwork({ name: o.name, vni: o.vni });
          else await client.deleteNetwork(o.name);
        } catch {
          return; // the daemon is gone: this operation may or may not have happened
        }
        acked[w] = i + 1;
        if (++total === killAfter) killed = d.kill('SIGKILL');
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    await killed;
    await client.close().catch(() => undefined);
  }

  /** Restarts and checks each writer's networks are those after `acked` or `acked + 1` of its operations. */
  async function restartAndCheck(): Promise<void> {
    await d.start();
    const client = new ControlClient({ socketPath: d.control });
    try {
      const nets = await client.listNetworks();
      assert.deepEqual(
        nets.filter((n) => n.source === 'config').map((n) => n.name),
        ['cfg'],
      );
      for (let w = 0; w < WRITERS; w++) {
        const mine = new Map(nets.filter((n) => n.name.startsWith(`w${w}-`)).map((n) => [n.name, n.vni]));
        const a = acked[w] as number;
        const candidates = [a, a + 1].filter((k) => k <= (sent[w] as number));
        const k = candidates.find((c) => JSON.stringify([...stateAfter(w, c)]) === JSON.stringify([...mine]));
        assert.ok(
          k !== undefined,
          `writer ${w}: ${a} of ${sent[w]} operations acknowledged, but the daemon has ${JSON.stringify([...mine])}`,
        );
        // Continue after what the daemon has; an operation it lost is sent again.
        sent[w] = k;
        acked[w] = k;
      }
    } finally {
      await client.close();
    }
  }

  test('keeps every acknowledged write and nothing but a prefix of each writer’s writes, over three kills', async () => {
    // About 900 writes in all: the journal passes 64 KiB, so a compaction runs during a burst.
    for (const killAfter of [97, 251, 557]) {
      await burstAndKill(killAfter);
      await restartAndCheck();
      await d.kill('SIGKILL');
    }
    await d.start();
    assert.ok(acked.every((a) => a > 0));
  });

  test('starts after a torn journal record, warning about it, with the acknowledged writes', async () => {
    const client = new ControlClient({ socketPath: d.control });
    await client.createNetwork({ name: 'kept', vni: 77 });
    await client.close();
    await d.kill('SIGKILL');
    // What a crash in the middle of an append leaves: the start of a record, no newline.
    const torn = '1a2b3c4d {"seq":';
    await appendFile(join(d.stateDir, JOURNAL_FILE), torn);
    await d.start();
    const again = new ControlClient({ socketPath: d.control });
    try {
      assert.equal((await again.listNetworks()).find((n) => n.name === 'kept')?.vni, 77);
      assert.match(d.log, new RegExp(`dropped a torn last record \\(${torn.length} bytes at byte \\d+\\)`));
      // The next write lands after the last good record, and a graceful stop compacts everything.
      await again.createNetwork({ name: 'after', vni: 78 });
    } finally {
      await again.close();
    }
    assert.equal(await d.stop(), 0);
    const snap = JSON.parse(await readFile(join(d.stateDir, 'state.json'), 'utf8'));
    assert.deepEqual(
      snap.networks.filter((n: { name: string }) => n.name === 'kept' || n.name === 'after'),
      [
        { name: 'kept', vni: 77 },
        { name: 'after', vni: 78 },
      ],
    );
  });
});
