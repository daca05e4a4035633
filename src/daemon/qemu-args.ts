/**
 * The QEMU 7.2 command-line arguments that attach a VM to a vmlink port:
 * a `-netdev` that mirrors the port's transport and a virtio-net NIC on it.
 *
 * A `vde` port is a VDE switch directory QEMU plugs into (`-netdev vde,sock=DIR`).
 * A `dgram` port over unix datagram sockets gets `local.type=unix,...,remote.type=unix`.
 *
 * The VM's side is the port's opposite: a port that listens gets a netdev
 * that connects (`server=off`, `connect=`), a port that dials gets a netdev
 * that listens (`server=on`, `listen=`), and a dgram port's `local` is the
 * VM's `remote` and vice versa. An unspecified address vmlink binds
 * (0.0.0.0, ::) becomes loopback on the VM's side.
 */
import { createHash } from 'node:crypto';
import type { PortConfig } from '../config/schema.js';
import { VmlinkError } from '../errors.js';
import type { Address } from '../util/address.js';

/** The port cannot be expressed as QEMU 7.2 arguments (or an option is invalid). */
export class QemuArgsError extends VmlinkError {
  override readonly status = 422;
  constructor(port: string, reason: string) {
    super('ERR_QEMU_ARGS', `port "${port}": ${reason}`);
  }
}

export interface QemuArgsOptions {
  /** The NIC's MAC, e.g. from {@link defaultMac}. */
  mac: string;
  /** The netdev id; default: the port name (prefixed with `net-` when it does not start with a letter). */
  id?: string | undefined;
}

const QEMU_ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;
const MAC_RE = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/i;

/** Exactly the QEMU arguments (an argv fragment) that attach a VM to the port `spec`. */
export function qemuArgs(spec: PortConfig, opts: QemuArgsOptions): string[] {
  const id = opts.id ?? (/^[A-Za-z]/.test(spec.name) ? spec.name : `net-${spec.name}`);
  if (!QEMU_ID_RE.test(id))
    throw new QemuArgsError(spec.name, `netdev id "${id}" is not a QEMU id (a letter, then letters, digits, _ . -)`);
  if (!MAC_RE.test(opts.mac) || (Number.parseInt(opts.mac.slice(0, 2), 16) & 1) === 1)
    throw new QemuArgsError(spec.name, `MAC "${opts.mac}" is not a unicast MAC like 52:54:00:12:34:56`);
  if (spec.kind === 'vhost-user') return vhostUserArgs(spec, id, opts.mac.toLowerCase());
  return ['-netdev', netdev(spec, id), '-device', `virtio-net-pci,netdev=${id},mac=${opts.mac.toLowerCase()}`];
}

/**
 * vhost-user: guest RAM must be shared memory vmlink can map (a memfd
 * backend with share=on, made the RAM of the only NUMA node; `-m` repeated so
 * the sizes agree), a chardev for the control socket (QEMU reconnects every
 * second when vmlink listens; QEMU listens when vmlink dials), and
 * `vectors=0`: QEMU 7.2 under TCG crashes in the MSI-X irqfd path of a
 * vhost-user NIC, so the NIC uses INTx. Rings of 1024 entries each way (the
 * most QEMU allows; a transmit ring above 256 only with vhost-user): four
 * times the frames per wake-up of guest or switch.
 */
function vhostUserArgs(spec: Extract<PortConfig, { kind: 'vhost-user' }>, id: string, mac: string): string[] {
  const mb = spec.memory_mb;
  const mq = spec.queues > 1;
  const listening = spec.listen !== undefined;
  const path = qemuValue(((spec.listen ?? spec.connect) as { path: string }).path);
  const chardev = listening
    ? `socket,id=chr-${id},path=${path},reconnect=1`
    : `socket,id=chr-${id},path=${path},server=on,wait=off`;
  return [
    ...['-m', `${mb}M`],
    ...['-object', `memory-backend-memfd,id=mem-${id},size=${mb}M,share=on`],
    ...['-numa', `node,memdev=mem-${id}`],
    ...['-chardev', chardev],
    ...['-netdev', `vhost-user,id=${id},chardev=chr-${id}${mq ? `,queues=${spec.queues}` : ''}`],
    ...[
      '-device',
      `virtio-net-pci,netdev=${id},mac=${mac}${mq ? ',mq=on' : ''},vectors=0,rx_queue_size=1024,tx_queue_size=1024`,
    ],
  ];
}

