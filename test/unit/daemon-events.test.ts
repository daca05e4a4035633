/**
 * The event sources (daemon/events.ts) with fakes: port changes, MAC events,
 * admission decisions, link states and export changes become events as they
 * are told; cluster hosts from the differences between two looks at their view.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ControlBackend } from '../../src/api/backend.js';
import type { VmlinkEvent } from '../../src/api/events.js';
import { DaemonEvents } from '../../src/daemon/events.js';
import type { PortChange, PortManager } from '../../src/daemon/port-manager.js';
import type { AdmissionDecision, QosService } from '../../src/daemon/qos.js';
import { silentLogger } from '../../src/log.js';
import type { LinkStateChange, LinkView } from '../../src/net/overlay/overlay.js';
import type { MacEvent } from '../../src/net/switch/mac-events.js';
import type { Switch } from '../../src/net/switch/switch.js';
import type { ExportChange } from '../../src/storage/exports.js';

interface View {
  hosts: { id: string; state: string; address?: string }[];
}

function rig() {
  let portFn: ((c: PortChange) => void) | undefined;
  let macFn: ((e: MacEvent) => void) | undefined;
  const qos = { onAdmission: undefined } as unknown as QosService;
  let linkFn: ((c: LinkStateChange) => void) | undefined;
  let exportFn: ((c: ExportChange) => void) | undefined;
  const view: View = { hosts: [] };
  const backend = {
    links: () => assert.fail('links are told, not polled'),
    exports: () => assert.fail('exports are told, not polled'),
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
    overlay: {
      onLinkState: (fn: (c: LinkStateChange) => void) => {
        linkFn = fn;
        return () => {
          linkFn = undefined;
        };
      },
    },
    storage: {
      onExportChange: (fn: (c: ExportChange) => void) => {
        exportFn = fn;
        return () => {
          exportFn = undefined;
        };
      },
    },
    pollMs: 3_600_000,
  });
  ev.start(backend);
  const got: VmlinkEvent[] = [];
  ev.hub.subscribe((e) => {
    got.push(e);
    return true;
  });
  const types = () => got.splice(0).map((e) => `${e.type}${e['subject'] ? `/${e['subject']}` : ''}`);
  return {
    ev,
    view,
    got,
    types,
    port: (c: PortChange) => portFn?.(c),
    mac: (e: MacEvent) => macFn?.(e),
    link: (c: LinkStateChange) => linkFn?.(c),
    exp: (c: ExportChange) => exportFn?.(c),
    hooked: () => linkFn !== undefined && exportFn !== undefined,
    qos,
  };
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

  it('publishes a link going down and up again at once, each change once, and the path of a direct link', async () => {
    const r = rig();
    const link = (name: string, up: boolean, state: string, source = 'config'): LinkStateChange => ({
      up,
      link: {
        name,
        state,
        peer: name === 'hub' ? 'h0' : 'h2',
        source,
        reason: state,
        transport: 'tcp',
        path: 'direct',
        address: 'tcp:10.0.0.2:7000',
      } as LinkView,
    });
    r.link(link('hub', true, 'up'));
    r.link(link('hub', true, 'up'));
    r.link(link('to-h2', true, 'up', 'direct'));
    assert.deepEqual(r.types(), ['link.up', 'link.up', 'link.path'], 'an up told twice is published once');
    r.link(link('hub', false, 'down'));
    r.link(link('hub', false, 'down'));
    r.link(link('hub', true, 'up'));
    r.link(link('to-h2', false, 'closed', 'direct'));
    const last = r.got.slice();
    assert.deepEqual(r.types(), ['link.down', 'link.up', 'link.down', 'link.path']);
    assert.deepEqual([last[0]?.['link'], last[0]?.['peer'], last[0]?.['state']], ['hub', 'h0', 'down']);
    assert.equal(last[3]?.['path'], 'relay');
    assert.equal(last[3]?.['peer'], 'h2');
    r.link(link('never-up', false, 'down'));
    await r.ev.poll();
    assert.deepEqual(r.types(), [], 'a link never told up is not told down; the poll tells nothing of links');
    r.ev.stop();
    assert.equal(r.hooked(), false, 'stop() unhooks');
  });

  it('publishes exports served and removed and each client coming and going, with their fields', () => {
    const r = rig();
    r.exp({ export: 'disk', subject: 'export', open: true, clients: 0, reason: 'served' });
    r.exp({ export: 'disk', subject: 'client', open: true, clients: 1 });
    r.exp({ export: 'disk', subject: 'client', open: false, clients: 0 });
    r.exp({ export: 'disk', subject: 'export', open: false, clients: 0, reason: 'the export was removed' });
    const got = r.got.slice();
    assert.deepEqual(r.types(), [
      'export.open/export',
      'export.open/client',
      'export.close/client',
      'export.close/export',
    ]);
    assert.deepEqual(
      got.map((e) => [e['export'], e['clients'], e['reason'], e['open']]),
      [
        ['disk', 0, 'served', undefined],
        ['disk', 1, undefined, undefined],
        ['disk', 0, undefined, undefined],
        ['disk', 0, 'the export was removed', undefined],
      ],
    );
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
