/**
 * The configuration schema (zod). One source of truth for the YAML config
 * file and for the bodies of the control API: a network or port added over
 * the API is validated by the same schema as one declared in the file.
 */
import { z } from 'zod';
import { type Address, parseAddress } from '../util/address.js';
import { parseMac } from '../util/mac.js';
import { limitSchema } from './admission-schema.js';
import { clusterSchema } from './cluster-schema.js';
import { httpSchema } from './http-schema.js';
import { linkSchema, overlaySchema } from './overlay-schema.js';
import { portQosSchema } from './qos-schema.js';
import { socketAccessSchema } from './socket-schema.js';
import { exportSchema, storageSchema } from './storage-schema.js';

export {
  type BackendConfig,
  defaultNbdSocket,
  type ExportConfig,
  exportSchema,
  parseSize,
  type StorageConfig,
} from './storage-schema.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const nameSchema = (what: string) =>
  z.string().regex(NAME_RE, `${what} names are 1-32 characters: letters, digits, '_', '.', '-' (not first)`);

/** A field holding a transport address of the given types, parsed into an {@link Address}. */
const address = <T extends Address['type']>(...types: T[]) =>
  z.string().transform((text, ctx): Extract<Address, { type: T }> => {
    const a = parseAddress(text, types);
    if (typeof a === 'string') {
      ctx.addIssue({ code: 'custom', message: a });
      return z.NEVER;
    }
    return a as Extract<Address, { type: T }>;
  });

const unicastMac = z.string().refine((s) => {
  const m = parseMac(s);
  return m !== undefined && Math.floor(m / 2 ** 40) % 2 === 0;
}, 'must be a unicast MAC like 52:54:00:12:34:56');

export const networkSchema = z.strictObject({
  /** Unique network name. */
  name: nameSchema('network'),
  /** 24-bit virtual network identifier (also the VXLAN VNI). */
  vni: z.number().int().min(1, 'vni must be 1-16777215').max(0xffffff, 'vni must be 1-16777215'),
  /** Largest Ethernet payload in bytes; default 1500. */
  mtu: z.number().int().min(68, 'mtu must be at least 68').max(65535, 'mtu must be at most 65535').default(1500),
});
export type NetworkConfig = z.infer<typeof networkSchema>;

const reconnectSchema = z.strictObject({
  /** First re-dial delay in ms; default 100. */
  min_ms: z.number().int().min(10).max(60_000).default(100),
  /** Largest re-dial delay in ms (exponential backoff with jitter); default 5000. */
  max_ms: z.number().int().min(10).max(600_000).default(5000),
});

const common = {
  /** Unique port name on this host. */
  name: nameSchema('port'),
  /** Access port: the network it joins (frames untagged). */
  network: nameSchema('network').optional(),
  /** Trunk port: 802.1Q VLAN id -> network; `native` takes untagged frames. */
  trunk: z
    .strictObject({
      vlans: z.record(
        z.string().regex(/^(?:[1-9]\d{0,2}|[1-3]\d{3}|40[0-8]\d|409[0-4])$/, 'VLAN ids are 1-4094'),
        nameSchema('network'),
      ),
      native: nameSchema('network').optional(),
    })
    .optional(),
  /** Only frames from these source MACs are accepted. */
  allowed_macs: z.array(unicastMac).max(4096).optional(),
  /** Most MACs learned on this port; default 1024. */
  max_macs: z.number().int().min(1).max(65536).optional(),
  /** Broadcast/multicast storm control: frames per second and burst (frames). */
  storm: z.strictObject({ pps: z.number().positive().max(1e9), burst: z.number().int().min(1).max(1e6) }).optional(),
  /** Egress queue length in frames (tail drop beyond); default 1024. */
  queue_len: z
    .number()
    .int()
    .min(1)
    .max(1 << 20)
    .optional(),
  /** MAC the VM should use (for `vmlink qemu-args`); default: first allowed MAC, or one derived from the name. */
  mac: unicastMac.optional(),
  /** QoS policy: rates, reservation, weight, class, egress capacity (docs/qos.md). */
  qos: portQosSchema.optional(),
};

