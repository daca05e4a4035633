import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatRate, parseRate, portQosSchema, qosRequestSchema } from '../../src/config/qos-schema.js';
import { configSchema } from '../../src/config/schema.js';
import { admissionViolations, reservedOn } from '../../src/net/qos/admission.js';
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
});
