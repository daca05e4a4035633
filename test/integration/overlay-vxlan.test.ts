/**
 * VXLAN links (RFC 7348) between two vmlink hosts on loopback addresses:
 * frames tagged with their VNI, too-large frames counted, datagrams from
 * strangers and non-VXLAN datagrams dropped and counted.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { eth, type RigHost, rigHost, until } from '../helpers/overlay-rig.js';

const BCAST = 'ff:ff:ff:ff:ff:ff';

describe('VXLAN links between two vmlink hosts', { timeout: 30_000 }, () => {
  let a: RigHost;
  let b: RigHost;

  before(async () => {
    const nets = [
      { name: 'lab', vni: 100, mtu: 9000 },
      { name: 'dev', vni: 200, mtu: 9000 },
    ];
    a = await rigHost({ id: 'a', networks: nets, listen: false, vxlan: { host: '127.0.0.1', mtu: 1500 } });
    b = await rigHost({ id: 'b', networks: nets, listen: false, vxlan: { host: '127.0.0.2', mtu: 1500 } });
    a.overlay.add({ name: 'b', connect: { host: '127.0.0.2', port: b.vxlanPort }, transport: 'vxlan' }, 'config');
    b.overlay.add({ name: 'a', connect: { host: '127.0.0.1', port: a.vxlanPort }, transport: 'vxlan' }, 'config');
    await until('both up', () => a.overlay.view('b').state === 'up' && b.overlay.view('a').state === 'up');
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('carries frames of each network with its VNI, both ways', async () => {
    assert.equal(a.overlay.view('b').transport, 'vxlan');
    const f1 = eth(BCAST, '52:54:00:00:0a:01');
    const f2 = eth(BCAST, '52:54:00:00:0a:02', 100, 0x22);
    a.ports.lab?.rx(f1);
    a.ports.dev?.rx(f2);
    await until('both at b', () => (b.ports.lab?.got.length ?? 0) >= 1 && (b.ports.dev?.got.length ?? 0) >= 1);
    assert.deepEqual(b.ports.lab?.got.splice(0), [f1]);
    assert.deepEqual(b.ports.dev?.got.splice(0), [f2]);
    const back = eth('52:54:00:00:0a:01', '52:54:00:00:0b:01');
    b.ports.lab?.rx(back);
    await until('reply at a', () => (a.ports.lab?.got.length ?? 0) >= 1);
    assert.deepEqual(a.ports.lab?.got.splice(0), [back]);
  });

  test('counts a frame larger than the underlay MTU allows instead of losing it silently', async () => {
    const before1 = a.overlay.view('b').drops.too_big;
    // 1500 - 36 = 1464 bytes fit; 1465 do not.
    a.ports.lab?.rx(eth(BCAST, '52:54:00:00:0a:01', 1464 - 14));
    a.ports.lab?.rx(eth(BCAST, '52:54:00:00:0a:01', 1465 - 14));
    await until('the fitting one at b', () => (b.ports.lab?.got.length ?? 0) >= 1);
    assert.equal(b.ports.lab?.got.splice(0)[0]?.length, 1464);
    assert.equal(a.overlay.view('b').drops.too_big, before1 + 1);
  });

  test('drops datagrams from unknown addresses and datagrams that are not VXLAN, and carries on', async () => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.3', r));
    const hdr = Buffer.from('0800000000006400', 'hex');
    s.send(Buffer.concat([hdr, eth(BCAST, '52:54:00:00:0e:01')]), b.vxlanPort, '127.0.0.2');
    await until('stranger counted', () => (b.vxlan?.unknownSource ?? 0) >= 1);
    s.close();
    assert.equal(b.ports.lab?.got.length, 0);
    // From a's address, but without the I flag.
    const s2 = createSocket('udp4');
    await new Promise<void>((r) => s2.bind(0, '127.0.0.1', r));
    s2.send(Buffer.concat([Buffer.alloc(8), eth(BCAST, '52:54:00:00:0e:01')]), b.vxlanPort, '127.0.0.2');
    await until('malformed counted', () => (b.vxlan?.malformed ?? 0) >= 1);
    s2.close();
    const f = eth(BCAST, '52:54:00:00:0a:01', 46, 0x99);
    a.ports.lab?.rx(f);
    await until('still works', () => b.ports.lab?.got.some((g) => g.equals(f)) ?? false);
  });
});
