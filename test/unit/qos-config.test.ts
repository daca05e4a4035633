import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatPath } from '../../src/config/errors.js';
import { formatRate, linkQosSchema, parseRate, portQosSchema, qosRequestSchema } from '../../src/config/qos-schema.js';
import { configSchema } from '../../src/config/schema.js';
import { admissionViolations, reservedOn } from '../../src/qos/admission.js';
import { prng } from '../helpers/prng.js';

describe('QoS config', () => {
  it('parses rates written like tc into bits per second', () => {
    assert.equal(parseRate('200mbit'), 200e6);
    assert.equal(parseRate('1.5gbit'), 1.5e9);
    assert.equal(parseRate('800 kbit'), 800e3);
    assert.equal(parseRate('1TBIT'), 1e12);
    assert.equal(parseRate(64000), 64000);
    for (const bad of ['-5mbit', '0', '2tbit', '7999', 'fast', '1e9', '10 mbps', '', '1..2mbit'])
      assert.equal(typeof parseRate(bad), 'string', bad);
  });

  it('formats rates back into text that parses to the same value', () => {
    for (const r of [8000, 200e6, 1.5e9, 1e12, 123456789]) {
      const again = parseRate(formatRate(r));
      assert.equal(typeof again, 'number');
      assert.ok(Math.abs((again as number) / r - 1) < 1e-3, `${r} -> ${formatRate(r)} -> ${again}`);
    }
  });

  it('never throws on seeded random input and accepts only rates in range', () => {
    const rnd = prng(17);
    const alphabet = '0123456789.-+ kmgtbiKMGTBIepsx';
    for (let i = 0; i < 50_000; i++) {
      let t = '';
      const n = Math.floor(rnd() * 12);
      for (let k = 0; k < n; k++) t += alphabet[Math.floor(rnd() * alphabet.length)];
      const r = parseRate(t);
      if (typeof r === 'number') assert.ok(r >= 8000 && r <= 1e12 && Number.isFinite(r), `${t} -> ${r}`);
    }
  });

  it('names the field of each bad value in a port policy', () => {
    const problems = (x: unknown) => {
      const r = portQosSchema.safeParse(x);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    assert.match(problems({ min: '-1mbit' })[0] ?? '', /^min: "-1mbit" is not a rate/);
    assert.match(
      problems({ class: 'gold' })[0] ?? '',
      /^class: class must be one of: latency, interactive, best-effort, bulk/,
    );
    assert.match(problems({ min: '2gbit', max: '1gbit' })[0] ?? '', /^min: min 2gbit is above max 1gbit/);
    assert.match(problems({ latency_cap: '1mbit' })[0] ?? '', /^latency_cap: latency_cap needs capacity/);
    assert.match(
      problems({ capacity: '1mbit', latency_cap: '2mbit' })[0] ?? '',
      /^latency_cap: latency_cap 2mbit is above capacity 1mbit/,
    );
    assert.match(problems({ weight: 1001 })[0] ?? '', /^weight: weight must be 1-1000/);
    assert.match(problems({ speed: 1 })[0] ?? '', /speed/);
    assert.equal(qosRequestSchema.safeParse({ capacity: '1gbit' }).success, false, 'a VM cannot ask for a capacity');
  });

  it('puts a port policy under ports[i].qos of the configuration', () => {
    const r = configSchema.safeParse({
      host: { id: 'a' },
      networks: [{ name: 'lab', vni: 1 }],
      ports: [{ name: 'vm1', network: 'lab', kind: 'vde', dir: '/tmp/x', qos: { max: 'lots' } }],
    });
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues[0]?.path, ['ports', 0, 'qos', 'max']);
  });
});

