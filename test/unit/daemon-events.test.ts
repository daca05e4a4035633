/**
 * The event sources (daemon/events.ts) with fakes: port changes, MAC events
 * and admission decisions become events as they are told; links, exports
 * and cluster hosts become events from the differences between two looks at
 * their views.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ControlBackend } from '../../src/api/backend.js';
import type { VmlinkEvent } from '../../src/api/events.js';
import { DaemonEvents } from '../../src/daemon/events.js';
import type { PortChange, PortManager } from '../../src/daemon/port-manager.js';
import type { AdmissionDecision, QosService } from '../../src/daemon/qos.js';
import { silentLogger } from '../../src/log.js';
import type { MacEvent } from '../../src/net/switch/mac-events.js';
import type { Switch } from '../../src/net/switch/switch.js';

interface View {
  links: { name: string; state: string; peer?: string; source: string; reason: string; transport: string }[];
  exports: { name: string; state: string; clients: number; reason: string }[];
  hosts: { id: string; state: string; address?: string }[];
}

function rig() {
  let portFn: ((c: PortChange) => void) | undefined;
  let macFn: ((e: MacEvent) => void) | undefined;
  const qos = { onAdmission: undefined } as unknown as QosService;
  const view: View = { links: [], exports: [], hosts: [] };
  const backend = {
    links: () => view.links,
    exports: () => view.exports,
    cluster: async () => ({ mode: view.hosts.length > 0 ? 'member' : 'single', hosts: view.hosts }),
  } as unknown as ControlBackend;
  const ev = new DaemonEvents({
    hostId: 'h1',
    logger: silentLogger(),
    switch: {
      onMacEvent: (fn: (e: MacEvent) => void) => {
        macFn = fn;
        return () => undefined;
      },
    } as unknown as Switch,
    ports: {
      watch: (fn: (c: PortChange) => void) => {
        portFn = fn;
        return () => undefined;
      },
    } as unknown as PortManager,
    qos,
    pollMs: 3_600_000,
  });
  ev.start(backend);
  const got: VmlinkEvent[] = [];
  ev.hub.subscribe((e) => {
    got.push(e);
    return true;
  });
  const types = () => got.splice(0).map((e) => `${e.type}${e['subject'] ? `/${e['subject']}` : ''}`);
  return { ev, view, got, types, port: (c: PortChange) => portFn?.(c), mac: (e: MacEvent) => macFn?.(e), qos };
}

describe('the event sources', () => {
  it('publishes port changes and MAC events as they are told, with their fields', () => {
    const r = rig();
    r.port({ change: 'up', port: 'vm1', kind: 'stream', network: 'lab', state: 'up', reason: 'peer connected' });
    r.mac({ type: 'moved', network: 'lab', mac: '02:00:00:00:00:01', port: 'vm1', local: true });
    const [up, moved] = r.got;
    assert.equal(up?.type, 'port.up');
    assert.equal(up?.['port'], 'vm1');
    assert.equal(up?.['change'], undefined);
    assert.equal(moved?.type, 'mac.moved');
    assert.equal(moved?.['mac'], '02:00:00:00:00:01');
    r.ev.stop();
  });

  it('publishes admission decisions, refused ones with the code and reason', () => {
    const r = rig();
    const tell = (r.qos as unknown as { onAdmission: (d: AdmissionDecision) => void }).onAdmission;
    tell({ accepted: true, kind: 'port', name: 'a', min: 1000 });
    tell({ accepted: false, kind: 'link', name: 'l', capacity: 10, code: 'ERR_QOS_ADMISSION', reason: 'too small' });
    assert.deepEqual(
      r.got.map((e) => [e.type, e['name'], e['code']]),
      [
        ['admission.accepted', 'a', undefined],
        ['admission.refused', 'l', 'ERR_QOS_ADMISSION'],
      ],
    );
    r.ev.stop();
    assert.equal((r.qos as unknown as { onAdmission: unknown }).onAdmission, undefined, 'stop() unhooks');
  });

  it('sees a link come up, a direct link change the path, and links go down or away', async () => {
    const r = rig();
    const link = (name: string, state: string, source = 'config') => ({
      name,
      state,
      peer: name === 'hub' ? 'h0' : 'h2',
      source,
      reason: state,
      transport: 'tcp',
    });
    r.view.links = [link('hub', 'connecting')];
    await r.ev.poll();
    assert.deepEqual(r.types(), []);
    r.view.links = [link('hub', 'up'), link('to-h2', 'up', 'direct')];
    await r.ev.poll();
    assert.deepEqual(r.types(), ['link.up', 'link.up', 'link.path']);
    await r.ev.poll();
    assert.deepEqual(r.types(), [], 'nothing changed, nothing told');
    r.view.links = [link('hub', 'down')];
    await r.ev.poll();
    const last = r.got.slice();
    assert.deepEqual(r.types(), ['link.down', 'link.down', 'link.path']);
    assert.equal(last[2]?.['path'], 'relay');
    assert.equal(last[2]?.['peer'], 'h2');
    r.ev.stop();
  });

  it('sees exports served and removed and their clients come and go', async () => {
    const r = rig();
    r.view.exports = [{ name: 'disk', state: 'up', clients: 0, reason: 'served' }];
    await r.ev.poll();
    assert.deepEqual(r.types(), ['export.open/export']);
    r.view.exports = [{ name: 'disk', state: 'up', clients: 2, reason: 'served' }];
    await r.ev.poll();
    assert.deepEqual(r.types(), ['export.open/client']);
    r.view.exports = [{ name: 'disk', state: 'up', clients: 1, reason: 'served' }];
    await r.ev.poll();
    assert.deepEqual(r.types(), ['export.close/client']);
    r.view.exports = [];
    await r.ev.poll();
    assert.deepEqual(r.types(), ['export.close/export']);
    r.ev.stop();
  });

  it('sees cluster hosts go down and come back, not those first seen down', async () => {
    const r = rig();
    r.view.hosts = [
      { id: 'h1', state: 'up' },
      { id: 'h2', state: 'down' },
    ];
    await r.ev.poll();
    assert.deepEqual(
      r.got.splice(0).map((e) => [e.type, e['member']]),
      [['host.up', 'h1']],
    );
    r.view.hosts = [
      { id: 'h1', state: 'down' },
      { id: 'h2', state: 'up', address: 'tcp:10.0.0.2:7000' },
    ];
    await r.ev.poll();
    assert.deepEqual(
      r.got.map((e) => [e.type, e['member'], e['address']]),
      [
        ['host.down', 'h1', undefined],
        ['host.up', 'h2', 'tcp:10.0.0.2:7000'],
      ],
    );
    r.ev.stop();
  });
});
