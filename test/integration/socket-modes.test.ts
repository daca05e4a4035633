/**
 * The unix sockets the daemon creates have the mode they should have
 * whatever the umask: the daemon runs under `umask 000` here, and every
 * socket kind (control, NBD, stream, vhost-user, unix dgram, VDE control
 * and plug sockets) must come out 0600, or as configured with `socket:`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmod, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiError, ControlClient, type PortBody } from '../../src/api/client.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';

/** Runs the daemon with the widest umask: sockets that follow it would be 0777. */
const UMASK_000 = ['sh', '-c', 'umask 000 && exec "$@"', 'sh'];

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;
const idOf = (db: 'passwd' | 'group', name: string) =>
  Number(execFileSync('getent', [db, name], { encoding: 'utf8' }).split(':')[2]);

interface PortView {
  name: string;
  state: string;
  reason?: string;
}

describe('unix sockets of a daemon started under umask 000', () => {
  let d: TestDaemon;
  let plug: ChildProcess | undefined;

  before(async () => {
    d = await startDaemon({
      hostId: 'sockmodes',
      wrap: UMASK_000,
      networks: [{ name: 'lab', vni: 10 }],
      ports: (dir) => [
        { name: 's1', network: 'lab', kind: 'stream', listen: `unix:${join(dir, 's1.sock')}` },
        { name: 'v1', network: 'lab', kind: 'vhost-user', listen: `unix:${join(dir, 'v1.sock')}` },
        {
          name: 'd1',
          network: 'lab',
          kind: 'dgram',
          local: `unix:${join(dir, 'd1.sock')}`,
          remote: `unix:${join(dir, 'd1-peer.sock')}`,
        },
        { name: 'w1', network: 'lab', kind: 'vde', dir: join(dir, 'vde') },
        {
          name: 'w2',
          network: 'lab',
          kind: 'vde',
          dir: join(dir, 'vde2'),
          socket: { mode: '0660', group: 'nogroup' },
        },
      ],
      extra: (dir) => ({ storage: { listen: [`unix:${join(dir, 'nbd.sock')}`] } }),
    });
  });

  after(async () => {
    plug?.kill('SIGKILL');
    await d?.cleanup();
  });

  /** `vmlink port add NAME --kind KIND --network lab --listen unix:PATH ...more`. */
  const addUnixPort = (name: string, kind: string, path: string, ...more: string[]) =>
    d.cli(['port', 'add', name, '--kind', kind, '--network', 'lab', '--listen', `unix:${path}`, ...more]);

  test('the control, NBD, stream, vhost-user, unix dgram and VDE control sockets are 0600', async () => {
    for (const f of ['vmlink.sock', 'nbd.sock', 's1.sock', 'v1.sock', 'd1.sock', join('vde', 'ctl')]) {
      assert.equal(octal(await modeOf(d.path(f))), '0600', f);
    }
    // The VDE directory vmlink made lets only its own user in.
    assert.equal(octal(await modeOf(d.path('vde'))), '0700');
    // No private binding directory is left behind.
    assert.deepEqual(
      (await readdir(d.dir)).filter((n) => n.startsWith('.vmlink-')),
      [],
    );
  });

  test("a VDE port's directory, control and plug sockets get its socket: mode and group", async () => {
    const nogroup = idOf('group', 'nogroup');
    const dir = await stat(d.path('vde2'));
    // A plug binds its own socket in the directory: the group gets rwx there.
    assert.equal(octal(dir.mode & 0o777), '0770');
    assert.equal(dir.gid, nogroup);
    const ctl = await stat(d.path(join('vde2', 'ctl')));
    assert.equal(octal(ctl.mode & 0o777), '0660');
    assert.equal(ctl.gid, nogroup);
    // A plug of another user (so its own chmod of our socket to 0700, which libvdeplug tries, fails);
    // it must pass through the test's temp dir to reach the switch's.
    await chmod(d.dir, 0o711);
    const child = spawn(
      'setpriv',
      ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'vde_plug', d.path('vde2')],
      { stdio: ['pipe', 'ignore', 'pipe'] },
    );
    plug = child;
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    for (;;) {
      const p = (await d.json<{ ports: PortView[] }>(['port', 'list'])).ports.find((x) => x.name === 'w2');
      if (p?.state === 'up') break;
      assert.equal(exited, false, `vde_plug exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const socks = (await readdir(d.path('vde2'))).filter((n) => /^\d{3}\.\d+$/.test(n));
    assert.equal(socks.length, 1, `plug sockets: ${socks.join(', ')}`);
    const st = await stat(d.path(join('vde2', socks[0] as string)));
    assert.equal(octal(st.mode & 0o777), '0660');
    assert.equal(st.gid, nogroup);
  });

  test('a port added with --socket-mode, --socket-owner and --socket-group gets exactly those', async () => {
    const path = d.path('s2.sock');
    const add = await addUnixPort(
      's2',
      'stream',
      path,
      '--socket-mode',
      '0660',
      '--socket-owner',
      'nobody',
      '--socket-group',
      'daemon',
    );
    assert.equal(add.code, 0, add.stderr);
    const st = await stat(path);
    assert.equal(octal(st.mode & 0o777), '0660');
    assert.equal(st.uid, idOf('passwd', 'nobody'));
    assert.equal(st.gid, idOf('group', 'daemon'));
  });

  test('a socket renamed into place is still removed on close: a VDE port deleted leaves no directory', async () => {
    const dir = d.path('vde3');
    const add = await d.cli(['port', 'add', 'w3', '--kind', 'vde', '--network', 'lab', '--dir', dir]);
    assert.equal(add.code, 0, add.stderr);
    assert.equal(octal(await modeOf(join(dir, 'ctl'))), '0600');
    assert.equal((await d.cli(['port', 'delete', 'w3'])).code, 0);
    await assert.rejects(stat(dir), /ENOENT/);
    const s2 = d.path('s3.sock');
    assert.equal((await addUnixPort('s3', 'stream', s2)).code, 0);
    assert.equal((await d.cli(['port', 'delete', 's3'])).code, 0);
    await assert.rejects(stat(s2), /ENOENT/);
  });

  test('a vhost-user port with a numeric group and mode 0640 gets them', async () => {
    const path = d.path('v2.sock');
    const add = await addUnixPort('v2', 'vhost-user', path, '--socket-mode', '640', '--socket-group', '1');
    assert.equal(add.code, 0, add.stderr);
    const st = await stat(path);
    assert.equal(octal(st.mode & 0o777), '0640');
    assert.equal(st.gid, 1);
  });

  test('a bad mode is refused by the CLI and by the API, naming the field', async () => {
    const cli = await addUnixPort('x', 'stream', d.path('x.sock'), '--socket-mode', '0999');
    assert.equal(cli.code, 2);
    assert.match(cli.stderr, /--socket-mode "0999" is not an octal mode/);
    const body = (socket: unknown) => ({
      name: 'x',
      kind: 'stream',
      network: 'lab',
      listen: `unix:${d.path('x.sock')}`,
      socket,
    });
    const client = new ControlClient({ socketPath: d.control });
    try {
      const refused = async (b: unknown): Promise<ApiError> => {
        const err = await client.addPort(b as PortBody).then(
          () => assert.fail('the port was added'),
          (e: unknown) => e,
        );
        assert.ok(err instanceof ApiError, String(err));
        return err;
      };
      for (const [socket, field] of [
        [{ mode: '999' }, 'socket.mode'],
        [{ mode: 660 }, 'socket.mode'],
        [{ group: 'no such group' }, 'socket.group'],
      ] as const) {
        const err = await refused(body(socket));
        assert.equal(err.status, 400);
        assert.equal(err.code, 'ERR_CONFIG_INVALID');
        assert.ok(
          err.problems.some((p) => p.path === field),
          `${JSON.stringify(socket)}: ${JSON.stringify(err.problems)}`,
        );
      }
      // socket: on a port that creates no unix socket.
      const tcp = await refused({ ...body({ mode: '0660' }), listen: 'tcp:127.0.0.1:0' });
      assert.equal(tcp.status, 400);
      assert.ok(
        tcp.problems.some((p) => p.path === 'socket'),
        JSON.stringify(tcp.problems),
      );
    } finally {
      await client.close();
    }
  });

  test('an unknown owner or group is refused with ERR_PORT_ADDRESS naming the field, and nothing is left', async () => {
    for (const [flag, value, field] of [
      ['--socket-group', 'vmlink-no-such-group', 'socket.group'],
      ['--socket-owner', 'vmlink-no-such-user', 'socket.owner'],
    ] as const) {
      const path = d.path('bad.sock');
      const add = await addUnixPort('bad', 'stream', path, flag, value);
      assert.equal(add.code, 1);
      assert.match(add.stderr, new RegExp(`${field.replace('.', '\\.')} "${value}" is not a`));
      assert.match(add.stderr, /ERR_PORT_ADDRESS|cannot use unix:/);
      await assert.rejects(stat(path), /ENOENT/);
    }
    const list = (await d.json<{ ports: PortView[] }>(['port', 'list'])).ports;
    assert.equal(
      list.find((p) => p.name === 'bad'),
      undefined,
    );
  });
});

describe('configured modes of the control and NBD sockets', () => {
  let d: TestDaemon;

  before(async () => {
    d = await startDaemon({
      hostId: 'sockcfg',
      wrap: UMASK_000,
      extra: (dir) => ({
        host: {
          id: 'sockcfg',
          control: join(dir, 'vmlink.sock'),
          state_dir: join(dir, 'state'),
          control_socket: { mode: '0660', group: 'daemon' },
        },
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`], socket: { mode: '0666', owner: 'nobody' } },
      }),
    });
  });

  after(async () => {
    await d?.cleanup();
  });

  test('host.control_socket and storage.socket are applied', async () => {
    const control = await stat(d.control);
    assert.equal(octal(control.mode & 0o777), '0660');
    assert.equal(control.gid, idOf('group', 'daemon'));
    const nbd = await stat(d.path('nbd.sock'));
    assert.equal(octal(nbd.mode & 0o777), '0666');
    assert.equal(nbd.uid, idOf('passwd', 'nobody'));
  });
});

