/**
 * Two real daemons with 10,000 networks each (limits.networks: 10000),
 * linked over plain TCP on loopback: the link comes up at the first attempt
 * and both `vmlink link list` agree on the 5,000 networks they share.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { LinkView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { freeTcpPort } from '../helpers/vm.js';

const COUNT = 10_000;
const name = (vni: number) => `net-${String(vni).padStart(8, '0')}`.padEnd(32, 'x');
const nets = (first: number) => Array.from({ length: COUNT }, (_, i) => ({ name: name(first + i), vni: first + i }));

describe('two daemons with 10,000 networks each', { timeout: 180_000 }, () => {
  let a: TestDaemon;
  let b: TestDaemon;
  const links = async (d: TestDaemon) => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  before(async () => {
    const bPort = await freeTcpPort();
    b = await startDaemon({
      hostId: 'b',
      networks: nets(5001),
      extra: () => ({ limits: { networks: COUNT }, overlay: { listen: `tcp:127.0.0.1:${bPort}`, plain: true } }),
    });
    a = await startDaemon({
      hostId: 'a',
      networks: nets(1),
      extra: () => ({
        limits: { networks: COUNT },
        overlay: { plain: true },
        links: [{ name: 'b', connect: `tcp:127.0.0.1:${bPort}` }],
      }),
    });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
  });

  test('the link comes up at the first attempt and both ends carry the same 5,000 networks', async () => {
    await untilAsync('link up on a', async () => (await links(a))[0]?.state === 'up', 120_000);
    await untilAsync('link up on b', async () => (await links(b))[0]?.state === 'up', 120_000);
    const [la] = await links(a);
    const [lb] = await links(b);
    const shared = Array.from({ length: 5000 }, (_, i) => name(5001 + i));
    assert.deepEqual([...(la?.networks ?? [])].sort(), shared);
    assert.deepEqual([...(lb?.networks ?? [])].sort(), shared);
    assert.equal(la?.connects, 1);
    assert.equal(la?.last_error, null);
    const table = await a.cli(['link', 'list']);
    assert.match(table.stdout, /net-00005001x+,net-\d+x+,net-\d+x+ \+4997/);
  });
});
