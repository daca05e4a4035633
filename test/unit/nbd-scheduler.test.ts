import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { IoScheduler } from '../../src/storage/scheduler.js';

describe('NBD I/O scheduler', () => {
  it('serves backlogged exports in proportion to their weights, never running more than its concurrency', async () => {
    const reg = new ExportRegistry();
    const light = reg.add({ name: 'light', backend: new MemoryBackend({ size: 1 }), weight: 1 });
    const heavy = reg.add({ name: 'heavy', backend: new MemoryBackend({ size: 1 }), weight: 3 });
    const s = new IoScheduler({ concurrency: 2 });
    const order: string[] = [];
    let running = 0;
    let most = 0;
    const job = (name: string) => ({
      run: async () => {
        running++;
        most = Math.max(most, running);
        order.push(name);
        await new Promise<void>((r) => setImmediate(r));
        running--;
      },
    });
    for (let i = 0; i < 400; i++) {
      s.submit(light, job('light'), 65536);
      s.submit(heavy, job('heavy'), 65536);
    }
    await s.idle();
    assert.equal(most, 2);
    assert.equal(order.length, 800);
    // While both are backlogged (the first 400 dispatches), heavy gets three of every four.
    const first = order.slice(0, 400);
    const heavyShare = first.filter((x) => x === 'heavy').length / first.length;
    assert.ok(Math.abs(heavyShare - 0.75) < 0.03, `heavy share ${heavyShare}`);
  });

  it('resolves idle() at once when nothing is queued, and after the last request otherwise, serving one export in arrival order', async () => {
    const s = new IoScheduler({ concurrency: 1 });
    const later = () => new Promise<string>((r) => setImmediate(() => r('a later turn of the event loop')));
    assert.equal(await Promise.race([s.idle().then(() => 'idle'), later()]), 'idle');

    const reg = new ExportRegistry();
    const exp = reg.add({ name: 'one', backend: new MemoryBackend({ size: 1 }) });
    const served: number[] = [];
    for (let i = 0; i < 5; i++) {
      const run = async () => {
        await later();
        served.push(i);
      };
      s.submit(exp, { run }, i % 2 ? 65536 : 512);
    }
    await s.idle();
    assert.deepEqual(served, [0, 1, 2, 3, 4]);
  });

  it('forgets the queue of an export removed from the registry, so nothing keeps its backend', async () => {
    const reg = new ExportRegistry();
    const s = new IoScheduler();
    reg.onRemove((exp) => s.forget(exp));
    const keep = reg.add({ name: 'keep', backend: new MemoryBackend({ size: 1 }) });
    const gone = reg.add({ name: 'gone', backend: new MemoryBackend({ size: 1 }) });
    s.submit(keep, { run: async () => {} }, 1);
    s.submit(gone, { run: async () => {} }, 1);
    await s.idle();
    assert.equal(s.exportQueues, 2);
    reg.remove('gone');
    assert.equal(s.exportQueues, 1);
    // The remaining export is still served.
    let ran = false;
    s.submit(
      keep,
      {
        run: async () => {
          ran = true;
        },
      },
      1,
    );
    await s.idle();
    assert.equal(ran, true);
  });
});
