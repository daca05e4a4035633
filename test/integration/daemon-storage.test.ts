/**
 * The NBD server as part of the vmlink daemon: exports declared in the
 * config and added through the real CLI, served on the daemon's NBD sockets
 * and used by real peers (nbdinfo, qemu-img, qemu-io), kept in the state
 * store across a restart, and refused or protected as documented.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiError, ControlClient, type ExportView } from '../../src/api/client.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { NBD_ERR } from '../../src/storage/nbd/constants.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { run, runOk } from '../helpers/nbd-peer.js';

const MiB = 1024 * 1024;

describe('vmlink daemon serving NBD exports', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let client: ControlClient;
  const nbdSock = () => d.path('nbd.sock');
  const uri = (name: string) => `nbd+unix:///${name}?socket=${nbdSock()}`;
  const exportsJson = async (): Promise<ExportView[]> =>
    (await d.json<{ exports: ExportView[] }>(['export', 'list'])).exports;

  before(async () => {
    d = await startDaemon({
      hostId: 'storage',
      extra: (dir) => ({
        storage: {
          listen: [`unix:${join(dir, 'nbd.sock')}`, 'tcp:127.0.0.1:0'],
          max_in_flight_per_client: 16,
          backend_open_timeout_ms: 2000,
          roots: [dir],
        },
        exports: [
          { name: 'cfg-mem', backend: { type: 'memory', size: '32M' }, description: 'declared in the config' },
          { name: 'cfg-file', backend: { type: 'file', path: join(dir, 'cfg.img'), size: 8 * MiB }, weight: 2 },
          { name: 'cfg-ro', backend: { type: 'memory', size: '1M' }, read_only: true },
          {
            name: 'lan-only',
            backend: { type: 'memory', size: '1M' },
            allowed_clients: ['10.99.0.0/16', 'fd00::/64'],
          },
        ],
      }),
    });
    client = new ControlClient({ socketPath: d.control });
  });

  after(async () => {
    await client?.close();
    await d?.cleanup();
  });

  test('status shows the bound NBD listen addresses, with the TCP port resolved', async () => {
    const s = await d.json<{ storage: { running: boolean; listen: string[]; exports: number } }>(['status']);
    assert.equal(s.storage.running, true);
    assert.equal(s.storage.listen[0], `unix:${nbdSock()}`);
    assert.match(s.storage.listen[1] ?? '', /^tcp:127\.0\.0\.1:[1-9]\d*$/);
    assert.equal((await stat(nbdSock())).isSocket(), true);
  });

  test('lists config exports and exports added with the CLI, and nbdinfo --list sees them all', async () => {
    const add = await d.cli([
      'export',
      'add',
      'cli-disk',
      '--backend',
      'file',
      '--path',
      d.path('cli.img'),
      '--size',
      '16M',
    ]);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /export "cli-disk" added \(file .*cli\.img, 16 MiB\)/);

    const list = await exportsJson();
    const byName = new Map(list.map((e) => [e.name, e]));
    assert.deepEqual([...byName.keys()].sort(), ['cfg-file', 'cfg-mem', 'cfg-ro', 'cli-disk', 'lan-only']);
    assert.equal(byName.get('cfg-mem')?.source, 'config');
    assert.equal(byName.get('cfg-mem')?.size, 32 * MiB);
    assert.equal(byName.get('cfg-file')?.weight, 2);
    assert.equal(byName.get('cfg-ro')?.read_only, true);
    assert.equal(byName.get('cli-disk')?.source, 'api');
    assert.equal(byName.get('cli-disk')?.state, 'up');
    assert.equal(byName.get('cli-disk')?.uri, uri('cli-disk'));

    const table = await d.cli(['export', 'list']);
    assert.match(table.stdout, /^cli-disk\s+file .*cli\.img\s+16 MiB\s+rw\s+1\s+up\s+0\s+api$/m);

    const info = await runOk('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${nbdSock()}`]);
    const names = (JSON.parse(info) as { exports: { 'export-name': string; description?: string }[] }).exports;
    assert.deepEqual(names.map((e) => e['export-name']).sort(), [
      'cfg-file',
      'cfg-mem',
      'cfg-ro',
      'cli-disk',
      'lan-only',
    ]);
    assert.equal(names.find((e) => e['export-name'] === 'cfg-mem')?.description, 'declared in the config');
  });

  test('qemu-img convert writes a random image into a file export and qemu-img compare finds it identical', async () => {
    const src = d.path('random.raw');
    await writeFile(src, randomBytes(8 * MiB));
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri('cfg-file')]);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri('cfg-file')]);
    // The backend file holds the same bytes.
    assert.deepEqual(await readFile(d.path('cfg.img')), await readFile(src));
    const show = await d.json<{ export: ExportView }>(['export', 'show', 'cfg-file']);
    assert.ok(show.export.counters.bytes_written >= 8 * MiB, JSON.stringify(show.export.counters));
    assert.ok(show.export.counters.bytes_read >= 8 * MiB, JSON.stringify(show.export.counters));
    assert.equal(show.export.clients, 0);
  });

  test('a read-only export refuses writes: qemu-io cannot write, and a raw NBD write gets EPERM', async () => {
    const io = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 4k', uri('cfg-ro')]);
    assert.notEqual(io.code, 0);
    assert.match(io.stderr + io.stdout, /Permission denied|read-only/i);
    const c = await NbdClient.connect({ address: { type: 'unix', path: nbdSock() }, export: 'cfg-ro' });
    try {
      await assert.rejects(
        c.write(0, Buffer.alloc(512, 1)),
        (err) => (err as { errno?: number }).errno === NBD_ERR.EPERM,
      );
      assert.deepEqual(await c.read(0, 512), Buffer.alloc(512));
    } finally {
      await c.disconnect();
    }
    const read = await runOk('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 4k', uri('cfg-ro')]);
    assert.match(read, /read 4096\/4096 bytes/);
  });

  test('an export with allowed_clients refuses a TCP client from elsewhere but serves unix-socket clients', async () => {
    const s = await d.json<{ storage: { listen: string[] } }>(['status']);
    const tcp = (s.storage.listen[1] ?? '').replace(/^tcp:/, '');
    const refused = await run('nbdinfo', [`nbd://${tcp}/lan-only`]);
    assert.notEqual(refused.code, 0, refused.stdout);
    assert.match(refused.stderr, /server replied with error to opt_go request/);
    // The refusal (NBD_REP_ERR_POLICY) carries the reason.
    const [host, port] = tcp.split(':') as [string, string];
    await assert.rejects(
      NbdClient.connect({ address: { type: 'tcp', host, port: Number(port) }, export: 'lan-only' }),
      /client 127\.0\.0\.1 is not allowed to use export "lan-only"/,
    );
    const overTcp = await runOk('nbdinfo', ['--size', `nbd://${tcp}/cfg-mem`]);
    assert.equal(Number(overTcp.trim()), 32 * MiB);
    const overUnix = await runOk('nbdinfo', ['--size', uri('lan-only')]);
    assert.equal(Number(overUnix.trim()), MiB);
  });

  test('a config export cannot be deleted (409 ERR_DECLARED_IN_CONFIG) and is still served', async () => {
    const r = await d.cli(['export', 'delete', 'cfg-mem']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /export "cfg-mem" is declared in the config file .*vmlink\.yaml; to change or remove it, edit/,
    );
    await assert.rejects(client.deleteExport('cfg-mem'), (err) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 409);
      assert.equal(err.code, 'ERR_DECLARED_IN_CONFIG');
      return true;
    });
    assert.equal(Number((await runOk('nbdinfo', ['--size', uri('cfg-mem')])).trim()), 32 * MiB);
  });

  test('bad export specs are refused with 400, naming every bad field', async () => {
    const cases: [Record<string, unknown>, string[]][] = [
      [{ name: 'bad name!', backend: { type: 'memory', size: 1024 } }, ['name']],
      [{ name: 'm', backend: { type: 'memory', size: '12Q' } }, ['backend.size']],
      [{ name: 'f', backend: { type: 'file', path: 'relative.img' }, weight: 0 }, ['backend.path', 'weight']],
      [{ name: 'x', backend: { type: 'tape' } }, ['backend.type']],
      [
        { name: 'r', backend: { type: 'remote', address: 'udp:1.2.3.4:5' }, allowed_clients: ['10.0.0.0/33'] },
        ['backend.address', 'allowed_clients[0]'],
      ],
      [
        {
          name: 'c',
          backend: { type: 'cow', base: { type: 'memory' }, overlay: { type: 'memory', size: 1 } },
          colour: 1,
        },
        ['backend.base.size', ''],
      ],
    ];
    for (const [body, paths] of cases) {
      await assert.rejects(client.addExport(body as never), (err) => {
        assert.ok(err instanceof ApiError, String(err));
        assert.equal(err.status, 400);
        assert.equal(err.code, 'ERR_CONFIG_INVALID');
        assert.deepEqual(
          err.problems.map((p) => p.path).sort(),
          [...paths].sort(),
          `${JSON.stringify(body)}: ${JSON.stringify(err.problems)}`,
        );
        return true;
      });
    }
    const size = await client.addExport({ name: 'm', backend: { type: 'memory', size: '12Q' } }).catch((e) => e);
    assert.match((size as ApiError).problems[0]?.message ?? '', /"12Q" is not a size/);
    // The CLI checks values before asking the daemon (exit 2), naming the flag.
    const cli = await d.cli(['export', 'add', 'x', '--backend', 'memory', '--size', 'lots']);
    assert.equal(cli.code, 2);
    assert.match(cli.stderr, /--size "lots" is not a size/);
    const wrongFlag = await d.cli(['export', 'add', 'x', '--backend', 'memory', '--size', '1M', '--path', '/x']);
    assert.equal(wrongFlag.code, 2);
    assert.match(wrongFlag.stderr, /--path is not for --backend memory/);
    assert.equal(
      (await exportsJson()).some((e) => ['m', 'f', 'x', 'r', 'c'].includes(e.name)),
      false,
    );
  });

  test('an export whose backend cannot open is refused with 422 and nothing is stored', async () => {
    await assert.rejects(
      client.addExport({ name: 'nofile', backend: { type: 'file', path: d.path('absent.img') } }),
      (err) => err instanceof ApiError && err.status === 422 && err.code === 'ERR_EXPORT_BACKEND',
    );
    const dup = await d.cli(['export', 'add', 'cfg-mem', '--backend', 'memory', '--size', '1M']);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /declared in the config file/);
    assert.equal(
      (await exportsJson()).some((e) => e.name === 'nofile'),
      false,
    );
  });

  test('a remote export whose server accepts but never answers is refused after the open timeout, and the API stays usable', async () => {
    const silent = createServer((sock) => sockets.push(sock));
    const sockets: Socket[] = [];
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as AddressInfo).port;
    try {
      const r = await d.cli(['export', 'add', 'mute', '--backend', 'remote', '--address', `tcp:127.0.0.1:${port}`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /export "mute": cannot open its backend: it did not open within 2 s/);
      assert.equal((await d.cli(['export', 'list'])).code, 0);
      await assert.rejects(client.getExport('mute'), (err) => err instanceof ApiError && err.status === 404);
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((res) => silent.close(res));
    }
  });

  test('a second daemon on the same NBD socket leaves the first one serving and shows its storage down', async () => {
    const second = await startDaemon({
      hostId: 'second',
      extra: () => ({ storage: { listen: [`unix:${nbdSock()}`] } }),
    });
    try {
      const s = await second.json<{ storage: { running: boolean; reason?: string } }>(['status']);
      assert.equal(s.storage.running, false);
      assert.match(s.storage.reason ?? '', /another server is answering on it/);
      const add = await second.cli(['export', 'add', 'x', '--backend', 'memory', '--size', '1M']);
      assert.equal(add.code, 1);
      assert.match(add.stderr, /the NBD server is not running/);
    } finally {
      await second.cleanup();
    }
    assert.equal(Number((await runOk('nbdinfo', ['--size', uri('cfg-mem')])).trim()), 32 * MiB);
  });

  test('an export with a connected client cannot be deleted until the client leaves', async () => {
    assert.equal((await d.cli(['export', 'add', 'busy', '--backend', 'memory', '--size', '1M'])).code, 0);
    const c = await NbdClient.connect({ address: { type: 'unix', path: nbdSock() }, export: 'busy' });
    const show = await d.json<{ export: ExportView }>(['export', 'show', 'busy']);
    assert.equal(show.export.clients, 1);
    const r = await d.cli(['export', 'delete', 'busy']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /export "busy" has 1 client connected/);
    await c.disconnect();
    // The server sees the disconnect asynchronously: ask until it has.
    for (let i = 0; (await client.getExport('busy')).clients > 0; i++) {
      await new Promise((res) => setImmediate(res));
      assert.ok(i < 100_000, 'the client never went away');
    }
    assert.equal((await d.cli(['export', 'delete', 'busy'])).code, 0);
    await assert.rejects(client.getExport('busy'), (err) => err instanceof ApiError && err.status === 404);
  });

  test('disk-args prints the -blockdev and virtio-blk -device arguments for the unix socket', async () => {
    const r = await d.cli(['disk-args', 'cli-disk']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout.trim(),
      `-blockdev driver=nbd,node-name=cli-disk,server.type=unix,server.path=${nbdSock()},export=cli-disk ` +
        '-device virtio-blk-pci,drive=cli-disk,id=cli-disk-dev',
    );
    const ro = await d.json<{ args: string[] }>(['disk-args', 'cfg-ro', '--id', 'disk0']);
    assert.equal(
      ro.args[1],
      `driver=nbd,node-name=disk0,server.type=unix,server.path=${nbdSock()},export=cfg-ro,read-only=on`,
    );
    assert.equal((await d.cli(['disk-args', 'nope'])).code, 1);
  });

  test('an export added through the API survives a daemon restart, with its data', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', uri('cli-disk')]);
    assert.equal(await d.stop(), 0);
    const state = JSON.parse(await readFile(join(d.stateDir, 'state.json'), 'utf8')) as { exports: { name: string }[] };
    assert.deepEqual(
      state.exports.map((e) => e.name),
      ['cli-disk'],
    );
    await d.start();
    const e = await client.getExport('cli-disk');
    assert.equal(e.source, 'api');
    assert.equal(e.state, 'up');
    assert.equal(e.size, 16 * MiB);
    const read = await runOk('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 1M 64k', uri('cli-disk')]);
    assert.match(read, /read 65536\/65536 bytes/);
    assert.equal((await d.cli(['export', 'delete', 'cli-disk'])).code, 0);
    assert.equal((await d.cli(['export', 'show', 'cli-disk'])).code, 1);
  });
});