describe('link QoS config', () => {
  const base = { host: { id: 'a' }, networks: [{ name: 'lab', vni: 1 }], overlay: { plain: true } };
  const problems = (qos: unknown, at: 'link' | 'peer' = 'link') => {
    const doc =
      at === 'link'
        ? { ...base, links: [{ name: 'x', connect: 'tcp:1.2.3.4:5', qos }] }
        : { ...base, overlay: { plain: true, peer_qos: { spoke1: qos } } };
    const r = configSchema.safeParse(doc);
    return r.success ? [] : r.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
  };

  it('parses a link capacity, latency cap and burst', () => {
    assert.deepEqual(linkQosSchema.parse({ capacity: '100mbit', latency_cap: '5mbit', burst: '256K' }), {
      capacity: 100e6,
      latency_cap: 5e6,
      burst: 256 * 1024,
    });
  });

  it('names the field of each bad value under links[i].qos and overlay.peer_qos', () => {
    assert.match(problems({ capacity: 'fast' })[0] ?? '', /^links\[0\]\.qos\.capacity: "fast" is not a rate/);
    assert.match(problems({})[0] ?? '', /^links\[0\]\.qos\.capacity: capacity is required/);
    assert.match(problems({ capacity: true })[0] ?? '', /^links\[0\]\.qos\.capacity: a rate is text such as 200mbit/);
    assert.match(
      problems({ capacity: '10mbit', latency_cap: '20mbit' })[0] ?? '',
      /^links\[0\]\.qos\.latency_cap: latency_cap 20mbit is above capacity 10mbit/,
    );
    assert.match(problems({ capacity: '10mbit', burst: 100 })[0] ?? '', /^links\[0\]\.qos\.burst: burst 100 bytes/);
    assert.match(
      problems('10mbit')[0] ?? '',
      /^links\[0\]\.qos: qos must be an object such as \{ capacity: 100mbit \}/,
    );
    assert.match(problems({ capacity: '1gbit', min: '1mbit' })[0] ?? '', /^links\[0\]\.qos: .*min/);
    assert.match(
      problems({ capacity: '1kbit' }, 'peer')[0] ?? '',
      /^overlay\.peer_qos\.spoke1\.capacity: "1kbit" is not a rate/,
    );
    assert.deepEqual(problems({ capacity: '1gbit' }, 'peer'), []);
  });

  it('never throws on seeded random link policies, and accepts only valid ones', () => {
    const rnd = prng(29);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)] as T;
    const values = ['10mbit', '1gbit', 'x', -1, 0, 8000, 1e13, '5 mbit', true, null, {}, '64K', 2000, '1M'];
    for (let i = 0; i < 5000; i++) {
      const q: Record<string, unknown> = {};
      for (const k of ['capacity', 'latency_cap', 'burst', 'weight']) if (rnd() < 0.6) q[k] = pick(values);
      const r = linkQosSchema.safeParse(q);
      if (!r.success) continue;
      assert.ok(r.data.capacity >= 8000 && r.data.capacity <= 1e12, JSON.stringify(q));
      assert.ok(r.data.latency_cap === undefined || r.data.latency_cap <= r.data.capacity, JSON.stringify(q));
      assert.ok(r.data.burst === undefined || r.data.burst >= 1600, JSON.stringify(q));
    }
  });
});

describe('QoS admission', () => {
  const ports = [
    { name: 'up', networks: ['lab'], capacity: 1e9 },
    { name: 'a', networks: ['lab'], min: 400e6 },
    { name: 'b', networks: ['lab', 'dmz'], min: 500e6 },
    { name: 'c', networks: ['dmz'], min: 900e6 },
  ];

  it('counts only the reservations of ports sharing a network with the shaped port', () => {
    assert.deepEqual(admissionViolations(ports), []);
    assert.equal(reservedOn(ports, 'up'), 900e6);
    assert.equal(reservedOn(ports, 'up', 'a'), 500e6);
  });

  it('reports each oversubscribed shaped port with its holders', () => {
    const v = admissionViolations([...ports, { name: 'd', networks: ['lab'], min: 200e6 }]);
    assert.deepEqual(v, [
      {
        port: 'up',
        capacity: 1e9,
        reserved: 1.1e9,
        holders: [
          { name: 'a', min: 400e6 },
          { name: 'b', min: 500e6 },
          { name: 'd', min: 200e6 },
        ],
      },
    ]);
  });

  it('counts the reservations of the ports on the networks a link may carry against its capacity', () => {
    const link = { name: 'wan', kind: 'link' as const, networks: ['dmz'], capacity: 1e9 };
    assert.deepEqual(admissionViolations([...ports, link]), [
      {
        port: 'wan',
        kind: 'link',
        capacity: 1e9,
        reserved: 1.4e9,
        holders: [
          { name: 'b', min: 500e6 },
          { name: 'c', min: 900e6 },
        ],
      },
    ]);
    assert.deepEqual(admissionViolations([...ports, { ...link, networks: ['lab'] }]), []);
  });
});
