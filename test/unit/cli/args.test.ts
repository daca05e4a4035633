import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addressArg, intArg, macArg, stormArg, trunkArg } from '../../../src/cli/args.js';
import { portBody } from '../../../src/cli/port.js';

const usage = (message: RegExp) => ({ code: 'ERR_USAGE', message });

describe('command-line value checks', () => {
  test('accepts integers in range and names flag, value and range otherwise', () => {
    assert.equal(intArg('--vni', '100', 1, 0xffffff), 100);
    assert.equal(intArg('--vni', '16777215', 1, 0xffffff), 16777215);
    for (const bad of ['abc', '0', '16777216', '1.5', '-3', '', '0x10', '1e3']) {
      assert.throws(
        () => intArg('--vni', bad, 1, 0xffffff),
        usage(new RegExp(`^--vni "${bad.replace('.', '\\.')}" is not an integer 1-16777215$`)),
      );
    }
  });

  test('checks addresses against the kinds a flag allows', () => {
    assert.equal(addressArg('--listen', 'unix:/run/a.sock', ['unix', 'tcp']), 'unix:/run/a.sock');
    assert.equal(addressArg('--listen', 'tcp:[::1]:5555', ['unix', 'tcp']), 'tcp:[::1]:5555');
    assert.throws(() => addressArg('--listen', 'udp:1.2.3.4:5', ['tcp']), usage(/^--listen "udp:1\.2\.3\.4:5"/));
    assert.throws(() => addressArg('--local', 'udp:host:99999', ['udp']), usage(/"udp:host:99999"/));
  });

  test('accepts unicast MACs only', () => {
    assert.equal(macArg('--mac', '52:54:00:12:34:56'), '52:54:00:12:34:56');
    assert.throws(() => macArg('--mac', '01:00:5e:00:00:01'), usage(/--mac "01:00:5e:00:00:01" is not a unicast/));
    assert.throws(() => macArg('--mac', '52:54:00'), usage(/"52:54:00"/));
  });

  test('parses a trunk map and refuses VLAN ids outside 1-4094 and repeated ids', () => {
    assert.deepEqual(trunkArg('--trunk', '10=lab,20=dmz'), { '10': 'lab', '20': 'dmz' });
    assert.throws(() => trunkArg('--trunk', '4095=lab'), usage(/"4095" is not an integer 1-4094/));
    assert.throws(() => trunkArg('--trunk', '10=lab,10=dmz'), usage(/VLAN 10 is given twice/));
    assert.throws(() => trunkArg('--trunk', 'lab'), usage(/"lab" is not VID=NETWORK/));
  });

  test('parses storm control with and without a burst', () => {
    assert.deepEqual(stormArg('--storm', '1000/200'), { pps: 1000, burst: 200 });
    assert.deepEqual(stormArg('--storm', '2.5'), { pps: 2.5, burst: 3 });
    assert.throws(() => stormArg('--storm', '100/0'), usage(/--storm burst "0"/));
    assert.throws(() => stormArg('--storm', '1/2/3'), usage(/"1\/2\/3"/));
  });

  test('builds a port body exactly as the config schema spells it', () => {
    assert.deepEqual(
      portBody('vm1', {
        kind: 'dgram',
        trunk: '10=lab',
        native: 'dmz',
        local: 'udp:127.0.0.1:7001',
        remote: 'udp:127.0.0.1:7002',
        allowedMac: ['52:54:00:00:00:01'],
        maxMacs: '4',
        storm: '10/5',
        queueLen: '64',
        mac: '52:54:00:00:00:01',
      }),
      {
        name: 'vm1',
        kind: 'dgram',
        trunk: { vlans: { '10': 'lab' }, native: 'dmz' },
        local: 'udp:127.0.0.1:7001',
        remote: 'udp:127.0.0.1:7002',
        allowed_macs: ['52:54:00:00:00:01'],
        max_macs: 4,
        storm: { pps: 10, burst: 5 },
        queue_len: 64,
        mac: '52:54:00:00:00:01',
      },
    );
    assert.deepEqual(portBody('vm2', { kind: 'stream', network: 'lab', connect: 'unix:/run/vm2.sock' }), {
      name: 'vm2',
      kind: 'stream',
      network: 'lab',
      connect: 'unix:/run/vm2.sock',
    });
  });

  test('refuses option mixes a port kind cannot use', () => {
    const base = { kind: 'stream', network: 'lab' };
    assert.throws(() => portBody('p', base), usage(/exactly one of --listen/));
    assert.throws(() => portBody('p', { ...base, listen: 'unix:/a', local: 'udp:1.1.1.1:1' }), usage(/--local/));
    assert.throws(() => portBody('p', { ...base, listen: 'unix:/a', native: 'x' }), usage(/--native/));
    assert.throws(() => portBody('p', { kind: 'dgram', network: 'lab', listen: 'udp:1.1.1.1:1' }), usage(/--listen/));
    assert.throws(() => portBody('p', { kind: 'vhost', network: 'lab' }), usage(/--kind "vhost" is not one of/));
    assert.throws(() => portBody('p', { kind: 'tap', network: 'lab' }), usage(/--kind tap needs --ifname/));
    assert.throws(() => portBody('p', { kind: 'tap', network: 'lab', ifname: 't0', dir: '/x' }), usage(/--dir is not/));
    assert.throws(() => portBody('p', { kind: 'vde', network: 'lab', dir: 'rel' }), usage(/--dir \/absolute\/dir/));
  });

  test('builds tap and vde port bodies', () => {
    assert.deepEqual(portBody('t', { kind: 'tap', network: 'lab', ifname: 'vmtap%d', vnetHdr: true }), {
      name: 't',
      kind: 'tap',
      network: 'lab',
      ifname: 'vmtap%d',
      vnet_hdr: true,
    });
    assert.deepEqual(portBody('v', { kind: 'vde', network: 'lab', dir: '/run/vde1' }), {
      name: 'v',
      kind: 'vde',
      network: 'lab',
      dir: '/run/vde1',
    });
  });
});
