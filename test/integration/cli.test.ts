/**
 * The `vmlink` command against the real daemon (test/helpers/cli-daemon.ts):
 * status, networks, and the errors a user meets first, with their exit status.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { cliOf, run, suiteDaemon } from '../helpers/cli-daemon.js';

describe('vmlink command line against a running daemon', { timeout: 180_000 }, () => {
  const d = suiteDaemon();
  const cli = cliOf(d);

  test('status prints the host id as a table and as JSON', async () => {
    const text = await cli('status');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^host\s+clitest$/m);
    const json = await cli('status', '--json');
    assert.equal(json.code, 0, json.stderr);
    const s = JSON.parse(json.stdout);
    assert.equal(s.host.id, 'clitest');
    assert.equal(s.host.control, d.control);
    assert.equal(typeof s.ports.total, 'number');
  });

  test('finds the daemon through VMLINK_CONTROL when --control is not given', async () => {
    const r = await run(['status', '--json'], { env: { VMLINK_CONTROL: d.control } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).host.id, 'clitest');
  });

  test('creates, lists (table and JSON) and deletes a network', async () => {
    const created = await cli('network', 'create', 'blue', '--vni', '201', '--mtu', '9000');
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /blue/);

    const json = await cli('network', 'list', '--json');
    assert.equal(json.code, 0, json.stderr);
    const blue = JSON.parse(json.stdout).networks.find((n: { name: string }) => n.name === 'blue');
    assert.deepEqual(
      { vni: blue.vni, mtu: blue.mtu, source: blue.source, ports: blue.ports },
      { vni: 201, mtu: 9000, source: 'api', ports: [] },
    );

    const table = await cli('network', 'list');
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^NAME\s+VNI\s+MTU\s+PORTS\s+MACS\s+SOURCE$/);
    assert.ok(!table.stdout.includes('\x1b['), 'no colour when stdout is not a TTY');
    const row = lines.find((l) => l.startsWith('blue '));
    assert.ok(row, table.stdout);
    assert.match(row, /^blue\s+201\s+9000\s+-\s+0\s+api$/);
    assert.equal(row.indexOf(' 201 ') + 4, (lines[0] ?? '').indexOf('VNI') + 3, 'numbers right-aligned under VNI');

    const del = await cli('network', 'delete', 'blue');
    assert.equal(del.code, 0, del.stderr);
    const again = JSON.parse((await cli('network', 'list', '--json')).stdout);
    assert.ok(!again.networks.some((n: { name: string }) => n.name === 'blue'));
  });

  test('refuses a duplicate network name or VNI with exit 1 and names the value', async () => {
    const dupName = await cli('network', 'create', 'lab', '--vni', '4242');
    assert.equal(dupName.code, 1);
    assert.match(dupName.stderr, /"lab"/);
    const dupVni = await cli('network', 'create', 'other', '--vni', '100');
    assert.equal(dupVni.code, 1);
    assert.match(dupVni.stderr, /100/);
  });

  test('rejects bad numbers and missing options locally with exit 2 and a hint', async () => {
    const vni = await cli('network', 'create', 'x', '--vni', 'abc');
    assert.equal(vni.code, 2);
    assert.match(vni.stderr, /^error: --vni "abc" is not an integer 1-16777215$/m);
    assert.match(vni.stderr, /vmlink network create --help/);

    const dgram = ['--kind', 'dgram', '--network', 'lab', '--local', 'udp:127.0.0.1:1', '--remote', 'udp:127.0.0.1:2'];
    const cases: [string[], RegExp][] = [
      [['network', 'create', 'x', '--vni', '16777216'], /--vni "16777216" is not an integer 1-16777215/],
      [['network', 'create', 'x', '--vni', '5', '--mtu', '12'], /--mtu "12" is not an integer 68-65535/],
      [['network', 'create', 'x'], /required option '--vni/],
      [['port', 'add', 'p', '--network', 'lab', '--listen', 'unix:/tmp/x.sock'], /required option '--kind/],
      [['port', 'add', 'p', ...dgram, '--queue-len', '0'], /--queue-len "0" is not an integer 1-1048576/],
      [['port', 'add', 'p', ...dgram, '--max-macs', 'many'], /--max-macs "many"/],
      [['capture', 'p', '-w', '/tmp/x.pcap', '-c', 'ten'], /-c "ten"/],
      [['capture', 'p'], /required option '-w/],
      [['netwrk', 'list'], /unknown command 'netwrk'/],
      [['network', 'list', 'extra'], /too many arguments|unknown/],
    ];
    // Independent invocations: run them side by side.
    const results = await Promise.all(cases.map(([args]) => cli(...args)));
    results.forEach((r, i) => {
      const [args, re] = cases[i] as [string[], RegExp];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.match(r.stderr, /--help\)/, `${args.join(' ')}: a hint follows the error`);
    });
  });

  test('rejects bad addresses, MACs, kinds and option mixes with exit 2 naming the value', async () => {
    const cases: [string[], RegExp][] = [
      [['--kind', 'stream', '--network', 'lab', '--listen', 'tcp:nohost'], /--listen "tcp:nohost"/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:relative.sock'], /"unix:relative.sock"/],
      [['--kind', 'socket', '--network', 'lab', '--listen', 'unix:/tmp/a.sock'], /--listen "unix:\/tmp\/a.sock"/],
      [['--kind', 'dgram', '--network', 'lab', '--local', 'udp:127.0.0.1:1'], /--remote/],
      [['--kind', 'dgram', '--network', 'lab', '--local', 'tcp:1.2.3.4:5', '--remote', 'udp:1.2.3.4:5'], /tcp:1/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/tmp/a.sock', '--mac', 'zz'], /--mac "zz"/],
      [['--kind', 'stream', '--network', 'lab', '--connect', 'unix:/a', '--allowed-mac', '01:00:5e:00:00:01'], /01:00/],
      [['--kind', 'vhost', '--network', 'lab'], /--kind "vhost"/],
      [
        ['--kind', 'vde', '--network', 'lab', '--dir', '/tmp/v', '--listen', 'unix:/a'],
        /--listen is not for --kind vde/,
      ],
      [['--kind', 'stream', '--listen', 'unix:/tmp/a.sock'], /--network/],
      [['--kind', 'stream', '--trunk', '5000=lab', '--listen', 'unix:/tmp/a.sock'], /"5000"/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/a', '--connect', 'unix:/b'], /--listen/],
      [['--kind', 'stream', '--network', 'lab', '--listen', 'unix:/a', '--storm', 'fast'], /--storm "fast"/],
    ];
    const results = await Promise.all(cases.map(([opts]) => cli('port', 'add', 'bad', ...opts)));
    results.forEach((r, i) => {
      const [opts, re] = cases[i] as [string[], RegExp];
      assert.equal(r.code, 2, `${opts.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, opts.join(' '));
      assert.match(r.stderr, /vmlink port add --help/);
    });
  });

  test("prints the daemon's refusals with exit 1: unknown network, unknown port, config items, invalid names", async () => {
    const dir = d.dir;
    const unknownNet = await cli(
      'port',
      'add',
      'p1',
      '--kind',
      'stream',
      '--network',
      'nosuch',
      '--listen',
      `unix:${join(dir, 'p1.sock')}`,
    );
    assert.equal(unknownNet.code, 1);
    assert.match(unknownNet.stderr, /nosuch/);

    const unknownPort = await cli('port', 'show', 'ghost');
    assert.equal(unknownPort.code, 1);
    assert.match(unknownPort.stderr, /"ghost"/);

    const delGhost = await cli('port', 'delete', 'ghost');
    assert.equal(delGhost.code, 1);
    assert.match(delGhost.stderr, /ghost/);

    const cfg = await cli('port', 'delete', 'cfgport');
    assert.equal(cfg.code, 1);
    assert.match(cfg.stderr, /cfgport/);

    const inUse = await cli('network', 'delete', 'lab');
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /lab/);

    const badName = await cli('network', 'create', 'bad name!', '--vni', '777');
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /^ {2}\S*name: .+$/m, 'the problem is printed with its field path');
  });

  test('refuses a second port on an address already in use, and a duplicate port name', async () => {
    const sock = `unix:${join(d.dir, 'dup.sock')}`;
    const first = await cli('port', 'add', 'dup1', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(first.code, 0, first.stderr);
    const sameName = await cli('port', 'add', 'dup1', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(sameName.code, 1);
    assert.match(sameName.stderr, /"dup1"/);
    const sameAddr = await cli('port', 'add', 'dup2', '--kind', 'stream', '--network', 'lab', '--listen', sock);
    assert.equal(sameAddr.code, 1);
    assert.match(sameAddr.stderr, /dup\.sock/);
    assert.equal((await cli('port', 'delete', 'dup1')).code, 0);
  });
});