function netdev(spec: PortConfig, id: string): string {
  const kind: string = spec.kind;
  const name: string = spec.name;
  switch (spec.kind) {
    case 'stream': {
      const listening = spec.listen !== undefined;
      const a = (spec.listen ?? spec.connect) as Extract<Address, { type: 'unix' | 'tcp' }>;
      const addr =
        a.type === 'unix'
          ? `addr.type=unix,addr.path=${qemuValue(a.path)}`
          : `addr.type=inet,addr.host=${qemuValue(listening ? dialable(a.host) : a.host)},addr.port=${a.port}`;
      return `stream,id=${id},server=${listening ? 'off' : 'on'},${addr}`;
    }
    case 'socket': {
      const listening = spec.listen !== undefined;
      const a = (spec.listen ?? spec.connect) as Extract<Address, { type: 'tcp' }>;
      // QEMU 7.2 net/socket.c parses HOST:PORT into a sockaddr_in: IPv4 (or a name) only.
      if (a.host.includes(':'))
        throw new QemuArgsError(
          spec.name,
          `QEMU's -netdev socket takes IPv4 only, not ${a.host}; use kind stream for IPv6`,
        );
      const host = listening ? dialable(a.host) : a.host;
      return `socket,id=${id},${listening ? 'connect' : 'listen'}=${qemuValue(`${host}:${a.port}`)}`;
    }
    case 'dgram': {
      // The VM sends to where vmlink receives, and receives where vmlink sends.
      const vmLocal = spec.remote;
      const vmRemote = spec.local;
      if (vmLocal.type === 'unix' || vmRemote.type === 'unix') {
        // The schema makes both unix when one is: QEMU binds its local path (unlinking a stale file) and sends to remote.
        const path = (x: Address) => (x.type === 'unix' ? x.path : '');
        return (
          `dgram,id=${id},local.type=unix,local.path=${qemuValue(path(vmLocal))},` +
          `remote.type=unix,remote.path=${qemuValue(path(vmRemote))}`
        );
      }
      // QEMU 7.2 net/dgram.c resolves inet hosts into a sockaddr_in: IPv4 (or a name) only.
      if (vmLocal.host.includes(':') || vmRemote.host.includes(':'))
        throw new QemuArgsError(
          spec.name,
          `QEMU 7.2's -netdev dgram takes IPv4 only, not ${vmLocal.host.includes(':') ? vmLocal.host : vmRemote.host}; use an IPv4 address or kind stream`,
        );
      return (
        `dgram,id=${id},local.type=inet,local.host=${qemuValue(vmLocal.host)},local.port=${vmLocal.port},` +
        `remote.type=inet,remote.host=${qemuValue(dialable(vmRemote.host))},remote.port=${vmRemote.port}`
      );
    }
  }
  if (spec.kind === 'vde') return `vde,id=${id},sock=${qemuValue(spec.dir)}`;
  if (spec.kind === 'host')
    throw new QemuArgsError(
      spec.name,
      `a host port bridges the interface ${spec.ifname} to the switch, not a VM; give the VM a stream, socket, dgram or vde port`,
    );
  if (spec.kind === 'tap')
    throw new QemuArgsError(
      spec.name,
      'a tap port joins the host kernel (a namespace or container) to the switch, not a VM; give the VM a stream, socket, dgram or vde port',
    );
  throw new QemuArgsError(name, `kind "${kind}" has no QEMU netdev; use stream, socket, dgram, vde or vhost-user`);
}

/** An address vmlink binds, as a peer should dial it: the unspecified address means this host. */
function dialable(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::' || host === '0:0:0:0:0:0:0:0') return '::1';
  return host;
}

/** QEMU option syntax: a comma inside a value is written as two commas. */
function qemuValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/**
 * A stable, locally administered unicast MAC for a port name:
 * 52:54:00 (QEMU's prefix, itself locally administered) and three bytes of SHA-256(name).
 */
export function defaultMac(portName: string): string {
  const h = createHash('sha256').update(portName).digest();
  const tail = [h[0], h[1], h[2]].map((b) => (b as number).toString(16).padStart(2, '0'));
  return `52:54:00:${tail.join(':')}`;
}

const SAFE_RE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** One POSIX shell line for an argv: words with special characters are single-quoted. */
export function shellQuote(args: readonly string[]): string {
  return args.map((a) => (a !== '' && SAFE_RE.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(' ');
}
