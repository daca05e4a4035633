/**
 * Messages and defaults a newcomer meets first, through the real `vmlink`
 * command and daemon: where the daemon is, a capture that waits, a capture
 * file that cannot be written, usage errors and their exit status, rates,
 * unknown config fields, the link QoS answers, and the NBD socket default.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { runCli, startDaemon, type TestDaemon, VMLINK_BIN } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { REPO_ROOT } from '../helpers/vm.js';

describe('messages that need no daemon', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-msg-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('an unreachable daemon: the message says how to name another control socket (--control, VMLINK_CONTROL)', async () => {
    const sock = join(dir, 'nobody.sock');
    const r = await runCli(['status'], { control: sock });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach the vmlink daemon at ${sock} \\(ENOENT\\)`));
    assert.match(r.stderr, /--control PATH/);
    assert.match(r.stderr, /VMLINK_CONTROL=PATH/);
  });

  test('host cert with a bad host id is a usage error: exit 2, the id named, nothing written', async () => {
    const out = join(dir, 'certs');
    const r = await runCli(['host', 'cert', 'bad id', '--ca-dir', join(dir, 'ca'), '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /error: "bad id" is not a host id/);
    assert.match(r.stderr, /see: vmlink host cert --help/);
    assert.equal(existsSync(out), false);
  });

  test('qos request --min 200 says it is 200 bit/s, below the 8kbit minimum, and suggests a unit', async () => {
    const r = await runCli(['qos', 'request', 'vm1', '--min', '200'], { control: join(dir, 'nobody.sock') });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--min "200" is not a rate from 8kbit to 1tbit: it is 200 bit\/s, below the 8kbit minimum/);
    assert.match(r.stderr, /did you mean 200mbit\?/);
    const word = await runCli(['qos', 'request', 'vm1', '--max', 'fast'], { control: join(dir, 'nobody.sock') });
    assert.equal(word.code, 2);
    assert.match(word.stderr, /--max "fast" is not a rate .*write bits per second as a number, or with a unit/);
  });

  test('an unknown config field points to a section of docs/daemon.md that exists', async () => {
    const config = join(dir, 'typo.yaml');
    await writeFile(
      config,
      stringify({
        host: { id: 't', control: join(dir, 't.sock'), state_dir: join(dir, 'state') },
        networks: [{ name: 'lab', vni: 100 }],
        ports: [{ name: 'vm1', network: 'lab', kind: 'stream', lisen: `unix:${dir}/vm1.sock` }],
      }),
    );
    const r = await runCli(['daemon', '--config', config]);
    assert.equal(r.code, 2, r.stderr);
    const m =
      /ports\[0\]: unknown field "lisen" \(check the spelling; the fields are in (\S+) "([^"]+)", section (\w+)\)/.exec(
        r.stderr,
      );
    assert.ok(m, r.stderr);
    const doc = await readFile(join(REPO_ROOT, m[1] as string), 'utf8');
    assert.match(doc, new RegExp(`^## ${m[2]}$`, 'm'));
    assert.match(doc, new RegExp(`^### \`${m[3]}\``, 'm'));
  });
});

/** `vmlink capture` run in the background, its stderr watched as it comes. */
function startCapture(
  args: string[],
  control: string,
): { child: ChildProcess; stderr: () => string; said: (re: RegExp) => Promise<void> } {
  const child = spawn(process.execPath, [VMLINK_BIN, '--control', control, 'capture', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const waiters = new Set<() => void>();
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    err += s;
    for (const w of waiters) w();
  });
  child.stdout?.resume();
  const said = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (re.test(err)) {
          waiters.delete(check);
          resolve();
        } else if (child.exitCode !== null) {
          waiters.delete(check);
          reject(new Error(`capture exited (${child.exitCode}) without saying ${re}:\n${err}`));
        }
      };
      waiters.add(check);
      child.once('exit', check);
      check();
    });
  return { child, stderr: () => err, said };
}

