/**
 * `vmlink qemu-args PORT --libvirt` and `vmlink disk-args EXPORT --libvirt`
 * against a running daemon: for every port kind and NBD transport libvirt
 * can express, the printed XML (the device, and the domain elements it needs,
 * printed as a comment) wrapped in a minimal `<domain>` passes libvirt's own
 * schema (`virt-xml-validate`) and libvirt's own parser (`virsh -c test:///default
 * define`); notes go to stderr; kinds libvirt cannot
 * express fail with status 1 and what to use instead.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Running, startDaemon, stopDaemon } from '../helpers/api-daemon.js';
import { freeUdpPorts, type Run, run } from '../helpers/cli-daemon.js';
import { defineInLibvirt, validateDomain } from '../helpers/libvirt.js';
import { makeCerts } from '../helpers/tls-certs.js';

/** A TCP port free right now on loopback. */
async function freeTcpPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/** The device and the domain elements of `--libvirt` output (the leading comment holds the latter). */
function parsed(stdout: string): { xml: string; domain?: string } {
  const m = /^<!-- the <domain> needs:\n([\s\S]*?)-->\n/.exec(stdout);
  return m ? { xml: stdout.slice(m[0].length), domain: m[1] } : { xml: stdout };
}

describe('vmlink qemu-args/disk-args --libvirt', () => {
  let a: Running;
  let b: Running;
  let dir = '';
  let tcpPort = 0;
  const cli =
    (r: () => Running) =>
    (...args: string[]): Promise<Run> =>
      run(['--control', r().control, ...args]);
  const cliA = cli(() => a);
  const cliB = cli(() => b);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-libvirt-'));
    const [udp1, udp2] = await freeUdpPorts(2);
    tcpPort = await freeTcpPort();
    a = await startDaemon(
      {
        host: { id: 'lv', control: `${dir}/a/ctl.sock`, state_dir: `${dir}/a/state` },
        networks: [{ name: 'lab', vni: 100 }],
        ports: [
          { name: 'vu', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vu.sock`, memory_mb: 512, queues: 2 },
          { name: 'st', network: 'lab', kind: 'stream', listen: `tcp:127.0.0.1:${tcpPort}`, mac: '52:54:00:00:00:07' },
          { name: 'sk', network: 'lab', kind: 'socket', connect: 'tcp:127.0.0.1:9' },
          {
            name: 'dg',
            network: 'lab',
            kind: 'dgram',
            local: `udp:127.0.0.1:${udp1}`,
            remote: `udp:127.0.0.1:${udp2}`,
          },
          { name: 'stu', network: 'lab', kind: 'stream', listen: `unix:${dir}/stu.sock` },
          { name: 'vd', network: 'lab', kind: 'vde', dir: `${dir}/vde` },
        ],
        storage: { listen: [`unix:${dir}/nbd.sock`] },
        exports: [
          { name: 'disk1', backend: { type: 'memory', size: '1M' } },
          { name: 'base', backend: { type: 'memory', size: '1M' }, read_only: true },
        ],
      },
      dir,
    );
    const pki = await makeCerts(`${dir}/pki`);
    b = await startDaemon(
      {
        host: { id: 'lv2', control: `${dir}/b/ctl.sock`, state_dir: `${dir}/b/state` },
        storage: {
          listen: ['tcp:127.0.0.1:0'],
          tls: { cert: pki.serverCert, key: pki.serverKey, mode: 'optional', client_dir: pki.dir },
        },
        exports: [{ name: 'secret', backend: { type: 'memory', size: '1M' }, tls_only: true }],
      },
      dir,
    );
  });

  after(async () => {
    if (b) await stopDaemon(b);
    if (a) await stopDaemon(a);
    await rm(dir, { recursive: true, force: true });
  });

  const valid = async (r: Run, name: string): Promise<{ xml: string; domain?: string }> => {
    assert.equal(r.code, 0, r.stderr);
    const x = parsed(r.stdout);
    const v = await validateDomain(x, dir, name);
    assert.equal(v.code, 0, `${name}: virt-xml-validate refused:\n${v.out}\n${r.stdout}`);
    // libvirt's own parser takes it too and keeps the device (its alias survives the round trip).
    const d = await defineInLibvirt(x, dir, name);
    assert.equal(d.code, 0, `${name}: libvirt refused:\n${d.out}`);
    const alias = /<alias name='(ua-[^']+)'\/>/.exec(x.xml)?.[1] ?? '';
    assert.ok(alias !== '' && d.out.includes(`<alias name='${alias}'/>`), d.out);
    return x;
  };

  test('prints a vhostuser interface and, as a comment, the shared memory the domain needs; the note on stderr', async () => {
    const r = await cliA('qemu-args', 'vu', '--libvirt');
    const x = await valid(r, 'vu');
    assert.match(x.xml, /<interface type='vhostuser'>/);
    assert.match(x.xml, new RegExp(`<source type='unix' path='${dir}/vu.sock' mode='client'>`));
    assert.match(x.xml, /<driver queues='2' rx_queue_size='1024' tx_queue_size='1024'\/>/);
    assert.match(x.domain ?? '', /<memory unit='MiB'>512<\/memory>\n<memoryBacking>/);
    assert.match(r.stderr, /^note: vhost-user maps the guest RAM/);
  });

  test('prints client, server and udp interfaces for tcp stream, socket and udp dgram ports', async () => {
    const st = await valid(await cliA('qemu-args', 'st', '--libvirt'), 'st');
    assert.match(
      st.xml,
      new RegExp(
        `<interface type='client'>\\n  <mac address='52:54:00:00:00:07'/>\\n  <source address='127.0.0.1' port='${tcpPort}'/>`,
      ),
    );
    const sk = await valid(await cliA('qemu-args', 'sk', '--libvirt', '--id', 'net0'), 'sk');
    assert.match(
      sk.xml,
      /<interface type='server'>[\s\S]*<source address='127.0.0.1' port='9'\/>[\s\S]*<alias name='ua-net0'\/>/,
    );
    const dg = await valid(await cliA('qemu-args', 'dg', '--libvirt'), 'dg');
    assert.match(dg.xml, /<interface type='udp'>/);
    const json = await cliA('qemu-args', 'dg', '--libvirt', '--json');
    assert.deepEqual(JSON.parse(json.stdout), { xml: dg.xml, notes: [] });
  });

  test('refuses a unix stream port and a vde port with status 1 and what to use instead', async () => {
    const stu = await cliA('qemu-args', 'stu', '--libvirt');
    assert.equal(stu.code, 1);
    assert.match(
      stu.stderr,
      /^error: port "stu": libvirt has no interface on a unix stream socket .*<qemu:commandline>/,
    );
    const vd = await cliA('qemu-args', 'vd', '--libvirt');
    assert.equal(vd.code, 1);
    assert.match(vd.stderr, /libvirt has no VDE interface/);
    assert.equal((await cliA('qemu-args', 'nope', '--libvirt')).code, 1);
  });

  test('prints an NBD network disk over the unix socket, read-only where the export is', async () => {
    const d = await valid(await cliA('disk-args', 'disk1', '--libvirt'), 'disk1');
    assert.match(
      d.xml,
      new RegExp(`<source protocol='nbd' name='disk1'>\\n    <host transport='unix' socket='${dir}/nbd.sock'/>`),
    );
    assert.doesNotMatch(d.xml, /readonly/);
    const ro = await valid(await cliA('disk-args', 'base', '--libvirt', '--dev', 'vdb'), 'base');
    assert.match(ro.xml, /<target dev='vdb' bus='virtio'\/>\n {2}<readonly\/>/);
  });

  test('prints an NBD network disk over TCP with TLS and notes where libvirt takes the certificates', async () => {
    const st = await b.client.status();
    const port = /:(\d+)$/.exec(st.storage.listen[0] ?? '')?.[1];
    const r = await cliB('disk-args', 'secret', '--libvirt');
    const d = await valid(r, 'secret');
    assert.match(
      d.xml,
      new RegExp(
        `<source protocol='nbd' name='secret' tls='yes' tlsHostname='localhost'>\\n    <host name='127.0.0.1' port='${port}'/>`,
      ),
    );
    assert.match(r.stderr, new RegExp(`nbd_tls_x509_cert_dir .*${dir}/pki`));
  });

  test('refuses --dev without --libvirt and a bad --dev', async () => {
    const a1 = await cliA('disk-args', 'disk1', '--dev', 'vdb');
    assert.equal(a1.code, 2);
    assert.match(a1.stderr, /--dev goes with --libvirt/);
    const a2 = await cliA('disk-args', 'disk1', '--libvirt', '--dev', 'sda');
    assert.equal(a2.code, 1);
    assert.match(a2.stderr, /dev "sda" is not a virtio disk name/);
  });
});
