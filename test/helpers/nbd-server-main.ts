/**
 * Standalone NBD server process (tests, benchmarks, debugging):
 *
 *   node dist/test/helpers/nbd-server-main.js '{"listen":["unix:/tmp/n.sock"],
 *     "exports":[{"name":"disk","backend":{"kind":"file","path":"/tmp/d.img","size":1048576}}]}'
 *
 * Optional `"tls":{"cert":"/p/server-cert.pem","key":"/p/server-key.pem","ca":"/p/ca-cert.pem",
 * "verifyClients":true,"mode":"required"}`.
 *
 * Prints one line `READY <addresses as JSON>` on stdout once listening.
 * SIGTERM/SIGINT close gracefully (in-flight requests answered, backends flushed).
 */

import { createLogger } from '../../src/log.js';
import { type BackendSpec, openBackend } from '../../src/storage/backends/index.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { createNbdServer } from '../../src/storage/nbd/server.js';
import { loadNbdTls, type NbdTlsFiles } from '../../src/storage/nbd/tls.js';
import { type Address, parseAddress } from '../../src/util/address.js';

interface MainConfig {
  listen: string[];
  exports: {
    name: string;
    backend: BackendSpec;
    description?: string;
    readOnly?: boolean;
    weight?: number;
    tlsOnly?: boolean;
  }[];
  maxInFlightPerClient?: number;
  concurrency?: number;
  /** `{ cert, key, ca?, verifyClients?, mode? }`: PEM paths (see tls.ts). */
  tls?: NbdTlsFiles;
}

/** Turns `address` strings inside backend specs into Address objects. */
function fixSpec(spec: BackendSpec): BackendSpec {
  if (spec.kind === 'remote' && typeof spec.address === 'string') return { ...spec, address: addr(spec.address) };
  if (spec.kind === 'cow') return { ...spec, base: fixSpec(spec.base), overlay: fixSpec(spec.overlay) };
  return spec;
}

function addr(text: string): Address {
  const a = parseAddress(text, ['tcp', 'unix']);
  if (typeof a === 'string') throw new Error(a);
  return a;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as MainConfig;
  const logger = createLogger({ base: { component: 'nbd' } });
  const exports = new ExportRegistry();
  for (const e of cfg.exports ?? []) exports.add({ ...e, backend: await openBackend(fixSpec(e.backend)) });
  const server = createNbdServer({
    logger,
    exports,
    listen: (cfg.listen ?? []).map(addr),
    maxInFlightPerClient: cfg.maxInFlightPerClient,
    concurrency: cfg.concurrency,
    tls: cfg.tls ? await loadNbdTls(cfg.tls) : undefined,
  });
  await server.open();
  process.stdout.write(`READY ${JSON.stringify(server.addresses())}\n`);
  const stop = async (): Promise<void> => {
    await server.close();
    await exports.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`nbd server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