describe('messages and defaults with a daemon', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await startDaemon({
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [{ name: 'vm1', network: 'lab', kind: 'stream', listen: `unix:${dir}/vm1.sock` }],
      extra: () => ({
        overlay: { plain: true },
        links: [{ name: 'nowhere', connect: 'tcp:127.0.0.1:1' }],
        exports: [{ name: 'scratch', backend: { type: 'memory', size: '1M' } }],
      }),
    });
  });
  after(async () => {
    await d?.cleanup();
  });

  test('capture on a port with no peer says at once, on stderr, that it is waiting; Ctrl-C ends it with a valid file', async () => {
    const file = d.path('idle.pcap');
    const cap = startCapture(['vm1', '-w', file, '-c', '100'], d.control);
    await cap.said(/port "vm1" is listening: no peer is connected.*waiting for them \(Ctrl-C stops\)/);
    const exited = new Promise<number | null>((r) => cap.child.once('exit', r));
    // The notice comes before the capture is attached; stop once the daemon logged the start.
    await untilAsync('capture started', async () => /capture started/.test(d.log));
    cap.child.kill('SIGINT');
    assert.equal(await exited, 0, cap.stderr());
    assert.match(cap.stderr(), /0 frames captured to /);
    assert.equal((await stat(file)).size, 24); // the pcap header alone
  });

  test('a capture file that cannot be written is refused before the capture, in words, exit 1', async () => {
    const file = d.path('no-such-dir/x.pcap');
    const r = await d.cli(['capture', 'vm1', '-w', file, '-c', '1']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `error: cannot write the capture to ${file}: the directory ${d.path('no-such-dir')} does not exist \\(ENOENT\\); create it`,
      ),
    );
    assert.doesNotMatch(r.stderr, /no such file or directory, open/);
    const dirAsFile = await d.cli(['capture', 'vm1', '-w', d.dir, '-c', '1']);
    assert.equal(dirAsFile.code, 1);
    assert.match(dirAsFile.stderr, /it is a directory \(EISDIR\)/);
  });

  test('link qos --none on an unshaped link says nothing changed; on a shaped one, what was removed', async () => {
    const none = await d.cli(['link', 'qos', 'nowhere', '--none']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, 'link "nowhere" was not shaped; nothing changed\n');
    const set = await d.cli(['link', 'qos', 'nowhere', '--capacity', '100mbit']);
    assert.equal(set.code, 0, set.stderr);
    const off = await d.cli(['link', 'qos', 'nowhere', '--none']);
    assert.equal(off.code, 0, off.stderr);
    assert.equal(off.stdout, 'link "nowhere" is no longer shaped (it was 100mbit)\n');
  });

  test('port add --listen in a missing directory creates it (as for host.control), mode 0755', async () => {
    const sock = d.path('made/here/z.sock');
    const r = await d.cli(['port', 'add', 'z', '--kind', 'stream', '--network', 'lab', '--listen', `unix:${sock}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await stat(d.path('made/here'))).mode & 0o777, 0o755);
    assert.ok((await stat(sock)).isSocket());
    assert.equal((await d.cli(['port', 'delete', 'z'])).code, 0);
  });

  test('without storage.listen the NBD socket sits beside the control socket', async () => {
    const s = await d.json<{ storage: { listen: string[] } }>(['status']);
    assert.deepEqual(s.storage.listen, [`unix:${d.path('nbd.sock')}`]);
  });
});

describe('two daemons with control sockets in one directory', { timeout: 120_000 }, () => {
  let dir: string;
  const procs: ChildProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-two-'));
    for (const id of ['a', 'b']) {
      await mkdir(join(dir, `state-${id}`));
      const config = join(dir, `${id}.yaml`);
      await writeFile(
        config,
        stringify({
          host: { id, control: join(dir, `${id}.sock`), state_dir: join(dir, `state-${id}`) },
          exports: [{ name: 'scratch', backend: { type: 'memory', size: '1M' } }],
        }),
      );
      procs.push(spawn(process.execPath, [VMLINK_BIN, 'daemon', '--config', config], { stdio: 'ignore' }));
      await untilAsync(
        `daemon ${id} answers`,
        async () => (await runCli(['status'], { control: join(dir, `${id}.sock`) })).code === 0,
      );
    }
  });
  after(async () => {
    await Promise.all(
      procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r).kill('SIGTERM')) : undefined)),
    );
    await rm(dir, { recursive: true, force: true });
  });

  test('each serves NBD on its own default socket, named after its control socket', async () => {
    for (const id of ['a', 'b']) {
      const r = await runCli(['status', '--json'], { control: join(dir, `${id}.sock`) });
      const s = JSON.parse(r.stdout) as { storage: { running: boolean; listen: string[] } };
      assert.equal(s.storage.running, true, r.stdout);
      assert.deepEqual(s.storage.listen, [`unix:${join(dir, `${id}.nbd.sock`)}`]);
    }
  });
});