const streamPort = z.strictObject({
  ...common,
  kind: z.literal('stream'),
  /** vmlink listens; QEMU connects (`-netdev stream,server=off`). */
  listen: address('unix', 'tcp').optional(),
  /** vmlink dials QEMU's `server=on` socket, and re-dials with backoff. */
  connect: address('unix', 'tcp').optional(),
  reconnect: reconnectSchema.optional(),
  /** Mode, owner and group of the unix socket vmlink creates for this port (default mode "0600"); docs/daemon.md. */
  socket: socketAccessSchema.optional(),
});

const socketPort = z.strictObject({
  ...common,
  kind: z.literal('socket'),
  /** vmlink listens; QEMU `-netdev socket,connect=...`. */
  listen: address('tcp').optional(),
  /** vmlink dials QEMU `-netdev socket,listen=...`, re-dialling with backoff. */
  connect: address('tcp').optional(),
  reconnect: reconnectSchema.optional(),
});

const dgramPort = z.strictObject({
  ...common,
  kind: z.literal('dgram'),
  /** Where vmlink receives (QEMU's `remote`): `udp:HOST:PORT`, or `unix:/path` (a unix datagram socket vmlink binds). */
  local: address('udp', 'unix'),
  /** Where vmlink sends (QEMU's `local`): the same type as `local`. */
  remote: address('udp', 'unix'),
  /** Mode, owner and group of the unix socket vmlink creates for this port (default mode "0600"); docs/daemon.md. */
  socket: socketAccessSchema.optional(),
});

const hostPort = z.strictObject({
  ...common,
  kind: z.literal('host'),
  /** An existing host interface (e.g. eth0) bridged to the network with an AF_PACKET socket (promiscuous). */
  ifname: z
    .string()
    .regex(/^(?!\.{1,2}$)[^\s/:%]+$/, "ifname must not contain '/', ':', '%' or spaces")
    .refine((s) => Buffer.byteLength(s) <= 15, 'ifname must be 1-15 bytes'),
});

const tapPort = z.strictObject({
  ...common,
  kind: z.literal('tap'),
  /** Interface name, 1-15 bytes; `%d` lets the kernel number it (e.g. `vmtap%d`). */
  ifname: z
    .string()
    .regex(/^(?!\.{1,2}$)[^\s/:%]*(?:%d)?[^\s/:%]*$/, "ifname must not contain '/', ':', spaces or '%' (except one %d)")
    .refine((s) => s.length > 0 && Buffer.byteLength(s) <= 15, 'ifname must be 1-15 bytes'),
  /** true: create the TAP (attach if it exists); false: attach to an existing persistent TAP. Default true. */
  create: z.boolean().default(true),
  /** Interface MTU in bytes, set at open; default: the kernel's (1500). */
  mtu: z.number().int().min(68, 'mtu must be at least 68').max(65521, 'mtu must be at most 65521').optional(),
  /** Bring the interface up at open; default true. */
  up: z.boolean().default(true),
  /** Carry a virtio_net_hdr per frame (IFF_VNET_HDR); default false. */
  vnet_hdr: z.boolean().default(false),
  /** With vnet_hdr: ask the kernel for checksum/TSO/USO offloads, so large segments pass whole; default true. */
  offloads: z.boolean().optional(),
});

const vdePort = z.strictObject({
  ...common,
  kind: z.literal('vde'),
  /** Directory vmlink serves as a VDE switch (`vde_plug DIR`, QEMU `-netdev vde,sock=DIR`); created when missing. */
  dir: z
    .string()
    .startsWith('/', 'dir must be an absolute path')
    .refine((s) => Buffer.byteLength(s) <= 96, 'dir must be at most 96 bytes (unix socket paths are short)'),
  /** Mode, owner and group of the switch's sockets in `dir` (and of `dir` when vmlink creates it); default "0600". */
  socket: socketAccessSchema.optional(),
});

