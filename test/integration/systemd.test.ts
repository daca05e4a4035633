/**
 * `vmlink daemon` as systemd runs a `Type=notify` unit (packaging/vmlink.service):
 * the test holds the manager's end of sd_notify (test/helpers/notify-socket.ts)
 * and starts the daemon as a child with `NOTIFY_SOCKET`, then sends it the
 * signals systemctl would (`reload`: SIGHUP, `stop`: SIGTERM). systemd itself
 * is not PID 1 on the test machines, so `systemd-run` cannot start the daemon;
 * the unit file is checked with `systemd-analyze verify` in service.test.ts.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/api/client.js';
import { BIN } from '../helpers/cli-daemon.js';
import { type Notification, NotifySocket } from '../helpers/notify-socket.js';

/** How many listening ports the config declares: enough that they take a while to open. */
const PORTS = 24;

interface Run {
  dir: string;
  config: string;
  control: string;
  notify: NotifySocket;
  child: ChildProcess;
  stderr: () => string;
  client: ControlClient;
}

const sock = (dir: string, name: string): string => join(dir, `${name}.sock`);

/** The config: network `lab` and a stream port listening on `<dir>/<name>.sock` for each name. */
function configText(dir: string, control: string, names: readonly string[]): string {
  return [
    `host: { id: sdtest, control: ${control}, state_dir: ${join(dir, 'state')} }`,
    'networks:',
    '  - { name: lab, vni: 100, mtu: 1500 }',
    'ports:',
    ...names.map((n) => `  - { name: ${n}, network: lab, kind: stream, listen: "unix:${sock(dir, n)}" }`),
    '',
  ].join('\n');
}

/** Starts the daemon with NOTIFY_SOCKET (and `env`); `onMessage` sees each notification as it arrives. */
async function start(
  names: readonly string[],
  env: NodeJS.ProcessEnv = {},
  onMessage?: (m: Notification, r: Run) => void,
  prepare?: (dir: string) => Promise<void>,
): Promise<Run> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-sd-'));
  const control = join(dir, 'ctl.sock');
  const config = join(dir, 'vmlink.yaml');
  await writeFile(config, configText(dir, control, names));
  await prepare?.(dir);
  const notify = await NotifySocket.open();
  const r = { dir, config, control, notify, client: new ControlClient({ socketPath: control }) } as Run;
  if (onMessage) notify.onMessage = (m) => onMessage(m, r);
  const child = spawn(process.execPath, [BIN, 'daemon', '--config', config, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NOTIFY_SOCKET: notify.path, ...env },
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  r.child = child;
  r.stderr = () => err;
  return r;
}

async function stop(r: Run | undefined): Promise<void> {
  if (!r) return;
  if (r.child.exitCode === null && r.child.signalCode === null) {
    const exited = once(r.child, 'exit');
    r.child.kill('SIGKILL');
    await exited;
  }
  await r.notify.close();
  await rm(r.dir, { recursive: true, force: true });
}

/** Resolves when a unix stream socket at `path` accepts a connection. */
function connects(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(path, () => {
      s.destroy();
      resolve();
    });
    s.on('error', reject);
  });
}

