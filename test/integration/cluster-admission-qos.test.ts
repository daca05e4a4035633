/**
 * The QoS service's fabric step (src/daemon/qos.ts requestInFabric,
 * admitInFabric): asked after the local check, with the shaped links the
 * port's networks cross; the policy is applied only when it admits.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PortConfig } from '../../src/config/schema.js';
import { type FabricLink, QosService, type ShapedLink } from '../../src/daemon/qos.js';
import { hasCode } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { Switch } from '../../src/net/switch/switch.js';
import { QosAdmissionError } from '../../src/qos/errors.js';
import { RecPort } from '../helpers/rec-port.js';

const MBIT = 1_000_000;

function rig() {
  const sw = new Switch({ logger: silentLogger() });
  sw.addNetwork({ name: 'lab', vni: 1, mtu: 1500 });
  sw.addNetwork({ name: 'dmz', vni: 2, mtu: 1500 });
  const qos = new QosService({ switch: sw, logger: silentLogger() });
  const links: ShapedLink[] = [
    { name: 'wan', policy: { capacity: (100 * MBIT) / 8 }, shaper: undefined, networks: ['lab'] },
    { name: 'dmz-uplink', policy: { capacity: (50 * MBIT) / 8 }, shaper: undefined, networks: ['dmz'] },
  ];
  qos.setLinks(() => links);
  for (const [name, network] of [
    ['vm1', 'lab'],
    ['vm2', 'dmz'],
  ] as const) {
    sw.addPort(name, { network }, (sink) => new RecPort(name, sink));
    qos.attach({ name, network, kind: 'stream' } as PortConfig);
  }
  const asked: { port: string; bps: number; links: FabricLink[] }[] = [];
  let refuse: Error | undefined;
  qos.setFabricAdmission(async (port, bps, l) => {
    asked.push({ port, bps, links: l });
    if (refuse) throw refuse;
  });
  return { qos, asked, refuse: (e: Error | undefined) => (refuse = e) };
}

describe('QoS service fabric step', () => {
  it('asks the fabric for the reservation on the shaped links of the port networks, then applies it', async () => {
    const { qos, asked } = rig();
    const view = await qos.requestInFabric('vm1', { min: 10 * MBIT });
    assert.deepEqual(asked, [{ port: 'vm1', bps: 10 * MBIT, links: [{ name: 'wan', capacity: 100 * MBIT }] }]);
    assert.equal(qos.policy('vm1')?.min, 10 * MBIT);
    assert.equal(view.name, 'vm1');
  });

  it('changes nothing when the fabric refuses', async () => {
    const { qos, refuse } = rig();
    await qos.requestInFabric('vm1', { min: 10 * MBIT });
    refuse(new QosAdmissionError('a~b', 'refused: link "a~b" is full'));
    await assert.rejects(qos.requestInFabric('vm1', { min: 20 * MBIT }), (e: Error) => hasCode(e, 'ERR_QOS_ADMISSION'));
    assert.equal(qos.policy('vm1')?.min, 10 * MBIT);
  });

  it('does not ask the fabric for what the local check refuses', async () => {
    const { qos, asked } = rig();
    await assert.rejects(qos.requestInFabric('vm2', { min: 60 * MBIT }), (e: Error) => {
      assert.ok(hasCode(e, 'ERR_QOS_ADMISSION'));
      assert.match(e.message, /link "dmz-uplink" has capacity 50mbit/);
      return true;
    });
    assert.deepEqual(asked, []);
    assert.equal(qos.policy('vm2'), undefined);
  });

  it('asks the fabric for a port about to be added with a reservation', async () => {
    const { qos, asked } = rig();
    await qos.admitInFabric({ name: 'vm3', network: 'dmz', kind: 'stream', qos: { min: 5 * MBIT } } as PortConfig);
    assert.deepEqual(asked, [{ port: 'vm3', bps: 5 * MBIT, links: [{ name: 'dmz-uplink', capacity: 50 * MBIT }] }]);
  });

  it('without a cluster behaves as the local request', async () => {
    const { qos, asked } = rig();
    qos.setFabricAdmission(undefined);
    await qos.requestInFabric('vm1', { min: 10 * MBIT });
    assert.equal(qos.policy('vm1')?.min, 10 * MBIT);
    assert.deepEqual(asked, []);
  });
});