const vhostUserPort = z.strictObject({
  ...common,
  kind: z.literal('vhost-user'),
  /** vmlink listens on this unix socket; QEMU connects (`-chardev socket,...,reconnect=N`). */
  listen: address('unix').optional(),
  /** vmlink dials QEMU's `server=on` chardev socket, and re-dials with backoff. */
  connect: address('unix').optional(),
  reconnect: reconnectSchema.optional(),
  /** Mode, owner and group of the unix socket vmlink creates for this port (default mode "0600"); docs/daemon.md. */
  socket: socketAccessSchema.optional(),
  /** The VM's RAM in MiB: `vmlink qemu-args` sizes the shared memory backend (and -m) with it; default 1024. */
  memory_mb: z
    .number()
    .int()
    .min(16, 'memory_mb must be at least 16')
    .max(1 << 20)
    .default(1024),
  /** Queue pairs the VM's NIC gets from `vmlink qemu-args` (multiqueue); 1-8, default 1. */
  queues: z.number().int().min(1, 'queues must be 1-8').max(8, 'queues must be 1-8').default(1),
  /**
   * Backpressure: how long this guest, with its receive ring full, may hold
   * up co-resident senders whose frames all go to it without taking any
   * (ms); 0 turns it off (frames wait in the backlog, dropped when it fills).
   */
  hold_ms: z.number().int().min(0, 'hold_ms must be 0-60000').max(60_000, 'hold_ms must be 0-60000').default(100),
});

export const portSchema = z
  .discriminatedUnion('kind', [streamPort, socketPort, dgramPort, tapPort, vdePort, hostPort, vhostUserPort], {
    error: (iss) =>
      iss.code === 'invalid_union'
        ? `kind must be one of: stream, socket, dgram, tap, vde, host, vhost-user`
        : undefined,
  })
  .superRefine((p, ctx) => {
    if ((p.network === undefined) === (p.trunk === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['network'],
        message: 'give exactly one of network (access port) or trunk',
      });
    }
    if (
      (p.kind === 'stream' || p.kind === 'socket' || p.kind === 'vhost-user') &&
      (p.listen === undefined) === (p.connect === undefined)
    ) {
      ctx.addIssue({ code: 'custom', path: ['listen'], message: 'give exactly one of listen or connect' });
    }
    if ('socket' in p && p.socket !== undefined && !createsUnixSocket(p)) {
      ctx.addIssue({
        code: 'custom',
        path: ['socket'],
        message:
          'socket (mode, owner, group) applies to a unix socket vmlink creates: listen: "unix:..." (or a unix dgram local:); remove it here',
      });
    }
    if (p.kind === 'dgram' && p.local.type !== p.remote.type) {
      ctx.addIssue({
        code: 'custom',
        path: ['remote'],
        message: `local is ${p.local.type}: and remote is ${p.remote.type}:; give both as udp: or both as unix:`,
      });
    }
  });
export type PortConfig = z.infer<typeof portSchema>;

export const hostSchema = z.strictObject({
  /** Host id, unique in the fabric. */
  id: nameSchema('host'),
  /** Control API unix socket (mode 0600); default /run/vmlink/vmlink.sock (`vmlink daemon --control` overrides). */
  control: z.string().startsWith('/', 'control must be an absolute socket path').default('/run/vmlink/vmlink.sock'),
  /** Mode, owner and group of the control socket; default mode "0600" (whoever may connect controls the daemon). */
  control_socket: socketAccessSchema.optional(),
  /** Control API connections at once (docs/api.md "Admission"); default 64. */
  control_max_connections: limitSchema('host.control_max_connections', 'connections', 1, 65536).default(64),
  /** A control API client must send a request's headers within this many ms, or it is closed; default 10000. */
  control_headers_timeout_ms: limitSchema('host.control_headers_timeout_ms', 'ms', 100, 300_000).default(10_000),
  /** Where the embedded state store keeps `state.json` and `state.journal` (directory mode 0700); default /var/lib/vmlink. */
  state_dir: z.string().startsWith('/', 'state_dir must be an absolute path').default('/var/lib/vmlink'),
  /** MAC aging time in seconds; default 300. */
  aging_sec: z.number().int().min(1).max(1_000_000).default(300),
});

/** Default of `limits.networks`. */
export const DEFAULT_MAX_NETWORKS = 4096;

export const limitsSchema = z.strictObject({
  /**
   * Most networks on this host (config, API and stored together); default
   * 4096, at most 65536. Each network costs a link port per overlay link
   * and an entry in every link's network list: the cap bounds both.
   */
  networks: z.number().int().min(1).max(65_536).default(DEFAULT_MAX_NETWORKS),
});

