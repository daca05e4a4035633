/**
 * The storage part of the configuration schema: the NBD server (`storage:`)
 * and its exports (`exports:`). Like networks and ports, an export added over
 * the API is validated by the same schema as one declared in the file.
 */
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { type Address, parseAddress } from '../util/address.js';
import { allowedClientsSchema, isClient, limitSchema } from './admission-schema.js';
import { socketAccessSchema } from './socket-schema.js';

/** Export names as NBD clients ask for them (src/storage/exports.ts accepts the same). */
const EXPORT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * Where the NBD server listens when `storage.listen` is not given: beside the
 * control socket, named after it, so that daemons with different control
 * sockets never share one: `/run/vmlink/vmlink.sock` (the default) gives
 * `/run/vmlink/nbd.sock`, `/run/vmlink/a.sock` gives `/run/vmlink/a.nbd.sock`.
 */
export function defaultNbdSocket(control: string): string {
  const name = basename(control).replace(/\.sock$/, '');
  return join(dirname(control), name === 'vmlink' ? 'nbd.sock' : `${name}.nbd.sock`);
}

/** Largest device we accept: 2^53 bytes, the largest offset a number holds exactly. */
const MAX_SIZE = 2 ** 53;

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** Parses `1073741824`, `64M`, `1G`, `1GiB`, `512K` into bytes (binary units); an error string otherwise. */
export function parseSize(input: number | string): number | string {
  const text = String(input).trim();
  const m = /^(\d+)\s*([KMGTP]?)(?:i?B)?$/i.exec(text);
  const n = m ? Number(m[1]) * (UNITS[(m[2] as string).toUpperCase()] as number) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_SIZE) {
    return `"${text}" is not a size in bytes from 1 to 2^53, written as a whole number with an optional unit K, M, G, T, P (e.g. 64M, 1G)`;
  }
  return n;
}

/** A device size: a byte count or a string with a binary unit, parsed into bytes. */
export const sizeSchema = z.union([z.number(), z.string()]).transform((v, ctx): number => {
  const n = parseSize(v);
  if (typeof n === 'string') {
    ctx.addIssue({ code: 'custom', message: n });
    return z.NEVER;
  }
  return n;
});

const nbdAddress = z.string().transform((text, ctx): Extract<Address, { type: 'unix' | 'tcp' }> => {
  const a = parseAddress(text, ['unix', 'tcp']);
  if (typeof a === 'string') {
    ctx.addIssue({ code: 'custom', message: a });
    return z.NEVER;
  }
  return a as Extract<Address, { type: 'unix' | 'tcp' }>;
});

const absolutePath = (field: string) => z.string().startsWith('/', `${field} must be an absolute path`);

const fileBackend = z.strictObject({
  type: z.literal('file'),
  /** Raw image file. */
  path: absolutePath('path'),
  /** Create the image with this size when it does not exist; an existing image keeps its size. */
  size: sizeSchema.optional(),
});

const memoryBackend = z.strictObject({
  type: z.literal('memory'),
  /** Device size (sparse; lost when the daemon stops). */
  size: sizeSchema,
});

const remoteBackend = z.strictObject({
  type: z.literal('remote'),
  /** The NBD server holding the data: `unix:/path.sock` or `tcp:HOST:PORT`. */
  address: nbdAddress,
  /** Export name on the remote server; default the remote's default export. */
  export: z.string().max(4096).optional(),
});

/** A backend as written in the config: `{ type: file|memory|remote|cow, ... }`. */
export type BackendConfig =
  | z.output<typeof fileBackend>
  | z.output<typeof memoryBackend>
  | z.output<typeof remoteBackend>
  | {
      type: 'cow';
      base: BackendConfig;
      overlay: BackendConfig;
      block_size?: number | undefined;
      bitmap_path?: string | undefined;
    };

const BACKEND_TYPES = 'file, memory, remote, cow';

export const backendSchema: z.ZodType<BackendConfig> = z.lazy(() =>
  z.discriminatedUnion('type', [fileBackend, memoryBackend, remoteBackend, cowBackend], {
    error: (iss) => (iss.code === 'invalid_union' ? `type must be one of: ${BACKEND_TYPES}` : undefined),
  }),
);

const cowBackend = z.strictObject({
  type: z.literal('cow'),
  /** Read-only base image. */
  base: backendSchema,
  /** Where written blocks go (at least the size of the base). */
  overlay: backendSchema,
  /** Copy-up granularity in bytes (a power of two, 512 B - 64 MiB); default 64 KiB. */
  block_size: z
    .number()
    .int()
    .min(512)
    .max(64 * 2 ** 20)
    .refine((n) => (n & (n - 1)) === 0, 'block_size must be a power of two')
    .optional(),
  /** File that keeps the bitmap of written blocks across restarts; default none (kept in memory). */
  bitmap_path: absolutePath('bitmap_path').optional(),
});

/** `10.0.0.0/8`, `192.0.2.7`, `fd00::/64`: an address or network a TCP client may come from. */
const clientSchema = z
  .string()
  .refine(isClient, 'must be an IP address or a CIDR network like 10.0.0.0/8 or fd00::/64');