const portNames = (n: number, prefix = 'p'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('vmlink daemon under a service manager (sd_notify)', { timeout: 180_000 }, () => {
  test('sends READY=1 only once the control socket and every configured port are up, then STOPPING=1 at SIGTERM', async () => {
    const names = portNames(PORTS);
    // Checked the moment READY=1 arrives, before the daemon can do anything more.
    let atReady: { missing: string[] } | undefined;
    const r = await start(names, {}, (m, run) => {
      if (m.fields.get('READY') !== '1' || atReady) return;
      atReady = { missing: [run.control, ...names.map((n) => sock(run.dir, n))].filter((p) => !existsSync(p)) };
    });
    try {
      const ready = await r.notify.next('READY', { value: '1' });
      assert.deepEqual(atReady?.missing, [], 'every socket exists when READY=1 arrives');
      // A STATUS line saying it is starting came first; READY=1 came once.
      assert.match(r.notify.messages[0]?.fields.get('STATUS') ?? '', /^starting: 24 configured ports/);
      assert.equal(r.notify.messages.filter((m) => m.fields.get('READY') === '1').length, 1);
      assert.match(
        ready.fields.get('STATUS') ?? '',
        new RegExp(`^ready; control ${r.control}; 24 ports: 24 listening`),
      );
      // Each answers at once: no retry needed.
      await connects(r.control);
      for (const n of names) await connects(sock(r.dir, n));
      const ports = await r.client.listPorts();
      assert.deepEqual(ports.map((p) => p.name).sort(), [...names].sort());
      for (const p of ports) assert.ok(['listening', 'up'].includes(p.state), `${p.name} is ${p.state}`);

      const exited = once(r.child, 'exit');
      r.child.kill('SIGTERM');
      const stopping = await r.notify.next('STOPPING', { value: '1', from: r.notify.indexOf(ready) });
      assert.equal(stopping.fields.get('STATUS'), 'stopping (SIGTERM)');
      const [code] = await exited;
      assert.equal(code, 0, r.stderr());
    } finally {
      await stop(r);
    }
  });

  describe('SIGHUP (systemctl reload)', () => {
    let r: Run;
    before(async () => {
      r = await start(['keep', 'gone']);
      await r.notify.next('READY', { value: '1' });
    });
    after(() => stop(r));

    test('with a changed config adds and removes ports between RELOADING=1 and READY=1', async () => {
      const from = r.notify.messages.length;
      await writeFile(r.config, configText(r.dir, r.control, ['keep', 'new1', 'new2']));
      r.child.kill('SIGHUP');
      const reloading = await r.notify.next('RELOADING', { value: '1', from });
      // MONOTONIC_USEC is CLOCK_MONOTONIC in µs, as systemd reads it: the same clock as process.hrtime here.
      const usec = BigInt(reloading.fields.get('MONOTONIC_USEC') ?? 'x');
      assert.ok(usec > 0n && usec <= process.hrtime.bigint() / 1000n);
      const ready = await r.notify.next('READY', { value: '1', from: r.notify.indexOf(reloading) });
      assert.match(ready.fields.get('STATUS') ?? '', /3 ports: 3 listening; reloaded: 2 created, 1 removed, 0 failed$/);
      const ports = await r.client.listPorts();
      assert.deepEqual(ports.map((p) => p.name).sort(), ['keep', 'new1', 'new2']);
      for (const n of ['keep', 'new1', 'new2']) await connects(sock(r.dir, n));
      assert.equal(existsSync(sock(r.dir, 'gone')), false, 'the removed port closed its socket');
    });

    test('with a broken config keeps the running ports, says why in STATUS and logs it', async () => {
      const from = r.notify.messages.length;
      await writeFile(r.config, `${configText(r.dir, r.control, ['keep'])}  - { name: bad, network: nowhere }\n`);
      r.child.kill('SIGHUP');
      const reloading = await r.notify.next('RELOADING', { value: '1', from });
      const ready = await r.notify.next('READY', { value: '1', from: r.notify.indexOf(reloading) });
      assert.match(ready.fields.get('STATUS') ?? '', /3 ports: 3 listening; reload refused, previous config kept: /);
      const ports = await r.client.listPorts();
      assert.deepEqual(ports.map((p) => p.name).sort(), ['keep', 'new1', 'new2']);
      for (const n of ['keep', 'new1', 'new2']) await connects(sock(r.dir, n));
      // The log line says the reload was refused and names the bad field.
      const line = r
        .stderr()
        .split('\n')
        .find((l) => l.includes('reload refused'));
      assert.ok(line, r.stderr());
      assert.match(line, /ports\[1\]/);
      assert.equal(r.child.exitCode, null, 'the daemon runs on');
    });
  });

  test('says why in STATUS when it cannot start, sends no READY=1, and exits 1', async () => {
    // The state directory is a file: the state store cannot open, the daemon cannot start.
    const r = await start(['x'], {}, undefined, (dir) => writeFile(join(dir, 'state'), 'not a directory'));
    try {
      const [code] = await once(r.child, 'exit');
      assert.equal(code, 1, r.stderr());
      const last = r.notify.messages.at(-1);
      assert.match(last?.fields.get('STATUS') ?? '', /^cannot start: /, r.notify.dump());
      assert.equal(
        r.notify.messages.some((m) => m.fields.has('READY')),
        false,
      );
    } finally {
      await stop(r);
    }
  });

  test('sends WATCHDOG=1 keep-alives at half of WATCHDOG_USEC when systemd asks for them', async () => {
    const r = await start(['w'], { WATCHDOG_USEC: '200000' });
    try {
      const ready = await r.notify.next('READY', { value: '1' });
      const first = await r.notify.next('WATCHDOG', { value: '1', from: r.notify.indexOf(ready) });
      await r.notify.next('WATCHDOG', { value: '1', from: r.notify.indexOf(first) + 1 });
    } finally {
      await stop(r);
    }
  });
});
