/**
 * The daemon's life cycle: what the API stored comes back after a restart,
 * config ports that cannot open, a second daemon on the same control socket,
 * a stale or corrupt state, and the daemon entry point in a child process
 * (exit codes, graceful and forced stops on SIGTERM).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ControlClient } from '../../src/api/client.js';
import { validateConfig } from '../../src/config/load.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { hasCode } from '../../src/errors.js';
import {
  BCAST_FROM_A,
  framed,
  hostConfig,
  recordingLogger,
  startDaemon,
  stopDaemon,
  tempDirs,
} from '../helpers/api-daemon.js';

const dirFor = await tempDirs('vmlink-api-');
const runModule = new URL('../../src/daemon/run.js', import.meta.url).pathname;

describe('daemon life cycle', () => {
  test('brings networks and ports added through the API back after a restart, listening again', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    const path = join(dir, 'p.sock');
    let r = await startDaemon(doc, dir);
    await r.client.createNetwork({ name: 'net1', vni: 100, mtu: 9000 });
    await r.client.addPort({ name: 'p', kind: 'stream', network: 'net1', listen: `unix:${path}` });
    await stopDaemon(r);
    await assert.rejects(stat(r.control), { code: 'ENOENT' }, 'the control socket is removed on stop');

    r = await startDaemon(doc, dir);
    assert.deepEqual(await r.client.listNetworks(), [
      { name: 'net1', vni: 100, mtu: 9000, ports: ['p'], macs: 0, source: 'api' },
    ]);
    const p = await r.client.getPort('p');
    assert.equal(p.source, 'api');
    assert.equal(p.state, 'listening');
    const peer = connect(path);
    await once(peer, 'connect');
    await r.log.waitFor((l) => l['port'] === 'p' && l['state'] === 'up');
    peer.destroy();
    await r.client.deletePort('p');
    await r.client.deleteNetwork('net1');
    await stopDaemon(r);

    r = await startDaemon(doc, dir);
    assert.deepEqual(await r.client.listNetworks(), []);
    assert.deepEqual(await r.client.listPorts(), []);
    await stopDaemon(r);
  });

  test('shows a config port that cannot open as down with the reason, and keeps running', async () => {
    const busy = createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const port = (busy.address() as { port: number }).port;
    const dir = dirFor();
    const r = await startDaemon(
      hostConfig(dir, {
        networks: [{ name: 'lan', vni: 1 }],
        ports: [{ name: 'stuck', kind: 'stream', network: 'lan', listen: `tcp:127.0.0.1:${port}` }],
      }),
      dir,
    );
    try {
      const p = await r.client.getPort('stuck');
      assert.equal(p.state, 'down');
      assert.match((p as unknown as { reason: string }).reason, /cannot open/);
      assert.ok(r.log.lines.some((l) => l['level'] === 50 && String(l['msg']).includes('stuck')));
    } finally {
      await stopDaemon(r);
      busy.close();
    }
  });

  test('refuses to start while another daemon answers on the control socket, and replaces a stale one', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    const r = await startDaemon(doc, dir);
    const second = new Daemon({ config: validateConfig(doc), logger: recordingLogger().logger });
    await assert.rejects(second.start(), (err) => hasCode(err, 'ERR_CONTROL_IN_USE'));
    assert.equal((await r.client.status()).host.pid, process.pid, 'the first daemon still answers');
    await stopDaemon(r);

    // A process killed without cleanup leaves its socket file behind.
    const control = join(dir, 'run', 'vmlink.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(control)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await once(child, 'exit');
    assert.ok((await stat(control)).isSocket());
    const r2 = await startDaemon(doc, dir);
    assert.equal((await r2.client.status()).host.id, 'h1');
    await stopDaemon(r2);
  });

  test('skips stored items that no longer fit, logs why, and keeps them in the store', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir, { networks: [{ name: 'lan', vni: 1 }] });
    const stored = {
      version: 1,
      networks: [
        { name: 'lan', vni: 2 },
        { name: 'ok', vni: 3 },
      ],
      ports: [
        { name: 'orphan', kind: 'stream', network: 'gone', listen: `unix:${join(dir, 'o.sock')}` },
        { name: 'invalid', kind: 'stream', network: 'ok' },
      ],
    };
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'state.json'), JSON.stringify(stored));
    const r = await startDaemon(doc, dir);
    try {
      assert.deepEqual(
        (await r.client.listNetworks()).map((n) => [n.name, n.vni, n.source]),
        [
          ['lan', 1, 'config'],
          ['ok', 3, 'api'],
        ],
      );
      assert.deepEqual(await r.client.listPorts(), []);
      const errors = r.log.lines.filter((l) => l['level'] === 50).map((l) => String(l['msg']));
      assert.equal(errors.length, 3, errors.join('\n'));
      assert.match(errors[0] ?? '', /network "lan" from the state store was not restored: .*declared in the config/);
      assert.match(errors[1] ?? '', /port "orphan" .*network "gone" does not exist/);
      assert.match(errors[2] ?? '', /port "invalid" .*listen: give exactly one of listen or connect/s);
    } finally {
      await stopDaemon(r);
    }
    const after = JSON.parse(await readFile(join(dir, 'state', 'state.json'), 'utf8'));
    assert.deepEqual(after, stored);
  });

  test('refuses to start on a corrupt state file, naming the file', async () => {
    const dir = dirFor();
    const doc = hostConfig(dir);
    await stopDaemon(await startDaemon(doc, dir));
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'state.json'), 'not json');
    const d = new Daemon({ config: validateConfig(doc), logger: recordingLogger().logger });
    await assert.rejects(
      d.start(),
      (err: Error) => hasCode(err, 'ERR_STATE_CORRUPT') && err.message.includes('state.json'),
    );
    await assert.rejects(stat(join(dir, 'run', 'vmlink.sock')), { code: 'ENOENT' });
  });
});

describe('runDaemon', () => {
  /** Runs the daemon entry point in a child process. */
  function child(configPath: string): { proc: ReturnType<typeof spawn>; stderr: () => string } {
    const proc = spawn(process.execPath, [
      '-e',
      `import(${JSON.stringify(runModule)}).then((m) => m.runDaemon({ configPath: ${JSON.stringify(configPath)} })).then((c) => process.exit(c))`,
    ]);
    let err = '';
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (c: string) => {
      err += c;
    });
    return { proc, stderr: () => err };
  }

  test('exits 2 on an invalid config, naming every bad field', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      'host:\n  id: h1\n  aging_sec: 0\nnetworks:\n  - name: lan\n    vni: 99999999\nports:\n  - name: p\n    kind: stream\n    network: lan\n    listen: nowhere\n',
    );
    const c = child(file);
    const [code] = await once(c.proc, 'exit');
    assert.equal(code, 2);
    const text = c.stderr();
    assert.match(text, new RegExp(file));
    for (const field of ['host.aging_sec', 'networks[0].vni', 'ports[0].listen'])
      assert.ok(text.includes(field), `${field} in ${text}`);
  });

  test('exits 0 on SIGTERM after a graceful stop that removes the control socket', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const control = join(dir, 'run', 'vmlink.sock');
    const file = join(dir, 'ok.yaml');
    await writeFile(file, `host:\n  id: h9\n  control: ${control}\n  state_dir: ${join(dir, 'state')}\n`);
    const c = child(file);
    const exited = once(c.proc, 'exit');
    // The daemon logs one JSON line once it serves.
    await new Promise<void>((resolve) => {
      const on = (): void => {
        if (c.stderr().includes('vmlink daemon started')) {
          c.proc.stderr?.off('data', on);
          resolve();
        }
      };
      c.proc.stderr?.on('data', on);
    });
    const client = new ControlClient({ socketPath: control });
    assert.equal((await client.status()).host.id, 'h9');
    await client.close();
    c.proc.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0);
    await assert.rejects(stat(control), { code: 'ENOENT' });
    assert.match(c.stderr(), /vmlink daemon stopped/);
  });

  test('exits 1 at once on a second SIGTERM while the graceful stop waits for a peer', async () => {
    const dir = dirFor();
    await mkdir(dir, { recursive: true });
    const control = join(dir, 'run', 'vmlink.sock');
    const file = join(dir, 'slow.yaml');
    await writeFile(
      file,
      [
        'host:',
        '  id: h8',
        `  control: ${control}`,
        `  state_dir: ${join(dir, 'state')}`,
        'networks: [{ name: lan, vni: 1, mtu: 9000 }]',
        'ports:',
        `  - { name: a, kind: stream, network: lan, listen: "unix:${join(dir, 'a.sock')}" }`,
        `  - { name: b, kind: stream, network: lan, listen: "unix:${join(dir, 'b.sock')}" }`,
        '',
      ].join('\n'),
    );
    const c = child(file);
    const exited = once(c.proc, 'exit');
    const stderrHas = (text: string): Promise<void> =>
      new Promise((resolve) => {
        const on = (): void => {
          if (!c.stderr().includes(text)) return;
          c.proc.stderr?.off('data', on);
          resolve();
        };
        c.proc.stderr?.on('data', on);
        on();
      });
    await stderrHas('vmlink daemon started');
    // b's peer never reads: its egress queue fills, and close() waits to flush it.
    const b = connect(join(dir, 'b.sock'));
    await once(b, 'connect');
    b.pause();
    const a = connect(join(dir, 'a.sock'));
    await once(a, 'connect');
    const client = new ControlClient({ socketPath: control });
    while ((await client.getPort('b')).state !== 'up') await new Promise(setImmediate);
    const frame = Buffer.alloc(9014, 0x11);
    BCAST_FROM_A.copy(frame, 0, 0, 14);
    while ((await client.getPort('b')).counters.drops.queue_full === 0) {
      for (let i = 0; i < 200; i++) a.write(framed(frame));
      if (a.writableNeedDrain) await once(a, 'drain');
      else await new Promise(setImmediate);
    }
    await client.close();
    c.proc.kill('SIGTERM');
    await stderrHas('SIGTERM received: stopping');
    c.proc.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 1);
    assert.match(c.stderr(), /exiting at once/);
    a.destroy();
    b.destroy();
  });
});
