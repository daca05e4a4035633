/**
 * libvirt domain XML for the device that attaches a VM to a vmlink port
 * (`<interface>`) or to an export (`<disk type='network'>`), the libvirt
 * twin of qemu-args.ts and export-specs.ts `diskArgs`. Element and attribute
 * names as in libvirt's schema (domaincommon.rng, libvirt 9.0):
 *
 * - vhost-user: `<interface type='vhostuser'>` with `<source type='unix'
 *   path mode>`; `mode` is QEMU's side: `client` when vmlink listens (with
 *   `<reconnect>`, as qemu-args' `reconnect=1`), `server` when vmlink dials.
 *   The guest RAM must be shared memory: the `<memoryBacking>` the domain
 *   needs is returned apart (`domain`).
 * - stream (TCP, IPv4) and socket ports: `type='client'` (QEMU connects: the
 *   port listens) or `type='server'` (QEMU listens: the port dials). libvirt
 *   runs `-netdev socket`, whose framing (a 4-byte big-endian length before
 *   each frame) is the one `-netdev stream` and vmlink's stream port speak.
 * - dgram (UDP, IPv4): `type='udp'`; `<source>` is where the VM sends (the
 *   port's `local`), `<local>` where it receives (the port's `remote`).
 *
 * libvirt has no interface on a unix stream or datagram socket, no VDE and
 * no IPv6 for these types: those are refused with what to use instead.
 */
import type { PortConfig } from '../config/schema.js';
import { VmlinkError } from '../errors.js';
import type { Address } from '../util/address.js';

/** The port or export has no libvirt form (or an option is invalid). */
export class LibvirtXmlError extends VmlinkError {
  override readonly status = 422;
  constructor(what: string, reason: string) {
    super('ERR_LIBVIRT_XML', `${what}: ${reason}`);
  }
}

/** A device element and what the domain around it needs. */
export interface LibvirtXml {
  /** The device element (`<interface>` or `<disk>`), indented, ending with a newline. */
  xml: string;
  /** Elements the `<domain>` needs for this device (vhost-user: shared memory), or undefined. */
  domain?: string;
  /** What the XML cannot say and the operator has to do, one sentence each. */
  notes: string[];
}

const IPV4_RE = /^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$/;
/** libvirt's aliasName; user aliases must start with `ua-`. */
const ALIAS_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/** An XML attribute value (quoted with '). */
function attr(v: string | number): string {
  return String(v)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll("'", '&apos;')
    .replaceAll('"', '&quot;');
}

function alias(what: string, id: string): string {
  if (!ALIAS_RE.test(id))
    throw new LibvirtXmlError(what, `id "${id}" is not a libvirt alias (letters, digits, '_', '.', '-')`);
  return `  <alias name='ua-${attr(id)}'/>`;
}

/** An address vmlink binds, as the VM dials it: the unspecified address means this host. */
function dialable(host: string): string {
  return host === '0.0.0.0' ? '127.0.0.1' : host;
}

