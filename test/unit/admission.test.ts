import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import {
  Admission,
  AdmissionGate,
  type AdmissionLimits,
  type AdmissionTicket,
  isRefusal,
  type Refusal,
  sourceKey,
} from '../../src/util/admission.js';

const LIMITS: AdmissionLimits = { maxConnections: 4, maxPerSource: 2, maxUnix: 2, handshakeTimeoutMs: 1000 };

/** An Admission on a clock the test moves; `closed` lists the connections it closed. */
function rig(limits: Partial<AdmissionLimits> = {}) {
  let now = 0;
  const a = new Admission({ limits: { ...LIMITS, ...limits }, clock: () => now });
  const closed: string[] = [];
  const admit = (address: string | undefined, id = address ?? 'unix'): AdmissionTicket | Refusal =>
    a.admit(address, () => closed.push(id));
  return { a, closed, admit, advance: (ms: number) => (now += ms) };
}

function ticket(r: AdmissionTicket | Refusal): AdmissionTicket {
  assert.ok(!isRefusal(r), `expected admission, got ${String(r)}`);
  return r;
}

test('counts IPv4 sources by address and IPv6 sources by /64', () => {
  assert.equal(sourceKey('192.0.2.7'), '192.0.2.7');
  assert.equal(sourceKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(sourceKey('2001:db8:0:1::5'), '2001:db8:0:1::/64');
  assert.equal(sourceKey('2001:0db8:0000:0001:ffff:1:2:3'), '2001:db8:0:1::/64');
  assert.equal(sourceKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(sourceKey('::1'), '0:0:0:0::/64');
  assert.equal(sourceKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  assert.equal(sourceKey('2001:DB8:0:1:0:0:0:9'), '2001:db8:0:1::/64');
});

test('two addresses of one /64 share a key; addresses of different /64s do not', () => {
  const hex = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
  fc.assert(
    fc.property(
      fc.array(hex, { minLength: 8, maxLength: 8 }),
      fc.array(hex, { minLength: 4, maxLength: 4 }),
      (g, t) => {
        const a = g.join(':');
        const b = [...g.slice(0, 4), ...t].join(':');
        assert.equal(sourceKey(a), sourceKey(b));
        // The same address written with its longest zero run compressed has the same key.
        assert.equal(sourceKey(a.replace(/(^|:)0(:0)+(:|$)/, '::')), sourceKey(a));
      },
    ),
  );
});

test('refuses a source past its own cap while other sources and unix clients still get in', () => {
  const { a, admit } = rig();
  ticket(admit('10.0.0.1'));
  ticket(admit('10.0.0.1'));
  assert.equal(admit('10.0.0.1'), 'per_source');
  ticket(admit('10.0.0.2'));
  ticket(admit(undefined));
  assert.deepEqual(a.status(), {
    tcp: 3,
    unix: 1,
    pending: 4,
    refused: { not_allowed: 0, per_source: 1, listener_full: 0, evicted: 0, handshake_timeout: 0 },
  });
});

test('a released place is free again, and release is idempotent', () => {
  const { a, admit } = rig();
  const t = ticket(admit('10.0.0.1'));
  ticket(admit('10.0.0.1'));
  t.release();
  t.release();
  ticket(admit('10.0.0.1'));
  assert.equal(a.status().tcp, 2);
});

test('checks allowed_clients before any cap, and never for unix clients', () => {
  const { a, admit } = rig({ allowed: (addr) => addr.startsWith('10.'), maxPerSource: 0 });
  assert.equal(admit('192.0.2.1'), 'not_allowed');
  assert.equal(admit('10.0.0.1'), 'per_source');
  ticket(admit(undefined));
  assert.equal(a.status().refused.not_allowed, 1);
});

test('a full listener closes its oldest pending connection to admit a new one', () => {
  const { a, admit, closed, advance } = rig();
  ticket(admit('10.0.0.1', 'a'));
  advance(10);
  ticket(admit('10.0.0.2', 'b'));
  ticket(admit('10.0.0.3', 'c'));
  ticket(admit('10.0.0.4', 'd'));
  ticket(admit('10.0.0.5', 'e'));
  assert.deepEqual(closed, ['a']);
  assert.equal(a.status().tcp, 4);
  assert.equal(a.status().refused.evicted, 1);
});

test('a full listener evicts from the source holding the most connections before a lone client', () => {
  const { admit, closed, advance } = rig({ maxPerSource: 3 });
  ticket(admit('10.0.0.1', 'peer'));
  advance(10);
  for (const id of ['f1', 'f2', 'f3']) ticket(admit('10.0.0.9', id));
  ticket(admit('10.0.0.2', 'new'));
  assert.deepEqual(closed, ['f1']);
  ticket(admit('10.0.0.3', 'newer'));
  // 10.0.0.9 still holds the most (2): its oldest goes, not the older lone peer.
  assert.deepEqual(closed, ['f1', 'f2']);
});

test('refuses as listener_full only when every connection is established', () => {
  const { admit, closed } = rig();
  for (const n of [1, 2, 3, 4]) ticket(admit(`10.0.0.${n}`)).established();
  assert.equal(admit('10.0.0.9'), 'listener_full');
  assert.deepEqual(closed, []);
});

test('unix clients have their own budget: a TCP flood never evicts or refuses them', () => {
  const { admit, closed } = rig();
  for (let i = 0; i < 20; i++) admit(`10.0.0.${i}`, `t${i}`);
  ticket(admit(undefined, 'u1')).established();
  ticket(admit(undefined, 'u2'));
  assert.ok(!closed.some((c) => c.startsWith('u')));
  // The unix budget evicts its own pending client, not an established one.
  ticket(admit(undefined, 'u3'));
  assert.ok(closed.includes('u2') && !closed.includes('u1'));
});

test('closes connections still pending at their deadline, not established ones', () => {
  const { a, admit, closed, advance } = rig();
  ticket(admit('10.0.0.1', 'idle'));
  ticket(admit('10.0.0.2', 'done')).established();
  ticket(admit(undefined, 'unix-idle'));
  advance(999);
  assert.equal(a.expire(), 0);
  assert.equal(a.nextDeadline(), 1000);
  advance(1);
  assert.equal(a.expire(), 2);
  assert.deepEqual(closed.sort(), ['idle', 'unix-idle']);
  assert.equal(a.status().tcp, 1);
  assert.equal(a.status().pending, 0);
  assert.equal(a.nextDeadline(), undefined);
  assert.equal(a.status().refused.handshake_timeout, 2);
});

test('reports refusals since the last report and then starts again from zero', () => {
  const { a, admit } = rig({ maxPerSource: 1 });
  admit('10.0.0.1');
  admit('10.0.0.1');
  admit('10.0.0.1');
  assert.deepEqual(a.takeUnreported(), { total: 2, counts: { per_source: 2 } });
  assert.deepEqual(a.takeUnreported(), { total: 0, counts: {} });
  assert.equal(a.status().refused.per_source, 2);
});

test('the gate logs the first refusal at once and later ones in one line per interval', async () => {
  const lines: { msg: string; refused: Record<string, number> }[] = [];
  const logger = pino({ level: 'warn' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  const gate = new AdmissionGate({
    name: 'test listener',
    limits: { ...LIMITS, maxPerSource: 1 },
    logger,
    fields: { per_source: 'x.max_per_source' },
    logIntervalMs: 60_000,
  });
  gate.admit('10.0.0.1', () => {});
  for (let i = 0; i < 50; i++) gate.admit('10.0.0.1', () => {});
  assert.equal(lines.length, 1);
  assert.deepEqual(lines[0]?.refused, { per_source: 1 });
  assert.match(
    lines[0]?.msg ?? '',
    /^test listener: refused or closed 1 connection: per_source 1 \(1 per source; x\.max_per_source\)$/,
  );
  gate.close();
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[1]?.refused, { per_source: 49 });
});

test('the gate closes a connection that misses its deadline', async () => {
  const gate = new AdmissionGate({
    name: 't',
    limits: { ...LIMITS, handshakeTimeoutMs: 20 },
    logger: pino({ level: 'silent' }),
  });
  const closed = new Promise<void>((resolve) => ticket(gate.admit('10.0.0.1', resolve)));
  ticket(gate.admit('10.0.0.2', () => assert.fail('an established connection was closed'))).established();
  // The gate's timers are unref'd (they never keep a daemon alive): hold the loop open meanwhile.
  const alive = setInterval(() => {}, 1000);
  await closed;
  clearInterval(alive);
  assert.equal(gate.status().refused.handshake_timeout, 1);
  gate.close();
});
