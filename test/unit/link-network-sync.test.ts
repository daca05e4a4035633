/**
 * The network list after the hello (network-sync.ts): the parts a big list
 * is cut into, and what the receiving end does with parts out of order,
 * changes before the list, and entries that are not networks.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeControl, HEADER_LEN, MAX_CONTROL_BODY } from '../../src/net/overlay/codec.js';
import { PeerNetworks, snapshotMessages, updateMessages } from '../../src/net/overlay/network-sync.js';

/** Networks taken from the peer, -1 before its first full list. */
const sizeOf = (p: PeerNetworks): number => p.offered?.size ?? -1;

describe('network sync messages', () => {
  test('10,000 networks of 32-character names and the largest VNIs go in 13 records, each under the control limit', () => {
    const nets = Array.from({ length: 10_000 }, (_, i) => ({ vni: 0xffffff - i, name: `n${i}`.padEnd(32, 'x') }));
    const msgs = snapshotMessages(nets);
    assert.equal(msgs.length, 13);
    for (const [i, m] of msgs.entries()) {
      assert.equal(m['part'], i);
      assert.equal(m['last'], i === msgs.length - 1);
      assert.ok(encodeControl(m).length - HEADER_LEN < MAX_CONTROL_BODY);
    }
    const p = new PeerNetworks();
    for (const m of msgs.slice(0, -1)) assert.deepEqual(p.apply(m), { kind: 'pending' });
    assert.equal(sizeOf(p), -1, 'nothing is applied before the last part');
    assert.deepEqual(p.apply(msgs.at(-1) as never), { kind: 'changed', first: true });
    assert.equal(sizeOf(p), 10_000);
  });

  test('an empty list is one message, and applies as no networks', () => {
    const msgs = snapshotMessages([]);
    assert.deepEqual(msgs, [{ type: 'networks', part: 0, last: true, networks: [] }]);
    const p = new PeerNetworks();
    assert.deepEqual(p.apply(msgs[0] as never), { kind: 'changed', first: true });
    assert.equal(p.offered?.size, 0);
  });

  test('a part out of order, or a change before the full list, is a protocol error with a reason', () => {
    const p = new PeerNetworks();
    const r = p.apply({ type: 'networks', part: 1, last: true, networks: [] });
    assert.deepEqual(r, { kind: 'error', reason: 'networks part 1 out of order (expected 0)' });
    const q = new PeerNetworks();
    assert.deepEqual(q.apply({ type: 'networks-update', add: [{ vni: 5 }] }), {
      kind: 'error',
      reason: 'a networks-update message before the full network list',
    });
    assert.equal(q.apply({ type: 'networks', networks: 'x' }).kind, 'error');
  });

  test('entries that are not valid VNIs are skipped; a later list replaces the earlier one', () => {
    const p = new PeerNetworks();
    p.apply({
      type: 'networks',
      part: 0,
      last: true,
      networks: [{ vni: 0 }, { vni: 2 ** 24 }, { vni: 'x' }, null, { vni: 7 }, 9],
    });
    assert.deepEqual([...(p.offered ?? [])].sort(), [7, 9]);
    assert.deepEqual(p.apply({ type: 'networks', networks: [{ vni: 8 }] }), { kind: 'changed', first: false });
    assert.deepEqual([...(p.offered ?? [])], [8]);
  });

  test('changes are only what changed: adds and removes, nothing when nothing changed', () => {
    assert.deepEqual(updateMessages([], []), []);
    assert.deepEqual(updateMessages([{ vni: 5, name: 'e' }], [3]), [
      { type: 'networks-update', add: [{ vni: 5, name: 'e' }], remove: [] },
      { type: 'networks-update', add: [], remove: [3] },
    ]);
  });
});
