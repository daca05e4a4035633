/**
 * The overlay part of the configuration schema: `overlay:` (this host's link
 * listener, TLS material, relay) and `links:` (peers to dial). A link added
 * over the API is validated by the same {@link linkSchema}. docs/overlay.md.
 */
import { z } from 'zod';
import { type Address, parseAddress } from '../util/address.js';
import { allowedClientsSchema, limitSchema } from './admission-schema.js';
import { linkQosSchema } from './qos-schema.js';

const tcpAddress = z.string().transform((text, ctx): Extract<Address, { type: 'tcp' }> => {
  const a = parseAddress(text, ['tcp']);
  if (typeof a === 'string') {
    ctx.addIssue({ code: 'custom', message: a });
    return z.NEVER;
  }
  return a as Extract<Address, { type: 'tcp' }>;
});

const udpAddress = z.string().transform((text, ctx): Extract<Address, { type: 'udp' }> => {
  const a = parseAddress(text, ['udp']);
  if (typeof a === 'string') {
    ctx.addIssue({ code: 'custom', message: a });
    return z.NEVER;
  }
  return a as Extract<Address, { type: 'udp' }>;
});

const linkAddress = z.string().transform((text, ctx): Extract<Address, { type: 'tcp' | 'udp' }> => {
  const a = parseAddress(text, ['tcp', 'udp']);
  if (typeof a === 'string') {
    ctx.addIssue({ code: 'custom', message: a });
    return z.NEVER;
  }
  return a as Extract<Address, { type: 'tcp' | 'udp' }>;
});

const absPath = (what: string) => z.string().startsWith('/', `${what} must be an absolute path`);

export const overlaySchema = z
  .strictObject({
    /** Where peers connect: `tcp:HOST:PORT`; absent: this host only dials out (a spoke behind a firewall). */
    listen: tcpAddress.optional(),
    /**
     * TLS 1.3 with mutual authentication: the fabric CA and this host's certificate and key (PEM files),
     * or "fabric": the CA and certificate this host gets from `vmlink cluster init` or `join` (links wait until then).
     */
    tls: z
      .union([
        z.literal('fabric'),
        z.strictObject({ ca: absPath('tls.ca'), cert: absPath('tls.cert'), key: absPath('tls.key') }),
      ])
      .optional(),
    /** Plain TCP without authentication or encryption: trusted lab networks only. Default false. */
    plain: z.boolean().default(false),
    /** This host relays frames between its links (the hub of a star). Default false. */
    relay: z.boolean().default(false),
    /**
     * On a relaying host: spoke-to-spoke traffic in bits per second above which the
     * two spokes are asked to open a direct link (where one of them listens). 0: never. Default 10 Mbit/s.
     */
    direct_threshold_bps: z.number().int().min(0).max(1e12).default(10_000_000),
    /**
     * VXLAN (RFC 7348) links: the UDP socket (`udp:HOST:PORT`, default udp:0.0.0.0:4789)
     * and the underlay MTU (default 1500: frames above MTU - 36 bytes are dropped and counted).
     * Unencrypted and unauthenticated, like any VXLAN.
     */
    vxlan: z
      .strictObject({
        listen: udpAddress.default({ type: 'udp', host: '0.0.0.0', port: 4789 } as never),
        mtu: z.number().int().min(576).max(65535).default(1500),
        /**
         * UDP source ports of sent datagrams, one per inner flow (RFC 7348 §5: a hash of the
         * inner headers). Default 49152-65535; min = max = the listen port: all from the listen socket.
         */
        source_ports: z
          .strictObject({ min: z.number().int().min(1).max(65535), max: z.number().int().min(1).max(65535) })
          .refine((r) => r.min <= r.max, { message: 'source_ports: min must not be above max' })
          .optional(),
        /** UDP GSO/GRO and the merging of received TCP frames where the kernel has them. Default true. */
        offloads: z.boolean().default(true),
      })
      .optional(),
    /** Keepalive interval in ms; a link silent for 3 intervals is closed and re-dialled. Default 1000. */
    keepalive_ms: z.number().int().min(100).max(60_000).default(1000),
    /** Re-dial delays in ms (exponential backoff with jitter). */
    reconnect: z
      .strictObject({
        min_ms: z.number().int().min(10).max(60_000).default(100),
        max_ms: z.number().int().min(10).max(600_000).default(5000),
      })
      .optional(),
    /**
     * QoS of the links other hosts dial in on, by the peer's host id (a hub's
     * links down to its spokes): `{ spoke1: { capacity: 20mbit } }`, as `links[].qos`.
     */
    peer_qos: z
      .record(
        z
          .string()
          .regex(
            /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/,
            'peer_qos keys are host ids (1-32 characters: letters, digits, _ . -)',
          ),
        linkQosSchema,
      )
      .optional(),
    /** Inbound link connections at once, in the handshake and established (docs/overlay.md "Admission"). Default 256. */
    max_connections: limitSchema('overlay.max_connections', 'connections', 1, 65536).default(256),
    /** Inbound link connections at once from one source address (IPv6: one /64). Default 8. */
    max_connections_per_source: limitSchema('overlay.max_connections_per_source', 'connections', 1, 65536).default(8),
    /**
     * An inbound connection must finish TLS and send a valid hello within this many ms, or it
     * is closed. 100-9000 (the link protocol itself gives up on a hello after 10 s). Default 5000.
     */
    hello_timeout_ms: limitSchema('overlay.hello_timeout_ms', 'ms', 100, 9000).default(5000),
    /** Source addresses or networks that may connect to the link listener at all; default every address. */
    allowed_clients: allowedClientsSchema('overlay.allowed_clients').optional(),
    /** Bound on bytes queued per link before frames are dropped. Default 8 MiB. */
    queue_bytes: z
      .number()
      .int()
      .min(65536)
      .max(1 << 30)
      .default(8 * 1024 * 1024),
  })
  .superRefine((o, ctx) => {
    if (o.plain && o.tls)
      ctx.addIssue({ code: 'custom', path: ['plain'], message: 'give either tls or plain: true, not both' });
    if (!o.plain && !o.tls)
      ctx.addIssue({
        code: 'custom',
        path: ['tls'],
        message:
          'links use TLS by default: give tls {ca, cert, key} (make them with vmlink ca init and vmlink host cert), or plain: true on a trusted lab network',
      });
  });
export type OverlayConfig = z.infer<typeof overlaySchema>;

export const linkSchema = z.strictObject({
  /** Unique link name on this host (e.g. the peer's host id). */
  name: z
    .string()
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/,
      "link names are 1-32 characters: letters, digits, '_', '.', '-' (not first)",
    ),
  /** The peer's link listener, `tcp:HOST:PORT` (TCP or TLS per overlay), or a VXLAN VTEP `udp:HOST:PORT`. */
  connect: linkAddress,
  /** The link's QoS: `{ capacity: 100mbit, latency_cap?, burst? }` (docs/qos.md "Links"). */
  qos: linkQosSchema.optional(),
});
export type LinkConfig = z.infer<typeof linkSchema>;
