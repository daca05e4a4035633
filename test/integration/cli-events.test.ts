/**
 * `vmlink events` against the real daemon (child processes): the stream
 * shows a port going up and down and a MAC moving between ports, in the order
 * they happened; Ctrl-C ends it with status 0; a bad type is a usage error.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BIN, broadcastFrame, cliOf, StreamPeer, suiteDaemon } from '../helpers/cli-daemon.js';

interface Ev {
  id?: number;
  type: string;
  [k: string]: unknown;
}

/** `vmlink events --json` as a child: its events as they arrive, and a wait for one. */
function follow(control: string, args: string[] = []) {
  const child: ChildProcess = spawn(process.execPath, [BIN, '--control', control, 'events', '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const events: Ev[] = [];
  const bus = new EventEmitter();
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out += s;
    let nl = out.indexOf('\n');
    while (nl >= 0) {
      events.push(JSON.parse(out.slice(0, nl)) as Ev);
      out = out.slice(nl + 1);
      nl = out.indexOf('\n');
      bus.emit('event');
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    bus.emit('stderr');
  });
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  /** Resolves with the first event matching `p` (within 30 s). */
  const waitFor = (what: string, p: (e: Ev) => boolean): Promise<Ev> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const e = events.find(p);
        if (!e) return;
        done();
        resolve(e);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within 30 s; got ${JSON.stringify(events)}\n${err}`));
      }, 30_000);
      const gone = () => {
        done();
        reject(new Error(`vmlink events exited before ${what}: ${err}`));
      };
      const done = () => {
        clearTimeout(timer);
        bus.off('event', check);
        child.off('exit', gone);
      };
      bus.on('event', check);
      child.on('exit', gone);
      check();
    });
  /** Resolves once the CLI said the stream is open. */
  const opened = async (): Promise<void> => {
    while (!err.includes('following the events')) {
      await Promise.race([once(bus, 'stderr'), exited.then(() => assert.fail(`vmlink events exited: ${err}`))]);
    }
  };
  return { child, events, waitFor, opened, exited, stderr: () => err };
}

describe('vmlink events', () => {
  const d = suiteDaemon();
  const cli = (...a: string[]) => cliOf(d)(...a);

  it('follows a port going up and down and a MAC moving, in order, and exits 0 on Ctrl-C', async () => {
    const f = follow(d.control);
    after(() => f.child.kill('SIGKILL'));
    await f.opened();
    const mac = '02:00:00:00:e0:01';
    const a = await StreamPeer.connect(join(d.dir, 'cfg.sock'));
    after(() => a.close());
    await f.waitFor('cfgport up', (e) => e.type === 'port.up' && e['port'] === 'cfgport');
    a.send(broadcastFrame(mac.replace(/:/g, '')));
    await f.waitFor('learned', (e) => e.type === 'mac.learned' && e['mac'] === mac);
    const sock = join(d.dir, 'ev2.sock');
    const add = await cli('port', 'add', 'ev2', '--kind', 'stream', '--network', 'lab', '--listen', `unix:${sock}`);
    assert.equal(add.code, 0, add.stderr);
    const b = await StreamPeer.connect(sock);
    after(() => b.close());
    await f.waitFor('ev2 up', (e) => e.type === 'port.up' && e['port'] === 'ev2');
    b.send(broadcastFrame(mac.replace(/:/g, '')));
    await f.waitFor('moved', (e) => e.type === 'mac.moved' && e['mac'] === mac);
    a.close();
    await f.waitFor('cfgport down', (e) => e.type === 'port.down' && e['port'] === 'cfgport');

    const want: [string, string, string][] = [
      ['port.up', 'port', 'cfgport'],
      ['mac.learned', 'port', 'cfgport'],
      ['port.added', 'port', 'ev2'],
      ['port.up', 'port', 'ev2'],
      ['mac.moved', 'port', 'ev2'],
      ['port.down', 'port', 'cfgport'],
    ];
    const at = want.map(([type, k, v]) => f.events.findIndex((e) => e.type === type && e[k] === v));
    assert.ok(
      at.every((i) => i >= 0),
      JSON.stringify(f.events),
    );
    assert.deepEqual(
      [...at].sort((x, y) => x - y),
      at,
      `in order: ${JSON.stringify(f.events.map((e) => [e.type, e['port']]))}`,
    );
    const moved = f.events[at[4] as number] as Ev;
    assert.equal(moved['network'], 'lab');
    assert.equal(moved['local'], true);
    const down = f.events[at[5] as number] as Ev;
    assert.equal(typeof down['reason'], 'string');
    const ids = f.events.map((e) => e.id as number);
    assert.deepEqual(
      [...ids].sort((x, y) => x - y),
      ids,
      'ids rise',
    );

    f.child.kill('SIGINT');
    const [code] = await f.exited;
    assert.equal(code, 0, f.stderr());
  });

  it('replays what the daemon holds with --since, filtered by --type', async () => {
    const f = follow(d.control, ['--since', '0', '--type', 'port.added']);
    after(() => f.child.kill('SIGKILL'));
    const e = await f.waitFor('ev2 added', (x) => x.type === 'port.added' && x['port'] === 'ev2');
    assert.equal(e['kind'], 'stream');
    assert.ok(f.events.every((x) => x.type === 'port.added'));
    f.child.kill('SIGINT');
    assert.equal((await f.exited)[0], 0);
  });

  it('prints one line per event for people', async () => {
    const f = spawn(process.execPath, [BIN, '--control', d.control, 'events', '--since', '0', '--type', 'port'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    after(() => f.kill('SIGKILL'));
    let text = '';
    f.stdout.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      f.stdout.on('data', (chunk: string) => {
        text += chunk;
        if (/port\.added\s+port=ev2 /.test(text)) resolve();
      });
      f.on('exit', () => reject(new Error(`vmlink events exited: ${text}`)));
    });
    assert.match(text, /^\d{4}-\d\d-\d\dT[\d:.]+Z clitest port\.added\s+port=ev2 kind=stream network=lab /m);
    f.kill('SIGINT');
    assert.equal((await once(f, 'exit'))[0], 0);
  });

  it('exits 0 when the reader of its output goes away (EPIPE at the next event)', async () => {
    const f = spawn(process.execPath, [BIN, '--control', d.control, 'events', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    after(() => f.kill('SIGKILL'));
    let err = '';
    f.stderr.setEncoding('utf8');
    while (!err.includes('following the events')) err += ((await once(f.stderr, 'data')) as [string])[0];
    f.stdout.destroy(); // the reader is gone
    const exited = once(f, 'exit');
    // An event to print: a peer connects to the config port and leaves.
    const p = await StreamPeer.connect(join(d.dir, 'cfg.sock'));
    p.close();
    assert.equal(((await exited) as [number])[0], 0, err);
  });

  it('refuses an unknown type with exit status 2', async () => {
    const r = await cli('events', '--type', 'ports');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--type "ports" is not an event type/);
  });
});
