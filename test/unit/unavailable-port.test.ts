import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UnavailablePort } from '../../src/daemon/unavailable-port.js';
import { PortKindError } from '../../src/net/errors.js';
import { WriteResult } from '../../src/net/port.js';

describe('unavailable port', () => {
  test('is down, refuses to open with the error that kept it from being built, and drops every frame', async () => {
    const err = new PortKindError('tap', ['stream']);
    const p = new UnavailablePort('vm1', 'tap', err);
    assert.equal(p.state, 'down');
    await assert.rejects(p.open(), (e) => e === err);
    assert.equal(p.write(Buffer.alloc(14), 0, 14), WriteResult.DOWN);
    assert.equal(p.queued, 0);
    assert.deepEqual(p.describe(), { unavailable: true });
  });

  test('closes idempotently', async () => {
    const p = new UnavailablePort('vm1', 'tap', new Error('x'));
    await p.close();
    await p.destroy();
    assert.equal(p.state, 'closed');
  });
});