describe('bad socket settings in the config', () => {
  test('an unknown control socket owner stops the daemon with a message naming host.control_socket.owner', async () => {
    await assert.rejects(
      startDaemon({
        hostId: 'badctl',
        extra: (dir) => ({
          host: {
            id: 'badctl',
            control: join(dir, 'vmlink.sock'),
            state_dir: join(dir, 'state'),
            control_socket: { owner: 'vmlink-no-such-user' },
          },
        }),
      }),
      /ERR_CONTROL_SOCKET.*host\.control_socket\.owner \\"vmlink-no-such-user\\" is not a user/,
    );
  });

  test('an unknown NBD socket group leaves storage down with the field named, the daemon up', async () => {
    const d = await startDaemon({
      hostId: 'badnbd',
      extra: (dir) => ({
        storage: { listen: [`unix:${join(dir, 'nbd.sock')}`], socket: { group: 'vmlink-no-such-group' } },
      }),
    });
    try {
      const s = await d.json<{ storage: { running: boolean; reason?: string } }>(['status']);
      assert.equal(s.storage.running, false);
      assert.match(s.storage.reason ?? '', /storage\.socket\.group "vmlink-no-such-group" is not a group/);
    } finally {
      await d.cleanup();
    }
  });

  test('a mode written as a YAML number is refused at load, naming the field', async () => {
    await assert.rejects(
      startDaemon({
        hostId: 'badmode',
        extra: (dir) => ({ storage: { listen: [`unix:${join(dir, 'nbd.sock')}`], socket: { mode: 660 } } }),
      }),
      /storage\.socket\.mode: mode must be a quoted octal string/,
    );
  });
});
