/**
 * Storage defaults and warnings about exposure: where export files may lie
 * by default, how much memory exports may declare by default, and the loud
 * warnings for NBD served over plain TCP to any client.
 */
import { totalmem } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { type Address, formatAddress } from '../util/address.js';

/** The default `storage.roots`: `<state_dir>/exports`. */
export function defaultRoot(stateDir: string): string {
  return join(stateDir, 'exports');
}

/** The default `storage.memory_limit`: a quarter of the host's RAM, in whole MiB. */
export function defaultMemoryLimit(): number {
  return Math.floor(totalmem() / 4 / 2 ** 20) * 2 ** 20;
}

/** TCP listen addresses without TLS (`tls` false): the ones anyone who reaches them may use; empty with TLS. */
export function plainTcp(addresses: readonly Address[], tls: boolean): string[] {
  if (tls) return [];
  return addresses.filter((a) => a.type === 'tcp').map(formatAddress);
}

/**
 * At start, with plain TCP listeners: one warning naming the exports
 * without allowed_clients (`open`), unless every admitted export has them.
 */
export function warnPlainTcp(log: Logger, tcp: readonly string[], open: readonly string[], admitted: number): void {
  if (tcp.length === 0 || (admitted > 0 && open.length === 0)) return;
  const who = open.length
    ? `exports ${open.map((n) => `"${n}"`).join(', ')} have no allowed_clients, so anyone who reaches the port reads and writes them`
    : 'every export added without allowed_clients is open to anyone who reaches the port';
  log.warn(
    { listen: tcp, exports: open },
    `NBD OVER PLAIN TCP on ${tcp.join(', ')} (no storage.tls): no encryption, no authentication; ${who}. ` +
      'Use this on a trusted network only, or add storage.tls or allowed_clients.',
  );
}

/** An export added without allowed_clients while plain TCP listeners run. */
export function warnOpenExport(log: Logger, name: string, tcp: readonly string[]): void {
  if (tcp.length === 0) return;
  log.warn(
    { export: name, listen: tcp },
    `EXPORT "${name}" IS OPEN TO ANY TCP CLIENT on ${tcp.join(', ')}: no storage.tls and no allowed_clients, so anyone who reaches the port reads and writes it. Add allowed_clients to the export or tls to storage.`,
  );
}
