/**
 * Connection admission of the daemon's NBD server under attack: a flood of
 * idle TCP connections from one loopback source fills that source's cap,
 * not the server; unix-socket clients and other sources still get in
 * (our client and nbdinfo); the idle ones are closed at the handshake
 * deadline; everything refused is counted in `vmlink status --json` and
 * reported in a few log lines, not one per connection.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusView } from '../../src/api/client.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import type { AdmissionStatus } from '../../src/util/admission.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Flood } from '../helpers/flood.js';
import { runOk } from '../helpers/nbd-peer.js';
import { until } from '../helpers/overlay-rig.js';

const FLOOD = 1100;
/** storage.max_connections_per_source's default. */
const PER_SOURCE = 64;
/** Connections the flood opens again as the server closes its own, while the clients work. */
const RENEWALS = 640;
const PATTERN = Buffer.from('admission keeps this readable');

describe('NBD server admission under a flood of idle connections', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let port: number;
  let flood: Flood | undefined;
  const floods: Flood[] = [];
  const unixAddr = () => ({ type: 'unix' as const, path: d.path('nbd.sock') });
  const nbdAdmission = async (): Promise<AdmissionStatus> => {
    const s = await d.json<StatusView>(['status']);
    assert.ok(s.admission?.nbd, 'status --json has admission.nbd');
    return s.admission.nbd;
  };

  before(async () => {
    d = await startDaemon({
      hostId: 'nbd-admission',
      extra: (dir) => ({
        storage: {
          listen: [`unix:${join(dir, 'nbd.sock')}`, 'tcp:127.0.0.1:0'],
          // 127.0.0.0-127.0.0.3: the flood (127.0.0.3) and the clients (127.0.0.1) may connect.
          allowed_clients: ['127.0.0.0/30'],
        },
        exports: [{ name: 'disk', backend: { type: 'memory', size: '1M' } }],
      }),
    });
    const s = await d.json<StatusView>(['status']);
    port = Number(/:(\d+)$/.exec(s.storage.listen[1] ?? '')?.[1]);
    const c = await NbdClient.connect({ address: unixAddr(), export: 'disk' });
    await c.write(4096, PATTERN);
    await c.disconnect();
  });

  after(async () => {
    for (const f of floods) f.destroy();
    await d?.cleanup();
  });

  test(`${FLOOD} idle connections from one source lock out neither unix clients nor other sources`, async () => {
    flood = await Flood.open({ host: '127.0.0.1', port, localAddress: '127.0.0.3' }, FLOOD);
    floods.push(flood);
    assert.equal(flood.connected, FLOOD);
    // Everything past the source's cap is closed at accept (and what it holds, at the deadline).
    await flood.closedAtLeast(FLOOD - PER_SOURCE);
    // From now on the source keeps its places: what the server closes is opened again.
    flood.renew(RENEWALS);
    const a = await nbdAdmission();
    assert.ok(a.tcp <= PER_SOURCE, `${a.tcp} TCP connections from one source`);
    assert.ok(a.refused.per_source >= FLOOD - PER_SOURCE - a.refused.handshake_timeout);

    const viaUnix = await NbdClient.connect({ address: unixAddr(), export: 'disk' });
    assert.deepEqual(await viaUnix.read(4096, PATTERN.length), PATTERN);
    await viaUnix.disconnect();
    const viaTcp = await NbdClient.connect({ address: { type: 'tcp', host: '127.0.0.1', port }, export: 'disk' });
    assert.deepEqual(await viaTcp.read(4096, PATTERN.length), PATTERN);
    await viaTcp.disconnect();
    const info = await runOk('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
    assert.equal(info.trim(), String(1024 * 1024));
  });

  test('a source outside storage.allowed_clients is closed at accept and counted', async () => {
    const outsider = await Flood.open({ host: '127.0.0.1', port, localAddress: '127.0.0.9' }, 1);
    floods.push(outsider);
    await outsider.closedAtLeast(1);
    assert.equal((await nbdAdmission()).refused.not_allowed, 1);
  });

  test('the idle connections are closed at the handshake deadline, counted, and reported in a few lines', async () => {
    assert.ok(flood, 'the flood test ran first');
    flood.stopRenewing();
    await flood.allClosed();
    const a = await nbdAdmission();
    // Every connection of the flood was refused at accept or closed at the deadline.
    assert.equal(a.refused.per_source + a.refused.handshake_timeout, flood.connected);
    assert.ok(a.refused.handshake_timeout >= PER_SOURCE);
    assert.equal(a.tcp, 0);
    assert.equal(a.pending, 0);
    const lines = d.log.split('\n').filter((l) => l.includes('NBD server: refused or closed'));
    assert.ok(lines.length >= 1, 'refusals are reported');
    assert.ok(
      lines.length < 50,
      `${lines.length} report lines for ${flood.connected + 1} refusals: not one per connection`,
    );
    assert.match(lines.join('\n'), /per_source \d+ \(64 per source; storage\.max_connections_per_source\)/);
    // Reported with the next line at the latest one report interval (10 s) later.
    await until(
      'handshake timeouts reported',
      () => /NBD server: refused or closed.*handshake_timeout \d+/.test(d.log),
      30_000,
    );
    assert.doesNotMatch(d.log, /no handshake within/);
  });
});
