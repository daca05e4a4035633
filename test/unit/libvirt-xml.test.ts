/**
 * libvirt domain XML: the `<interface>` of every port kind libvirt can
 * express and the `<disk>` of every NBD transport, each wrapped in a minimal
 * `<domain>` and checked by libvirt's own schema (`virt-xml-validate FILE
 * domain`, Debian libvirt-clients); the kinds libvirt cannot express are
 * refused with ERR_LIBVIRT_XML and what to use instead.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type PortConfig, portSchema } from '../../src/config/schema.js';
import { type LibvirtXml, LibvirtXmlError, libvirtDisk, libvirtInterface } from '../../src/daemon/libvirt-xml.js';
import { domainXml, validateDomain } from '../helpers/libvirt.js';

const MAC = '52:54:00:12:34:56';
const spec = (o: Record<string, unknown>): PortConfig => portSchema.parse({ name: 'vm1', network: 'n', ...o });
const iface = (o: Record<string, unknown>): LibvirtXml => libvirtInterface(spec(o), { mac: MAC, id: 'vm1' });

let dir = '';

async function assertValid(x: LibvirtXml, name: string): Promise<void> {
  const r = await validateDomain(x, dir, name);
  assert.equal(r.code, 0, `${name}: virt-xml-validate refused:\n${r.out}\n${domainXml(x)}`);
}

function refusedWith(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err) => err instanceof LibvirtXmlError && err.code === 'ERR_LIBVIRT_XML' && re.test(err.message));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-libvirt-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('libvirtInterface', () => {
  test('gives a listening vhost-user port a client-mode vhostuser interface that reconnects, and the shared memory it needs', async () => {
    const x = iface({ kind: 'vhost-user', listen: 'unix:/run/vmlink/vm1.sock', memory_mb: 2048, queues: 2 });
    assert.equal(
      x.xml,
      [
        "<interface type='vhostuser'>",
        "  <mac address='52:54:00:12:34:56'/>",
        "  <source type='unix' path='/run/vmlink/vm1.sock' mode='client'>",
        "    <reconnect enabled='yes' timeout='1'/>",
        '  </source>',
        "  <model type='virtio'/>",
        "  <driver queues='2' rx_queue_size='1024' tx_queue_size='1024'/>",
        "  <alias name='ua-vm1'/>",
        '</interface>',
        '',
      ].join('\n'),
    );
    assert.match(x.domain ?? '', /<memory unit='MiB'>2048<\/memory>/);
    assert.match(x.domain ?? '', /<access mode='shared'\/>/);
    assert.match(x.notes.join(), /shared/);
    await assertValid(x, 'vhost-listen');
  });

  test('gives a dialling vhost-user port a server-mode vhostuser interface', async () => {
    const x = iface({ kind: 'vhost-user', connect: 'unix:/run/qemu/vm1.sock' });
    assert.match(x.xml, /<source type='unix' path='\/run\/qemu\/vm1.sock' mode='server'\/>/);
    assert.doesNotMatch(x.xml, /reconnect/);
    await assertValid(x, 'vhost-connect');
  });

  test('gives listening tcp stream and socket ports a client interface on loopback for 0.0.0.0', async () => {
    const s = iface({ kind: 'stream', listen: 'tcp:0.0.0.0:5555' });
    assert.match(s.xml, /^<interface type='client'>\n/);
    assert.match(s.xml, /<source address='127.0.0.1' port='5555'\/>/);
    assert.deepEqual(s.notes, []);
    assert.equal(s.domain, undefined);
    await assertValid(s, 'stream-listen');
    const k = iface({ kind: 'socket', listen: 'tcp:10.0.0.1:5556' });
    assert.match(k.xml, /<interface type='client'>[\s\S]*<source address='10.0.0.1' port='5556'\/>/);
    await assertValid(k, 'socket-listen');
  });

  test('gives dialling tcp stream and socket ports a server interface where the VM listens', async () => {
    const s = iface({ kind: 'stream', connect: 'tcp:127.0.0.1:5557' });
    assert.match(s.xml, /<interface type='server'>[\s\S]*<source address='127.0.0.1' port='5557'\/>/);
    await assertValid(s, 'stream-connect');
    const k = iface({ kind: 'socket', connect: 'tcp:192.168.1.5:5558' });
    assert.match(k.xml, /<interface type='server'>[\s\S]*<source address='192.168.1.5' port='5558'\/>/);
    await assertValid(k, 'socket-connect');
  });

  test("gives a udp dgram port a udp interface that sends to the port's local and receives on its remote", async () => {
    const x = iface({ kind: 'dgram', local: 'udp:0.0.0.0:7003', remote: 'udp:127.0.0.1:7004' });
    assert.match(
      x.xml,
      /<interface type='udp'>[\s\S]*<source address='127.0.0.1' port='7003'>\n {4}<local address='127.0.0.1' port='7004'\/>\n {2}<\/source>/,
    );
    await assertValid(x, 'dgram');
  });

  test('escapes XML in paths', async () => {
    const x = iface({ kind: 'vhost-user', listen: "unix:/run/a&b/<it's>.sock" });
    assert.match(x.xml, /path='\/run\/a&amp;b\/&lt;it&apos;s&gt;.sock'/);
    await assertValid(x, 'escaped');
  });

  test("is checked by a validator that refuses what libvirt's schema forbids (an IPv6 client interface)", async () => {
    const bad = { xml: "<interface type='client'><source address='::1' port='5555'/></interface>\n" };
    assert.notEqual((await validateDomain(bad, dir, 'ipv6-client')).code, 0);
  });

  test('refuses what libvirt cannot express, saying what to use instead', () => {
    refusedWith(() => iface({ kind: 'stream', listen: 'unix:/run/vm1.sock' }), /unix stream socket.*qemu:commandline/);
    refusedWith(() => iface({ kind: 'stream', connect: 'tcp:[::1]:5555' }), /IPv4 address, not ::1/);
    refusedWith(() => iface({ kind: 'socket', connect: 'tcp:localhost:5555' }), /IPv4 address, not localhost/);
    refusedWith(
      () => iface({ kind: 'dgram', local: 'unix:/run/a.sock', remote: 'unix:/run/b.sock' }),
      /no unix datagram form/,
    );
    refusedWith(() => iface({ kind: 'dgram', local: 'udp:[::1]:1', remote: 'udp:[::1]:2' }), /IPv4 addresses, not ::1/);
    refusedWith(() => iface({ kind: 'vde', dir: '/run/vde' }), /no VDE interface/);
    refusedWith(() => iface({ kind: 'tap', ifname: 'tap0' }), /tap port joins the host kernel/);
    refusedWith(() => iface({ kind: 'host', ifname: 'eth0' }), /host port joins the host kernel/);
    refusedWith(
      () => libvirtInterface(spec({ kind: 'stream', listen: 'tcp:127.0.0.1:1' }), { mac: MAC, id: 'a b' }),
      /not a libvirt alias/,
    );
  });
});

describe('libvirtDisk', () => {
  test('gives an export on the unix socket an NBD network disk with transport unix', async () => {
    const x = libvirtDisk({ name: 'disk1', readOnly: false, unix: '/run/vmlink/nbd.sock' }, { id: 'disk1' });
    assert.equal(
      x.xml,
      [
        "<disk type='network' device='disk'>",
        "  <driver name='qemu' type='raw'/>",
        "  <source protocol='nbd' name='disk1'>",
        "    <host transport='unix' socket='/run/vmlink/nbd.sock'/>",
        '  </source>',
        "  <target dev='vda' bus='virtio'/>",
        "  <alias name='ua-disk1'/>",
        '</disk>',
        '',
      ].join('\n'),
    );
    await assertValid(x, 'disk-unix');
  });

  test('gives a read-only export over tcp with TLS a host, tls and readonly, and notes where libvirt takes the certificates', async () => {
    const x = libvirtDisk(
      {
        name: 'base.img',
        readOnly: true,
        tcp: { host: '0.0.0.0', port: 10809 },
        tls: { dir: '/etc/pki/qemu', hostname: 'localhost' },
      },
      { id: 'nbd-1', dev: 'vdb' },
    );
    assert.match(x.xml, /<source protocol='nbd' name='base.img' tls='yes' tlsHostname='localhost'>/);
    assert.match(x.xml, /<host name='127.0.0.1' port='10809'\/>/);
    assert.match(x.xml, /<target dev='vdb' bus='virtio'\/>\n {2}<readonly\/>/);
    assert.match(x.notes.join('\n'), /nbd_tls_x509_cert_dir.*\/etc\/pki\/qemu/);
    await assertValid(x, 'disk-tcp-tls');
    await assertValid(
      libvirtDisk({ name: 'd', readOnly: false, tcp: { host: '::1', port: 10809 } }, { id: 'd' }),
      'v6',
    );
  });

  test('refuses a disk when the NBD server listens nowhere', () => {
    refusedWith(() => libvirtDisk({ name: 'd', readOnly: false }, { id: 'd' }), /listens nowhere/);
  });
});