/** `<interface>` for a port. `mac`: the guest NIC's MAC; `id`: the device alias (`ua-ID`). */
export function libvirtInterface(spec: PortConfig, opts: { mac: string; id: string }): LibvirtXml {
  const what = `port "${spec.name}"`;
  const mac = `  <mac address='${attr(opts.mac.toLowerCase())}'/>`;
  const model = "  <model type='virtio'/>";
  const name = alias(what, opts.id);
  const wrap = (type: string, source: string[], driver: string[] = []) =>
    `${[`<interface type='${type}'>`, mac, ...source, model, ...driver, name, '</interface>'].join('\n')}\n`;
  switch (spec.kind) {
    case 'vhost-user': {
      const listening = spec.listen !== undefined;
      const path = ((spec.listen ?? spec.connect) as { path: string }).path;
      // QEMU's role: it connects (and reconnects every second) when vmlink listens.
      const source = listening
        ? [
            `  <source type='unix' path='${attr(path)}' mode='client'>`,
            "    <reconnect enabled='yes' timeout='1'/>",
            '  </source>',
          ]
        : [`  <source type='unix' path='${attr(path)}' mode='server'/>`];
      const driver = `  <driver queues='${spec.queues}' rx_queue_size='1024' tx_queue_size='1024'/>`;
      const domain =
        `<memory unit='MiB'>${spec.memory_mb}</memory>\n` +
        '<memoryBacking>\n' +
        "  <source type='memfd'/>\n" +
        "  <access mode='shared'/>\n" +
        '</memoryBacking>\n';
      return {
        xml: wrap('vhostuser', source, [driver]),
        domain,
        notes: [
          `vhost-user maps the guest RAM: the domain needs <memoryBacking> with <access mode='shared'/> (memfd), and ${spec.memory_mb} MiB of memory as the port's memory_mb says`,
        ],
      };
    }
    case 'stream':
    case 'socket': {
      const listening = spec.listen !== undefined;
      const a = (spec.listen ?? spec.connect) as Address;
      if (a.type === 'unix')
        throw new LibvirtXmlError(
          what,
          `libvirt has no interface on a unix stream socket (${a.path}); listen or connect on tcp:IPv4:PORT, use a vhost-user port, or pass \`vmlink qemu-args ${spec.name}\` through <qemu:commandline>`,
        );
      const host = listening ? dialable(a.host) : a.host;
      if (!IPV4_RE.test(host))
        throw new LibvirtXmlError(
          what,
          `libvirt's <interface type='${listening ? 'client' : 'server'}'> takes an IPv4 address, not ${host}; give the port an IPv4 address`,
        );
      const port = (a as { port: number }).port;
      // The VM's side is the port's opposite: a listening port gets a VM that connects.
      return {
        xml: wrap(listening ? 'client' : 'server', [`  <source address='${attr(host)}' port='${port}'/>`]),
        notes: [],
      };
    }
    case 'dgram': {
      const vmRemote = spec.local; // where vmlink receives
      const vmLocal = spec.remote; // where vmlink sends
      if (vmRemote.type === 'unix' || vmLocal.type === 'unix')
        throw new LibvirtXmlError(
          what,
          "libvirt's <interface type='udp'> has no unix datagram form; give the port udp:IPv4:PORT addresses, or pass `vmlink qemu-args` through <qemu:commandline>",
        );
      const remoteHost = dialable(vmRemote.host);
      for (const h of [remoteHost, vmLocal.host])
        if (!IPV4_RE.test(h))
          throw new LibvirtXmlError(
            what,
            `libvirt's <interface type='udp'> takes IPv4 addresses, not ${h}; give the port IPv4 addresses`,
          );
      return {
        xml: wrap('udp', [
          `  <source address='${attr(remoteHost)}' port='${vmRemote.port}'>`,
          `    <local address='${attr(vmLocal.host)}' port='${vmLocal.port}'/>`,
          '  </source>',
        ]),
        notes: [],
      };
    }
    case 'vde':
      throw new LibvirtXmlError(
        what,
        `libvirt has no VDE interface; use a vhost-user, stream (tcp) or dgram (udp) port, or pass \`vmlink qemu-args ${spec.name}\` through <qemu:commandline>`,
      );
    case 'host':
    case 'tap':
      throw new LibvirtXmlError(
        what,
        `a ${spec.kind} port joins the host kernel to the switch, not a VM; give the VM a vhost-user, stream, socket or dgram port`,
      );
  }
}

/** Where and how a disk's NBD client reaches this daemon. */
export interface NbdTarget {
  /** The export name. */
  name: string;
  readOnly: boolean;
  /** The server's unix socket (preferred), else `tcp`. */
  unix?: string | undefined;
  tcp?: { host: string; port: number } | undefined;
  /** Storage TLS: QEMU's client certificate directory and the name to check the server certificate against. */
  tls?: { dir: string; hostname: string } | undefined;
}

/** `<disk type='network'>` with an NBD source for an export, as virtio disk `dev` (default vda). */
export function libvirtDisk(t: NbdTarget, opts: { id: string; dev?: string }): LibvirtXml {
  const what = `export "${t.name}"`;
  let host: string;
  if (t.unix !== undefined) host = `    <host transport='unix' socket='${attr(t.unix)}'/>`;
  else if (t.tcp !== undefined) host = `    <host name='${attr(dialable(t.tcp.host))}' port='${t.tcp.port}'/>`;
  else throw new LibvirtXmlError(what, 'the NBD server listens nowhere; set storage.listen');
  const tls = t.tls ? ` tls='yes' tlsHostname='${attr(t.tls.hostname)}'` : '';
  const dev = opts.dev ?? 'vda';
  const lines = [
    "<disk type='network' device='disk'>",
    "  <driver name='qemu' type='raw'/>",
    `  <source protocol='nbd' name='${attr(t.name)}'${tls}>`,
    host,
    '  </source>',
    `  <target dev='${attr(dev)}' bus='virtio'/>`,
    ...(t.readOnly ? ['  <readonly/>'] : []),
    alias(what, opts.id),
    '</disk>',
  ];
  const notes = [`the disk is ${dev}: change <target dev> when the domain has other virtio disks`];
  if (t.tls)
    notes.push(
      `libvirt takes QEMU's NBD client certificate from nbd_tls_x509_cert_dir in qemu.conf, not from the XML: set it to ${t.tls.dir}`,
    );
  return { xml: `${lines.join('\n')}\n`, notes };
}
