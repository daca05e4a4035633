/**
 * The `vmlink` command with no daemon to talk to: help, unreachable control
 * sockets, `vmlink daemon` refusing bad configs and flags, and a daemon
 * stopped by SIGTERM.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { run, startDaemon, stopDaemon } from '../helpers/cli-daemon.js';

describe('vmlink without a daemon', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-cli-nod-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('prints help with exit 0, and exits 2 when no command is given', async () => {
    const [help, sub, none] = await Promise.all([run(['--help']), run(['help', 'port']), run([])]);
    assert.equal(help.code, 0);
    for (const c of ['daemon', 'status', 'network', 'port', 'fdb', 'qemu-args', 'capture', 'export', 'disk-args']) {
      assert.match(help.stdout, new RegExp(`^ {2}${c}\\b`, 'm'), c);
    }
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /add \[options\] <name>/);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage: vmlink/);
  });

  test('reports an unreachable daemon (no socket file) with exit 1 and how to start it', async () => {
    const sock = join(dir, 'missing.sock');
    const r = await run(['--control', sock, 'network', 'list']);
    assert.equal(r.code, 1);
    assert.ok(
      r.stderr.includes(
        `cannot reach the vmlink daemon at ${sock} (ENOENT): is it running? start it with: vmlink daemon --config FILE`,
      ),
      r.stderr,
    );
  });

  test('reports a socket path nobody listens on as ECONNREFUSED with exit 1', async () => {
    const sock = join(dir, 'stale.sock');
    await writeFile(sock, '');
    const r = await run(['--control', sock, 'status']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the vmlink daemon at .*stale\.sock \(ECONNREFUSED\)/);
  });

  test('daemon --config with an invalid file exits 2 and names each bad field', async () => {
    const config = join(dir, 'bad.yaml');
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad.sock')}, state_dir: ${join(dir, 'state')} }`,
        'networks:',
        '  - { name: lab, vni: 0 }',
        'ports:',
        '  - { name: p1, network: lab, kind: stream, listen: "tcp:nohost" }',
        '',
      ].join('\n'),
    );
    const r = await run(['daemon', '--config', config]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /networks\[0\]\.vni/);
    assert.match(r.stderr, /ports\[0\]\.listen/);
    assert.equal(existsSync(join(dir, 'bad.sock')), false);
  });

  test('daemon --config with bad storage and exports sections exits 2 and names each bad field', async () => {
    const config = join(dir, 'bad-storage.yaml');
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad2.sock')}, state_dir: ${join(dir, 'state2')} }`,
        'storage: { listen: ["udp:127.0.0.1:1"], max_in_flight_per_client: 0 }',
        'exports:',
        '  - { name: d1, backend: { type: file, path: rel.img, size: 1X } }',
        '  - { name: d1, backend: { type: memory, size: 1M }, read_only: yes, allowed_clients: [nowhere] }',
        '  - { name: c, backend: { type: cow, base: { type: remote }, overlay: { type: memory, size: 1M } } }',
        '',
      ].join('\n'),
    );
    const r = await run(['daemon', '--config', config]);
    assert.equal(r.code, 2, r.stderr);
    for (const field of [
      'storage.listen[0]',
      'storage.max_in_flight_per_client',
      'exports[0].backend.path',
      'exports[0].backend.size',
      'exports[1].read_only',
      'exports[1].allowed_clients[0]',
      'exports[2].backend.base.address',
    ]) {
      assert.ok(r.stderr.includes(`  ${field}: `), `${field} in:\n${r.stderr}`);
    }
    assert.match(r.stderr, /"1X" is not a size/);
    assert.match(r.stderr, /max_in_flight_per_client must be a whole number 1-4096/);
    assert.equal(existsSync(join(dir, 'bad2.sock')), false);
    // Cross-entry checks run once every entry is valid on its own.
    await writeFile(
      config,
      [
        `host: { id: bad, control: ${join(dir, 'bad2.sock')}, state_dir: ${join(dir, 'state2')} }`,
        'exports:',
        '  - { name: d1, backend: { type: memory, size: 1M } }',
        '  - { name: d1, backend: { type: memory, size: 2M } }',
        '',
      ].join('\n'),
    );
    const dup = await run(['daemon', '--config', config]);
    assert.equal(dup.code, 2, dup.stderr);
    assert.match(dup.stderr, /exports\[1\]\.name: duplicate export name "d1"/);
  });

  test('daemon with a config file that does not exist exits 2 and names the file', async () => {
    const r = await run(['daemon', '--config', join(dir, 'nope.yaml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /nope\.yaml/);
  });

  test('daemon --log-level with an unknown level exits 2', async () => {
    const r = await run(['daemon', '--config', join(dir, 'x.yaml'), '--log-level', 'loud']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--log-level "loud"/);
  });

  test('a SIGTERM stops the daemon with exit 0 and removes its control socket', async () => {
    const d = await startDaemon();
    try {
      const ok = await run(['--control', d.control, 'status']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(await stopDaemon(d), 0, d.stderr());
      assert.equal(existsSync(d.control), false);
    } finally {
      await stopDaemon(d);
      await rm(d.dir, { recursive: true, force: true });
    }
  });
});