export const configSchema = z
  .strictObject({
    host: hostSchema,
    /** Caps of this host's resources. */
    limits: limitsSchema.default({ networks: DEFAULT_MAX_NETWORKS }),
    networks: z.array(networkSchema).default([]),
    ports: z.array(portSchema).default([]),
    /** The NBD server; it runs when this section is given or when `exports` is not empty. */
    storage: storageSchema.optional(),
    /** Block devices served over NBD. */
    exports: z.array(exportSchema).default([]),
    /** Links to other daemons: this host's listener and TLS material (docs/overlay.md). */
    overlay: overlaySchema.optional(),
    /** Peers to dial. */
    links: z.array(linkSchema).default([]),
    /** Membership of a fabric whose state lives in etcd (docs/cluster.md); absent: a single host. */
    cluster: clusterSchema.optional(),
    /** The read-only HTTP endpoint: metrics, events, the dashboard (docs/observe.md); absent: off. */
    http: httpSchema.optional(),
    log: z.strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']) }).optional(),
  })
  .superRefine((c, ctx) => {
    if (c.networks.length > c.limits.networks)
      ctx.addIssue({
        code: 'custom',
        path: ['networks'],
        message: `${c.networks.length} networks are declared, more than limits.networks allows (${c.limits.networks}); declare fewer, or raise limits.networks (up to 65536)`,
      });
    const nets = new Map<string, number>();
    const vnis = new Map<number, string>();
    c.networks.forEach((n, i) => {
      if (nets.has(n.name))
        ctx.addIssue({ code: 'custom', path: ['networks', i, 'name'], message: `duplicate network name "${n.name}"` });
      const other = vnis.get(n.vni);
      if (other !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['networks', i, 'vni'],
          message: `vni ${n.vni} is already used by network "${other}"`,
        });
      nets.set(n.name, i);
      vnis.set(n.vni, n.name);
    });
    const names = new Set<string>();
    c.ports.forEach((p, i) => {
      if (names.has(p.name))
        ctx.addIssue({ code: 'custom', path: ['ports', i, 'name'], message: `duplicate port name "${p.name}"` });
      names.add(p.name);
      for (const [path, net] of portNetworkRefs(p)) {
        if (!nets.has(net)) {
          ctx.addIssue({
            code: 'custom',
            path: ['ports', i, ...path],
            message: `network "${net}" is not declared under networks (declared: ${[...nets.keys()].join(', ') || 'none'})`,
          });
        }
      }
    });
    if (c.links.length && !c.overlay)
      ctx.addIssue({
        code: 'custom',
        path: ['overlay'],
        message: 'links need an overlay section (tls {ca, cert, key}, or plain: true on a trusted lab network)',
      });
    const linkNames = new Set<string>();
    c.links.forEach((l, i) => {
      if (l.connect.type === 'udp' && c.overlay && !c.overlay.vxlan)
        ctx.addIssue({
          code: 'custom',
          path: ['links', i, 'connect'],
          message: 'a udp: link is a VXLAN link: add overlay.vxlan (e.g. vxlan: { listen: "udp:0.0.0.0:4789" })',
        });
      if (linkNames.has(l.name))
        ctx.addIssue({ code: 'custom', path: ['links', i, 'name'], message: `duplicate link name "${l.name}"` });
      linkNames.add(l.name);
    });
    const exportNames = new Set<string>();
    c.exports.forEach((e, i) => {
      if (exportNames.has(e.name))
        ctx.addIssue({ code: 'custom', path: ['exports', i, 'name'], message: `duplicate export name "${e.name}"` });
      exportNames.add(e.name);
    });
  });

export type Config = z.infer<typeof configSchema>;

/** True when the port binds a unix socket of its own (where `socket:` settings apply). */
function createsUnixSocket(p: PortConfig): boolean {
  switch (p.kind) {
    case 'stream':
    case 'vhost-user':
      return p.listen?.type === 'unix';
    case 'dgram':
      return p.local.type === 'unix';
    case 'vde':
      return true;
    default:
      return false;
  }
}

/** Every network a port refers to, with the field path that names it. */
export function portNetworkRefs(p: PortConfig): [(string | number)[], string][] {
  const refs: [(string | number)[], string][] = [];
  if (p.network !== undefined) refs.push([['network'], p.network]);
  if (p.trunk) {
    for (const [vid, net] of Object.entries(p.trunk.vlans)) refs.push([['trunk', 'vlans', vid], net]);
    if (p.trunk.native !== undefined) refs.push([['trunk', 'native'], p.trunk.native]);
  }
  return refs;
}
