/**
 * Connection admission of the control API: a flood of half-open
 * connections (request headers started, never finished) holds at most
 * `host.control_max_connections` places, `vmlink status` still answers
 * during it, and every flood connection is closed by admission (evicted for
 * a newer one or at the headers deadline) and counted.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusView } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Flood } from '../helpers/flood.js';

const FLOOD = 5000;
const CAP = 32;

describe('control API admission under a flood of half-open connections', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let flood: Flood | undefined;

  before(async () => {
    d = await startDaemon({
      hostId: 'ctl-admission',
      extra: (dir) => ({
        host: {
          id: 'ctl-admission',
          control: join(dir, 'vmlink.sock'),
          state_dir: join(dir, 'state'),
          control_max_connections: CAP,
          control_headers_timeout_ms: 3000,
        },
      }),
    });
  });

  after(async () => {
    flood?.destroy();
    await d?.cleanup();
  });

  test(`${FLOOD} half-open connections are capped and vmlink status still answers`, async () => {
    // Unix sockets refuse a connect (EAGAIN) when the backlog is full: batches keep many of them coming.
    // How many get through depends on how fast the daemon accepts on a busy machine; what matters is
    // that the flood is far beyond the cap (ten times at least).
    flood = await Flood.open({ path: d.control }, FLOOD, {
      batch: 200,
      send: 'GET /v1/status HTTP/1.1\r\nHost: x\r\n',
    });
    assert.ok(flood.connected >= 10 * CAP, `${flood.connected} of ${FLOOD} connected`);
    // Each connection past the cap closed the oldest pending one: at most CAP stay open.
    await flood.closedAtLeast(flood.connected - CAP);
    assert.ok(flood.open <= CAP, `${flood.open} flood connections open`);

    const r = await d.cli(['status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as StatusView;
    assert.equal(s.host.id, 'ctl-admission');
    const a = s.admission?.control;
    assert.ok(a, 'status --json has admission.control');
    assert.ok(a.unix <= CAP, `${a.unix} control connections`);
    // Closed for a newer one, or (had the flood taken longer than the deadline) at the deadline.
    const closed = a.refused.evicted + a.refused.handshake_timeout;
    assert.ok(closed >= flood.connected - CAP, `${closed} closed of ${flood.connected}`);
    assert.ok(a.refused.evicted >= 1);
    assert.equal(a.refused.listener_full, 0);
  });

  test('every flood connection is closed by admission and counted; the CLI is never among them', async () => {
    assert.ok(flood, 'the flood test ran first');
    await flood.closedAtLeast(flood.connected);
    const r = await d.cli(['status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const a = (JSON.parse(r.stdout) as StatusView).admission?.control;
    assert.ok(a);
    assert.equal(a.refused.evicted + a.refused.handshake_timeout, flood.connected);
    assert.ok(a.refused.handshake_timeout >= 1);
    assert.match(d.log, /control API: refused or closed \d+ connection.*evicted/);
    // The plain status names the same counts for an operator.
    const plain = await d.cli(['status']);
    assert.equal(plain.code, 0, plain.stderr);
    const refused = a.refused.evicted + a.refused.handshake_timeout;
    assert.match(
      plain.stdout,
      new RegExp(`admission\\s+control \\d+ open, ${refused} refused \\(evicted \\d+, handshake_timeout \\d+\\)`),
    );
  });
});
