/**
 * Property test of the switch's one pipeline (fast-check): a sequence of
 * frames gives the same deliveries (every port's frames, in order), the same
 * counters and the same FDB whether each port's frames come as one batch
 * (ingressBatch) or frame by frame (ingress). Ports of every kind the stages
 * tell apart: batching or not, trunk, MAC lock, MAC limit, storm control,
 * overlay link and relay ports (split horizon). A failure prints the seed and
 * the shrunk input; rerun it with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { silentLogger } from '../../src/log.js';
import { type PortBinding, Switch, type SwitchPort } from '../../src/net/switch/switch.js';
import { packBatch, RecPort } from '../helpers/rec-port.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };

const MACS = [1, 2, 3, 4, 5].map((n) => `52540000000${n}`);
const GROUP = ['ffffffffffff', '01005e000001'];
const PORTS: [string, Partial<PortBinding>, boolean][] = [
  ['a', {}, true],
  ['b', {}, false],
  ['lim', { maxMacs: 1 }, true],
  ['lock', { allowedMacs: [0x5254_0000_0001, 0x5254_0000_0003] }, true],
  ['trunk', { network: undefined, trunk: { vlans: { 10: 'red', 20: 'blue' }, native: 'red' } }, true],
  ['storm', { storm: { pps: 1, burst: 3 } }, false],
  ['link1', { link: 'link' }, true],
  ['link2', { link: 'link' }, false],
  ['relay1', { link: 'relay' }, true],
  ['relay2', { link: 'relay' }, true],
  ['blue', { network: 'blue' }, true],
];

function rig() {
  const sw = new Switch({ logger: silentLogger(), clock: () => 1_000_000 });
  sw.addNetwork({ name: 'red', vni: 1, mtu: 1500 });
  sw.addNetwork({ name: 'blue', vni: 2, mtu: 1500 });
  const ports = new Map<string, RecPort>();
  const sps = new Map<string, SwitchPort>();
  for (const [name, b, batch] of PORTS) {
    sps.set(
      name,
      sw.addPort(name, { network: 'red', ...b }, (sink) => {
        const p = new RecPort(name, sink, batch);
        ports.set(name, p);
        return p;
      }),
    );
  }
  return { sw, ports, sps };
}

const frame = fc
  .record({
    dst: fc.constantFrom(...MACS, ...GROUP),
    src: fc.constantFrom(...MACS, '01005e000002'),
    tag: fc.constantFrom('', '', '', '8100000a', '81000014', '81000063', '81000000', '8100a00a'),
    size: fc.constantFrom(46, 46, 46, 1500, 1501, 0),
    fill: fc.integer({ min: 0, max: 255 }),
  })
  .map(({ dst, src, tag, size, fill }) =>
    size === 0 ? `${dst}5254` : `${dst}${src}${tag}88b5${fill.toString(16).padStart(2, '0').repeat(size)}`,
  );

const step = fc.record({
  from: fc.constantFrom(...PORTS.map((p) => p[0])),
  frames: fc.array(frame, { minLength: 1, maxLength: 20 }),
});

describe('switch pipeline (property test)', () => {
  it('gives the same deliveries, counters and FDB for frames as one batch per port as frame by frame', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 12 }), (steps) => {
        const one = rig();
        const bat = rig();
        for (const { from, frames } of steps) {
          for (const h of frames) {
            const b = Buffer.from(h, 'hex');
            (one.sps.get(from) as SwitchPort).ingress(b, 0, b.length);
          }
          const { buf, idx, count } = packBatch(frames);
          (bat.sps.get(from) as SwitchPort).ingressBatch(buf, idx, count);
        }
        for (const [name] of PORTS) {
          assert.deepEqual(bat.ports.get(name)?.sent, one.ports.get(name)?.sent, `frames of ${name}`);
          assert.deepEqual(
            bat.sps.get(name)?.counterSnapshot(),
            one.sps.get(name)?.counterSnapshot(),
            `counters of ${name}`,
          );
        }
        assert.deepEqual(bat.sw.fdb(), one.sw.fdb());
      }),
      { numRuns: 200, ...seed },
    );
  });
});
