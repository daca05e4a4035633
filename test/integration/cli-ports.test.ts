/**
 * Ports through the `vmlink` command against the real daemon
 * (test/helpers/cli-daemon.ts): every kind added, listed, shown, given its
 * QEMU arguments and deleted; trunks; the FDB learned from real frames.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { broadcastFrame, cliOf, freeUdpPorts, runTool, StreamPeer, suiteDaemon } from '../helpers/cli-daemon.js';

describe('vmlink command line against a running daemon', { timeout: 180_000 }, () => {
  const d = suiteDaemon();
  const cli = cliOf(d);

  test('adds a port of each kind, lists and shows them, prints their QEMU arguments, and deletes them', async () => {
    const vmSock = join(d.dir, 'vm-s.sock');
    const [udpLocal, udpRemote] = await freeUdpPorts(2);
    const adds: string[][] = [
      ['ks', '--kind', 'stream', '--network', 'lab', '--listen', `unix:${vmSock}`, '--mac', '52:54:00:aa:00:01'],
      ['kt', '--kind', 'socket', '--network', 'lab', '--connect', 'tcp:127.0.0.1:9', '--max-macs', '4'],
      [
        'kd',
        '--kind',
        'dgram',
        '--network',
        'lab',
        '--local',
        `udp:127.0.0.1:${udpLocal}`,
        '--remote',
        `udp:127.0.0.1:${udpRemote}`,
        '--allowed-mac',
        '52:54:00:aa:00:03',
        '--storm',
        '100/10',
        '--queue-len',
        '64',
      ],
    ];
    for (const a of adds) {
      const r = await cli('port', 'add', ...a);
      assert.equal(r.code, 0, `${a.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`"${a[0]}"`));
    }

    // Read-only commands are independent: run them side by side.
    const [listJson, table, show, showJsonRun, qs, qsJsonRun, qt, qd, qGhost] = await Promise.all([
      cli('port', 'list', '--json'),
      cli('port', 'list'),
      cli('port', 'show', 'kd'),
      cli('port', 'show', 'kd', '--json'),
      cli('qemu-args', 'ks'),
      cli('qemu-args', 'ks', '--json', '--id', 'net0'),
      cli('qemu-args', 'kt'),
      cli('qemu-args', 'kd'),
      cli('qemu-args', 'ghost'),
    ]);
    const list = JSON.parse(listJson.stdout);
    const byName = new Map(list.ports.map((p: { name: string }) => [p.name, p]));
    assert.equal((byName.get('ks') as { kind: string }).kind, 'stream');
    assert.equal((byName.get('kt') as { kind: string }).kind, 'socket');
    const kd = byName.get('kd') as { kind: string; spec: Record<string, unknown>; network: string };
    assert.equal(kd.kind, 'dgram');
    assert.equal(kd.network, 'lab');
    assert.deepEqual(kd.spec['allowed_macs'], ['52:54:00:aa:00:03']);
    assert.deepEqual(kd.spec['storm'], { pps: 100, burst: 10 });

    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^NAME\s+KIND\s+NETWORK\s+STATE\s+RX\s+TX\s+DROPS\s+MACS$/);
    assert.match(lines.find((l) => l.startsWith('ks ')) ?? '', /^ks\s+stream\s+lab\s+listening\s+0\s+0\s+0\s+0$/);

    assert.equal(show.code, 0, show.stderr);
    for (const reason of ['runt', 'mtu', 'mac_locked', 'mac_limit', 'storm', 'queue_full', 'down', 'malformed']) {
      assert.match(show.stdout, new RegExp(`^ {2}${reason}\\s+0$`, 'm'), reason);
    }
    assert.match(show.stdout, new RegExp(`${udpLocal}`), 'transport details name the local address');
    const showJson = JSON.parse(showJsonRun.stdout);
    assert.equal(showJson.port.name, 'kd');
    assert.equal(showJson.port.counters.drops.mac_locked, 0);

    assert.equal(qs.code, 0, qs.stderr);
    assert.match(qs.stdout, /-netdev\s+'?stream,/);
    assert.ok(qs.stdout.includes(vmSock), qs.stdout);
    assert.ok(qs.stdout.includes('52:54:00:aa:00:01'), qs.stdout);
    assert.equal(qs.stdout.trimEnd().split('\n').length, 1, 'one line');
    const qsJson = JSON.parse(qsJsonRun.stdout);
    assert.equal(qsJson.mac, '52:54:00:aa:00:01');
    assert.ok(Array.isArray(qsJson.args));
    assert.ok(
      qsJson.args.some((a: string) => a.includes('id=net0')),
      JSON.stringify(qsJson.args),
    );
    assert.equal(typeof qsJson.command, 'string');

    assert.equal(qt.code, 0, qt.stderr);
    assert.match(qt.stdout, /socket,/);
    assert.match(qt.stdout, /listen=127\.0\.0\.1:9/);

    assert.equal(qd.code, 0, qd.stderr);
    assert.match(qd.stdout, /dgram|socket,udp=/);
    assert.ok(qd.stdout.includes(String(udpLocal)) && qd.stdout.includes(String(udpRemote)), qd.stdout);
    assert.ok(qd.stdout.includes('52:54:00:aa:00:03'), 'the MAC defaults to the first allowed MAC');

    assert.equal(qGhost.code, 1);

    for (const r of await Promise.all(['ks', 'kt', 'kd'].map((n) => cli('port', 'delete', n)))) {
      assert.equal(r.code, 0, r.stderr);
    }
    const after = JSON.parse((await cli('port', 'list', '--json')).stdout);
    assert.deepEqual(
      after.ports.map((p: { name: string }) => p.name).filter((n: string) => ['ks', 'kt', 'kd'].includes(n)),
      [],
    );
  });

  test('adds tap and vde ports, shows their transport, and deletes them (the TAP interface goes away)', async () => {
    const ifname = `vlcli${process.pid % 100000}`;
    const vdeDir = join(d.dir, 'vde1');
    const [tap, vde] = await Promise.all([
      cli('port', 'add', 'kt1', '--kind', 'tap', '--network', 'lab', '--ifname', ifname),
      cli('port', 'add', 'kv1', '--kind', 'vde', '--network', 'lab', '--dir', vdeDir),
    ]);
    assert.equal(tap.code, 0, tap.stderr);
    assert.match(tap.stdout, new RegExp(`port "kt1" added \\(tap, .*ifname ${ifname}\\)`));
    assert.equal(vde.code, 0, vde.stderr);
    assert.ok(vde.stdout.includes(`dir ${vdeDir}`), vde.stdout);
    const [link, show, list] = await Promise.all([
      runTool('ip', ['-o', 'link', 'show', 'dev', ifname]),
      cli('port', 'show', 'kt1'),
      cli('port', 'list'),
    ]);
    assert.equal(link.code, 0, `the TAP ${ifname} exists: ${link.stderr}`);
    assert.match(show.stdout, new RegExp(`^ {2}ifname\\s+${ifname}$`, 'm'));
    assert.match(list.stdout, /^kt1\s+tap\s+lab\s+/m);
    assert.match(list.stdout, /^kv1\s+vde\s+lab\s+/m);
    for (const r of await Promise.all(['kt1', 'kv1'].map((n) => cli('port', 'delete', n)))) {
      assert.equal(r.code, 0, r.stderr);
    }
    assert.notEqual((await runTool('ip', ['-o', 'link', 'show', 'dev', ifname])).code, 0, 'the TAP is gone');
  });

  test('lists a trunk port with its VLAN map and native network', async () => {
    assert.equal((await cli('network', 'create', 'dmz', '--vni', '300')).code, 0);
    const r = await cli(
      'port',
      'add',
      'tr1',
      '--kind',
      'stream',
      '--trunk',
      '10=lab,20=dmz',
      '--native',
      'lab',
      '--connect',
      `unix:${join(d.dir, 'nobody.sock')}`,
    );
    assert.equal(r.code, 0, r.stderr);
    const table = await cli('port', 'list');
    assert.match(table.stdout, /^tr1\s+stream\s+10=lab,20=dmz native=lab\s+/m);
    const p = JSON.parse((await cli('port', 'show', 'tr1', '--json')).stdout).port;
    assert.deepEqual(p.trunk, { vlans: { '10': 'lab', '20': 'dmz' }, native: 'lab' });
    assert.equal((await cli('port', 'delete', 'tr1')).code, 0);
    assert.equal((await cli('network', 'delete', 'dmz')).code, 0);
  });

  test('shows MACs learned from frames sent through stream ports in fdb show', async () => {
    const [pa, pb] = [join(d.dir, 'fa.sock'), join(d.dir, 'fb.sock')];
    assert.equal((await cli('network', 'create', 'fdbnet', '--vni', '400')).code, 0);
    for (const [n, p] of [
      ['fa', pa],
      ['fb', pb],
    ] as const) {
      const r = await cli('port', 'add', n, '--kind', 'stream', '--network', 'fdbnet', '--listen', `unix:${p}`);
      assert.equal(r.code, 0, r.stderr);
    }
    const a = await StreamPeer.connect(pa);
    const b = await StreamPeer.connect(pb);
    try {
      await a.sendUntilReceived(broadcastFrame('525400bb0001'), b);
      assert.deepEqual(b.frames[0], broadcastFrame('525400bb0001'), 'b receives the broadcast unchanged');

      const json = await cli('fdb', 'show', '--network', 'fdbnet', '--json');
      assert.equal(json.code, 0, json.stderr);
      const entries = JSON.parse(json.stdout).entries;
      assert.deepEqual(
        entries.map((e: { network: string; mac: string; port: string }) => [e.network, e.mac, e.port]),
        [['fdbnet', '52:54:00:bb:00:01', 'fa']],
      );

      const table = await cli('fdb', 'show');
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^NETWORK\s+MAC\s+PORT\s+AGE$/m);
      assert.match(table.stdout, /^fdbnet\s+52:54:00:bb:00:01\s+fa\s+\d+s$/m);

      const other = JSON.parse((await cli('fdb', 'show', '--network', 'lab', '--json')).stdout);
      assert.ok(!other.entries.some((e: { mac: string }) => e.mac === '52:54:00:bb:00:01'), 'networks are isolated');

      const list = JSON.parse((await cli('port', 'show', 'fa', '--json')).stdout).port;
      assert.equal(list.state, 'up');
      assert.ok(list.counters.rx_frames >= 1);
      assert.equal(list.macs, 1);
    } finally {
      a.close();
      b.close();
      await cli('port', 'delete', 'fa');
      await cli('port', 'delete', 'fb');
      await cli('network', 'delete', 'fdbnet');
    }
  });
});
