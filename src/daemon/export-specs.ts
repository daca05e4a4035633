/**
 * Conversions between `exports:` entries (config and API bodies) and what
 * the storage layer and the API need: backend specs, access policies, the
 * API view of an export and the QEMU arguments of a disk served by it.
 */
import { BlockList, isIPv4 } from 'node:net';
import type { DiskArgsView, ExportView, StorageStatusView } from '../api/client.js';
import type { BackendConfig, ExportConfig } from '../config/schema.js';
import type { BackendSpec } from '../storage/backends/index.js';
import type { NbdExport } from '../storage/exports.js';
import { IoStats } from '../storage/io-stats.js';
import { formatAddress } from '../util/address.js';
import { StorageUnavailableError } from './errors.js';
import { shellQuote } from './qemu-args.js';

export type Source = 'config' | 'api';

/** One export as the daemon tracks it; `exp` is set while it is served. */
export interface ExportEntry {
  name: string;
  source: Source;
  spec: ExportConfig;
  /** The export as given: the API body, or the config entry in text form. */
  raw: Record<string, unknown>;
  /** Why it is down, or where it is served. */
  reason: string;
  exp: NbdExport | undefined;
}

/** What the views below read of the storage service (StorageService implements it). */
export interface ExportServer {
  unixSocket(): string | undefined;
  tcpAddress(): { host: string; port: number } | undefined;
  status(): Pick<StorageStatusView, 'reason'>;
  tlsClient(tlsOnly: boolean): { dir: string; hostname: string } | undefined;
}

/**
 * `config` backend -> the storage layer's spec. `within`: real paths of
 * `storage.roots`, which file images are checked against once open.
 */
export function backendSpec(b: BackendConfig, readOnly: boolean, within?: readonly string[]): BackendSpec {
  switch (b.type) {
    case 'file':
      // A read-only export opens its image read-only, unless it is to be created.
      return {
        kind: 'file',
        path: b.path,
        size: b.size,
        readOnly: readOnly && b.size === undefined,
        ...(within ? { within } : {}),
      };
    case 'memory':
      return { kind: 'memory', size: b.size };
    case 'remote':
      return { kind: 'remote', address: b.address, export: b.export, readOnly };
    case 'cow':
      return {
        kind: 'cow',
        base: backendSpec(b.base, true, within),
        overlay: backendSpec(b.overlay, false, within),
        blockSize: b.block_size,
        bitmapPath: b.bitmap_path,
      };
  }
}

/** A parsed backend back in the text form of the config (addresses as `tcp:HOST:PORT`). */
export function rawBackend(b: BackendConfig): Record<string, unknown> {
  if (b.type === 'remote') return { ...b, address: formatAddress(b.address) };
  if (b.type === 'cow') return { ...b, base: rawBackend(b.base), overlay: rawBackend(b.overlay) };
  return { ...b };
}

/** The policy function for `allowed_clients` (IPv4-mapped IPv6 peers match IPv4 rules). */
export function clientPolicy(allowed: readonly string[] | undefined): ((a: string | undefined) => boolean) | undefined {
  if (allowed === undefined) return undefined;
  const list = new BlockList();
  for (const item of allowed) {
    const [addr, prefix] = item.split('/') as [string, string | undefined];
    const type = isIPv4(addr) ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(prefix), type);
  }
  return (address) => {
    if (address === undefined) return true;
    const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    if (v4 !== undefined) return list.check(v4, 'ipv4');
    return list.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  };
}

/** QEMU option syntax: a comma inside a value is written as two commas. */
const qemuValue = (v: string): string => v.replaceAll(',', ',,');

/** A QEMU node/device id for an export: its name when that is one, else `nbd-NAME`. */
export function defaultDiskId(name: string): string {
  return /^[A-Za-z]/.test(name) ? name : `nbd-${name}`;
}

/** The I/O statistics shown for an export that is down: all zeros. */
const IDLE = new IoStats();

/** The API view of an export. */
export function exportView(e: ExportEntry, service: ExportServer): ExportView {
  const s = e.exp?.stats;
  const uri = exportUri(e.name, service);
  return {
    name: e.name,
    source: e.source,
    state: e.exp ? 'up' : 'down',
    reason: e.reason,
    backend: rawBackend(e.spec.backend),
    size: e.exp ? e.exp.backend.size : null,
    read_only: e.exp ? e.exp.readOnly : e.spec.read_only,
    weight: e.spec.weight,
    description: e.spec.description ?? '',
    ...(e.spec.allowed_clients === undefined ? {} : { allowed_clients: e.spec.allowed_clients }),
    ...(e.spec.tls_only ? { tls_only: true } : {}),
    clients: s?.clients ?? 0,
    counters: {
      requests: s?.requests ?? 0,
      errors: s?.errors ?? 0,
      bytes_read: s?.bytesRead ?? 0,
      bytes_written: s?.bytesWritten ?? 0,
    },
    io: (s?.io ?? IDLE).view(),
    uri,
    spec: e.raw,
  };
}

/** Where a client reaches the export: the unix socket if there is one, else the first TCP address. */
function exportUri(name: string, service: ExportServer): string | null {
  const sock = service.unixSocket();
  if (sock !== undefined) return `nbd+unix:///${encodeURIComponent(name)}?socket=${sock}`;
  const tcp = service.tcpAddress();
  if (tcp === undefined) return null;
  const host = tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host;
  return `nbd://${host}:${tcp.port}/${encodeURIComponent(name)}`;
}

/**
 * QEMU arguments for a virtio-blk disk served by this daemon: QEMU's NBD
 * client (`-blockdev driver=nbd`) over the unix socket (else TCP), and the
 * device in front of it.
 */
export function diskArgs(e: ExportEntry, service: ExportServer, id?: string): DiskArgsView {
  const node = id ?? defaultDiskId(e.name);
  const sock = service.unixSocket();
  const tcp = service.tcpAddress();
  let server: string;
  if (sock !== undefined) server = `server.type=unix,server.path=${qemuValue(sock)}`;
  else if (tcp !== undefined) server = `server.type=inet,server.host=${qemuValue(tcp.host)},server.port=${tcp.port}`;
  else throw new StorageUnavailableError(service.status().reason ?? 'it listens nowhere');
  const readOnly = e.exp ? e.exp.readOnly : e.spec.read_only;
  // TLS (storage.tls): QEMU's x509 client credentials, and the name to check the certificate against
  // (QEMU cannot guess one for a unix socket).
  const tls = service.tlsClient(e.spec.tls_only ?? false);
  const tlsOpts = tls ? `,tls-creds=vmlink-tls,tls-hostname=${qemuValue(tls.hostname)}` : '';
  const blockdev = `driver=nbd,node-name=${node},${server},export=${qemuValue(e.name)}${tlsOpts}${readOnly ? ',read-only=on' : ''}`;
  const args = ['-blockdev', blockdev, '-device', `virtio-blk-pci,drive=${node},id=${node}-dev`];
  if (tls) args.unshift('-object', `tls-creds-x509,id=vmlink-tls,dir=${qemuValue(tls.dir)},endpoint=client`);
  return { args, command: shellQuote(args) };
}