export const exportSchema = z.strictObject({
  /** Export name as NBD clients ask for it. */
  name: z
    .string()
    .regex(EXPORT_NAME_RE, "export names are 1-64 characters: letters, digits, '_', '.', '-' (not first)"),
  /** Where the bytes live. */
  backend: backendSchema,
  /** Serve read-only: writes, trims and zeroes fail with EPERM; default false. */
  read_only: z.boolean().default(false),
  /** DWRR weight: share of backend service relative to other exports (0.001-1000000); default 1. */
  weight: z.number().min(0.001, 'weight must be at least 0.001').max(1e6, 'weight must be at most 1000000').default(1),
  /** Shown to clients by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description: z.string().max(4096).optional(),
  /** TCP clients allowed (addresses or CIDRs); unix-socket clients are always allowed. Default: every client. */
  allowed_clients: z.array(clientSchema).max(1024).optional(),
  /** Serve only to clients that started TLS (needs `storage.tls`); left out of unencrypted lists; default false. */
  tls_only: z.boolean().optional(),
});
export type ExportConfig = z.output<typeof exportSchema>;

/** A whole number in [min, max], with a message naming the field and the range. */
const range = (field: string, min: number, max: number) => {
  const msg = `${field} must be a whole number ${min}-${max}`;
  return z.number(msg).int(msg).min(min, msg).max(max, msg);
};

/** `storage.tls`: TLS for NBD clients (NBD_OPT_STARTTLS). */
const tlsSchema = z
  .strictObject({
    /** PEM server certificate (chain). */
    cert: absolutePath('cert'),
    /** PEM private key of `cert`. */
    key: absolutePath('key'),
    /** PEM CA that signs client certificates (needed with verify_clients). */
    ca: absolutePath('ca').optional(),
    /** Refuse clients without a certificate signed by `ca`; default false. */
    verify_clients: z.boolean().default(false),
    /** `required`: no option but STARTTLS before TLS; `optional`: only `tls_only` exports need it; default required. */
    mode: z.enum(['required', 'optional'], 'mode must be required or optional').default('required'),
    /** For `vmlink disk-args`: QEMU's directory of ca-cert.pem, client-cert.pem, client-key.pem; default /etc/pki/qemu. */
    client_dir: absolutePath('client_dir').default('/etc/pki/qemu'),
    /** For `vmlink disk-args`: the name QEMU checks the server certificate against; default localhost. */
    hostname: z.string().min(1).max(253).default('localhost'),
  })
  .refine((t) => !t.verify_clients || t.ca !== undefined, {
    message: 'verify_clients needs ca: the CA certificate that signs client certificates',
    path: ['ca'],
  });

export const storageSchema = z.strictObject({
  /** Where the NBD server listens: `unix:/path.sock` and `tcp:HOST:PORT`; default beside the control socket ({@link defaultNbdSocket}). */
  listen: z.array(nbdAddress).min(1, 'give at least one listen address').optional(),
  /** Requests in flight per client before its socket is paused (backpressure); default 64. */
  max_in_flight_per_client: range('max_in_flight_per_client', 1, 4096).default(64),
  /** Requests executing in backends at once, over all clients; default 64. */
  concurrency: range('concurrency', 1, 4096).default(64),
  /** TCP client connections at once (over all TCP listen addresses); default 1024. docs/storage.md "Admission". */
  max_connections: range('max_connections', 1, 65536).default(1024),
  /** TCP client connections at once from one source address (IPv6: one /64); default 64. */
  max_connections_per_source: limitSchema('storage.max_connections_per_source', 'connections', 1, 65536).default(64),
  /** Unix-socket client connections at once (a budget apart from TCP's); default 1024. */
  max_unix_connections: limitSchema('storage.max_unix_connections', 'connections', 1, 65536).default(1024),
  /** A client must finish the NBD handshake (TLS included) within this many ms, or it is closed; default 10000. */
  handshake_timeout_ms: limitSchema('storage.handshake_timeout_ms', 'ms', 100, 600_000).default(10_000),
  /** TCP client addresses or networks that may connect at all (checked at accept); default every address. */
  allowed_clients: allowedClientsSchema('storage.allowed_clients').optional(),
  /** A backend not open within this many ms (a remote that never answers) counts as failed; default 10000. */
  backend_open_timeout_ms: range('backend_open_timeout_ms', 100, 600_000).default(10_000),
  /** TLS for clients (STARTTLS); default none. */
  tls: tlsSchema.optional(),
  /** Mode, owner and group of the server's unix sockets; default mode "0600" (docs/daemon.md). */
  socket: socketAccessSchema.optional(),
  /**
   * Directories file, cow and bitmap paths of exports must lie in (symlinks
   * and `..` resolved); default `<host.state_dir>/exports` (docs/storage.md).
   */
  roots: z.array(absolutePath('roots')).min(1, 'give at least one directory in roots').max(64).optional(),
  /**
   * Most bytes all memory exports may declare together (their sizes summed);
   * default a quarter of the host's RAM.
   */
  memory_limit: sizeSchema.optional(),
});
export type StorageConfig = z.output<typeof storageSchema>;
