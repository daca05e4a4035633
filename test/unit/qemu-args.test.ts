/**
 * QEMU argument generation: byte-exact argv for every port kind, default MACs
 * and shell quoting. test/unit/qemu-args-qemu.test.ts has the real
 * qemu-system-x86_64 (7.2) accept them and connect to vmlink's ports.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { defaultMac, qemuArgs, shellQuote } from '../../src/daemon/qemu-args.js';

const MAC = '52:54:00:12:34:56';
const spec = (o: Record<string, unknown>): PortConfig => portSchema.parse({ name: 'vm1', network: 'n', ...o });

describe('qemuArgs', () => {
  test('attaches a listening unix stream port with server=off', () => {
    assert.deepEqual(qemuArgs(spec({ kind: 'stream', listen: 'unix:/run/vmlink/vm1.sock' }), { mac: MAC }), [
      '-netdev',
      'stream,id=vm1,server=off,addr.type=unix,addr.path=/run/vmlink/vm1.sock',
      '-device',
      'virtio-net-pci,netdev=vm1,mac=52:54:00:12:34:56',
    ]);
  });

  test('attaches a dialling tcp stream port with server=on, and a listening one to loopback for 0.0.0.0', () => {
    assert.deepEqual(qemuArgs(spec({ kind: 'stream', connect: 'tcp:127.0.0.1:5555' }), { mac: MAC, id: 'net0' }), [
      '-netdev',
      'stream,id=net0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56',
    ]);
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'tcp:0.0.0.0:5555' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5555',
    );
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'tcp:[::]:5555' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=inet,addr.host=::1,addr.port=5555',
    );
  });

  test('attaches socket ports with connect= and listen=', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'socket', listen: 'tcp:127.0.0.1:6000' }), { mac: MAC })[1],
      'socket,id=vm1,connect=127.0.0.1:6000',
    );
    assert.equal(
      qemuArgs(spec({ kind: 'socket', connect: 'tcp:127.0.0.1:6001' }), { mac: MAC })[1],
      'socket,id=vm1,listen=127.0.0.1:6001',
    );
  });

  test("swaps a dgram port's local and remote for the VM", () => {
    assert.equal(
      qemuArgs(spec({ kind: 'dgram', local: 'udp:0.0.0.0:7001', remote: 'udp:127.0.0.1:7002' }), { mac: MAC })[1],
      'dgram,id=vm1,local.type=inet,local.host=127.0.0.1,local.port=7002,remote.type=inet,remote.host=127.0.0.1,remote.port=7001',
    );
  });

  test("swaps a unix dgram port's socket paths for the VM", () => {
    assert.equal(
      qemuArgs(spec({ kind: 'dgram', local: 'unix:/run/vmlink/a,1.sock', remote: 'unix:/run/vmlink/vm1.qemu' }), {
        mac: MAC,
      })[1],
      'dgram,id=vm1,local.type=unix,local.path=/run/vmlink/vm1.qemu,remote.type=unix,remote.path=/run/vmlink/a,,1.sock',
    );
  });

  test('plugs into a vde port directory, and refuses a tap port', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'vde', dir: '/run/vmlink/vde,1' }), { mac: MAC })[1],
      'vde,id=vm1,sock=/run/vmlink/vde,,1',
    );
    assert.throws(() => qemuArgs(spec({ kind: 'tap', ifname: 'vmtap0' }), { mac: MAC }), { code: 'ERR_QEMU_ARGS' });
  });

  test('doubles commas in a socket path (QEMU option syntax)', () => {
    assert.equal(
      qemuArgs(spec({ kind: 'stream', listen: 'unix:/tmp/a,b.sock' }), { mac: MAC })[1],
      'stream,id=vm1,server=off,addr.type=unix,addr.path=/tmp/a,,b.sock',
    );
  });

  test('refuses what QEMU 7.2 cannot do, bad MACs and bad ids, with ERR_QEMU_ARGS', () => {
    const cases: [Record<string, unknown>, { mac: string; id?: string }][] = [
      [{ kind: 'socket', listen: 'tcp:[::1]:6000' }, { mac: MAC }],
      [{ kind: 'dgram', local: 'udp:[::1]:1', remote: 'udp:[::1]:2' }, { mac: MAC }],
      [{ kind: 'stream', listen: 'unix:/x.sock' }, { mac: '53:54:00:00:00:01' }],
      [{ kind: 'stream', listen: 'unix:/x.sock' }, { mac: 'nope' }],
      [
        { kind: 'stream', listen: 'unix:/x.sock' },
        { mac: MAC, id: 'has space' },
      ],
    ];
    for (const [s, o] of cases) assert.throws(() => qemuArgs(spec(s), o), { code: 'ERR_QEMU_ARGS' });
  });

  test('prefixes a port name that does not start with a letter to make a QEMU id', () => {
    const args = qemuArgs(portSchema.parse({ name: '7vm', network: 'n', kind: 'stream', listen: 'unix:/x.sock' }), {
      mac: MAC,
    });
    assert.match(args[1] as string, /^stream,id=net-7vm,/);
  });
});

describe('defaultMac', () => {
  test('is a stable locally administered unicast MAC under 52:54:00', () => {
    const m = defaultMac('vm1');
    assert.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(defaultMac('vm1'), m);
    assert.equal(Number.parseInt(m.slice(0, 2), 16) & 0b11, 0b10);
  });

  test('differs between names', () => {
    const macs = new Set(Array.from({ length: 200 }, (_, i) => defaultMac(`vm${i}`)));
    assert.ok(macs.size >= 199);
  });
});

describe('shellQuote', () => {
  test('leaves plain words and quotes the rest so a POSIX shell reads them back', () => {
    assert.equal(
      shellQuote(['qemu', '-netdev', 'stream,id=a,addr.path=/tmp/x y', "it's", '']),
      "qemu -netdev 'stream,id=a,addr.path=/tmp/x y' 'it'\\''s' ''",
    );
  });

  test('round-trips through sh', async () => {
    const args = ['a b', "c'd", '$HOME', '`x`', 'e"f', 'plain,=:/'];
    const out = await run('sh', ['-c', `printf '%s\\n' ${shellQuote(args)}`]);
    assert.equal(out, `${args.join('\n')}\n`);
  });
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}`))));
  });
}
