/** `vmlink export add|list|show|delete` and `vmlink disk-args`. */
import type { Command } from 'commander';
import type { ExportBody, ExportView } from '../api/client.js';
import { parseSize } from '../config/schema.js';
import { addressArg, choiceArg, numberArg, UsageError } from './args.js';
import { defineAction, type Opts } from './context.js';
import {
  displayValue,
  flatten,
  formatJson,
  formatPairs,
  formatTable,
  print,
  printLibvirt,
  styleState,
} from './output.js';

/** Backend types the CLI can add (cow: through the config file or the API). */
export const BACKEND_TYPES = ['file', 'memory', 'remote'] as const;
type BackendType = (typeof BACKEND_TYPES)[number];

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Backend flags (commander's key -> the flag as typed) and the types that take each. */
const BACKEND_FLAGS: Record<string, { flag: string; types: readonly BackendType[] }> = {
  path: { flag: '--path', types: ['file'] },
  size: { flag: '--size', types: ['file', 'memory'] },
  address: { flag: '--address', types: ['remote'] },
  export: { flag: '--export', types: ['remote'] },
};

/** A size flag checked locally; the text goes to the daemon as given (so `1G` is stored as written). */
function sizeArg(flag: string, text: string): string {
  const n = parseSize(text);
  if (typeof n === 'string') throw new UsageError(`${flag} ${n}`);
  return text;
}

/** The `backend` object of the body for `--backend TYPE`; refuses flags the type does not take. */
function backendFields(type: BackendType, opts: Opts): Record<string, unknown> {
  for (const [key, { flag, types }] of Object.entries(BACKEND_FLAGS)) {
    if (opts[key] !== undefined && !types.includes(type)) {
      const takes = Object.values(BACKEND_FLAGS)
        .filter((f) => f.types.includes(type))
        .map((f) => f.flag);
      throw new UsageError(`${flag} is not for --backend ${type} (it takes ${takes.join(', ')})`);
    }
  }
  const b: Record<string, unknown> = { type };
  if (type === 'file') {
    const path = String(opts['path'] ?? '');
    if (!path.startsWith('/')) throw new UsageError(`--backend file needs --path /absolute/image.raw (got "${path}")`);
    b['path'] = path;
    if (opts['size'] !== undefined) b['size'] = sizeArg('--size', String(opts['size']));
  } else if (type === 'memory') {
    if (opts['size'] === undefined) throw new UsageError('--backend memory needs --size SIZE (e.g. 64M, 1G)');
    b['size'] = sizeArg('--size', String(opts['size']));
  } else {
    if (opts['address'] === undefined) {
      throw new UsageError('--backend remote needs --address ADDR of the NBD server (unix:/path.sock, tcp:HOST:PORT)');
    }
    b['address'] = addressArg('--address', String(opts['address']), ['unix', 'tcp']);
    if (opts['export'] !== undefined) b['export'] = String(opts['export']);
  }
  return b;
}

/** Builds the `POST /v1/exports` body from `export add` options; throws UsageError for bad values. */
export function exportBody(name: string, opts: Opts): ExportBody {
  const type = choiceArg('--backend', String(opts['backend']), BACKEND_TYPES);
  const body: ExportBody = { name, backend: backendFields(type, opts) };
  if (opts['readOnly'] === true) body['read_only'] = true;
  if (opts['weight'] !== undefined) body['weight'] = numberArg('--weight', String(opts['weight']), 1e6);
  if (opts['description'] !== undefined) body['description'] = String(opts['description']);
  const allowed = (opts['allowedClient'] as string[] | undefined) ?? [];
  if (allowed.length) body['allowed_clients'] = allowed;
  return body;
}

/** Bytes as people read them: `64 MiB`, `1 GiB`, `1.5 KiB`, `512 B`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** `file /var/lib/vm1.img`, `memory`, `remote tcp:10.0.0.2:10809/disk`, `cow`. */
function backendSummary(b: Record<string, unknown>): string {
  if (b['type'] === 'file') return `file ${displayValue(b['path'])}`;
  if (b['type'] === 'remote') return `remote ${displayValue(b['address'])}${b['export'] ? `/${b['export']}` : ''}`;
  return displayValue(b['type']);
}

/** The export table: one row per export. */
export function formatExports(exports: readonly ExportView[]): string {
  return formatTable(
    [
      { header: 'NAME' },
      { header: 'BACKEND' },
      { header: 'SIZE', align: 'right' },
      { header: 'MODE' },
      { header: 'WEIGHT', align: 'right' },
      { header: 'STATE' },
      { header: 'CLIENTS', align: 'right' },
      { header: 'SOURCE' },
    ],
    exports.map((e) => [
      e.name,
      backendSummary(e.backend),
      e.size === null ? '-' : formatBytes(e.size),
      e.read_only ? 'ro' : 'rw',
      String(e.weight),
      styleState(e.state),
      String(e.clients),
      e.source,
    ]),
  );
}

/** Everything about one export. */
export function formatExport(e: ExportView): string {
  const pairs: [string, string][] = [
    ['name', e.name],
    ['source', e.source],
    ['state', styleState(e.state)],
    ['reason', e.reason],
    ['size', e.size === null ? '-' : `${formatBytes(e.size)} (${e.size} bytes)`],
    ['mode', e.read_only ? 'read-only' : 'read-write'],
    ['weight', String(e.weight)],
    ['description', e.description || '-'],
    ['allowed clients', e.allowed_clients ? e.allowed_clients.join(', ') : 'any'],
    ['uri', e.uri ?? '-'],
    ['clients', String(e.clients)],
    ['backend', ''],
    ...flatten(e.backend).map(([k, v]): [string, string] => [`  ${k}`, v]),
    ['counters', ''],
    ['  requests', String(e.counters.requests)],
    ['  errors', String(e.counters.errors)],
    ['  read', `${e.counters.bytes_read} bytes`],
    ['  written', `${e.counters.bytes_written} bytes`],
    ['  in flight', `${e.io.in_flight} (max ${e.io.max_in_flight})`],
    ...ioLines(e.io),
  ];
  return formatPairs(pairs);
}

/** Under `operations`, one line per operation used: requests, errors, mean and the bucket bounds of the median and 99th percentile. */
function ioLines(io: ExportView['io']): [string, string][] {
  const out: [string, string][] = [['operations', Object.values(io.ops).some((v) => v.requests > 0) ? '' : 'none yet']];
  for (const [op, v] of Object.entries(io.ops)) {
    if (v.requests === 0) continue;
    const mean = formatSeconds(v.seconds / v.requests);
    const p50 = quantileBound(v.buckets, io.latency_bounds_seconds, 0.5);
    const p99 = quantileBound(v.buckets, io.latency_bounds_seconds, 0.99);
    out.push([`  ${op}`, `${v.requests} requests, ${v.errors} errors, mean ${mean}, p50 <= ${p50}, p99 <= ${p99}`]);
  }
  return out;
}

/** The upper bound of the bucket holding quantile `q` (a histogram only knows that much). */
function quantileBound(buckets: readonly number[], bounds: readonly number[], q: number): string {
  const total = buckets.reduce((a, b) => a + b, 0);
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i] as number;
    if (seen >= q * total) return i < bounds.length ? formatSeconds(bounds[i] as number) : 'inf';
  }
  return 'inf';
}

function formatSeconds(s: number): string {
  if (s >= 1) return `${Number(s.toPrecision(3))}s`;
  if (s >= 0.001) return `${Number((s * 1000).toPrecision(3))}ms`;
  return `${Number((s * 1e6).toPrecision(3))}us`;
}

export function addExportCommands(program: Command, done: (code: number) => void): void {
  const exp = program.command('export').description('add, list, show and delete NBD exports (block devices for VMs)');

  const add = exp
    .command('add')
    .description('add an export and serve it over NBD')
    .argument('<name>', 'export name (1-64 letters, digits, _ . -)')
    .requiredOption('--backend <type>', `where the bytes live: ${BACKEND_TYPES.join('|')}`)
    .option('--path <file>', 'file: raw image (absolute path; created with --size when missing)')
    .option('--size <size>', 'file: size to create the image with; memory: device size (bytes, or 64M, 1G, ...)')
    .option('--address <addr>', 'remote: the NBD server holding the data (unix:/path.sock, tcp:HOST:PORT)')
    .option('--export <name>', "remote: export name on that server (default: the server's default export)")
    .option('--read-only', 'serve read-only (writes fail with EPERM)')
    .option('--weight <N>', 'share of backend service relative to other exports (default 1)')
    .option('--description <text>', 'shown to NBD clients that list exports')
    .option('--allowed-client <addr/cidr>', 'TCP clients allowed, repeatable (unix clients always are)', collect)
    .option('--json', 'print the added export as JSON');
  defineAction(add, done, async ([name], opts, cli) => {
    const e = await cli.client.addExport(exportBody(name as string, opts));
    const size = e.size === null ? '' : `, ${formatBytes(e.size)}`;
    print(
      opts['json']
        ? formatJson(e)
        : `export "${e.name}" added (${backendSummary(e.backend)}${size}${e.read_only ? ', read-only' : ''})\n`,
    );
    return 0;
  });

  const list = exp.command('list').description('list exports').option('--json', 'print the API answer as JSON');
  defineAction(list, done, async (_args, opts, cli) => {
    const exports = await cli.client.listExports();
    print(opts['json'] ? formatJson({ exports }) : formatExports(exports));
    return 0;
  });

  const show = exp
    .command('show')
    .description('show one export: backend, size, clients, I/O counters')
    .argument('<name>', 'export name')
    .option('--json', 'print the API answer as JSON');
  defineAction(show, done, async ([name], opts, cli) => {
    const e = await cli.client.getExport(name as string);
    print(opts['json'] ? formatJson({ export: e }) : formatExport(e));
    return 0;
  });

  const del = exp
    .command('delete')
    .description('stop serving an export and close its backend (exports from the config file stay)')
    .argument('<name>', 'export name');
  defineAction(del, done, async ([name], _opts, cli) => {
    await cli.client.deleteExport(name as string);
    print(`export "${name}" deleted\n`);
    return 0;
  });

  const args = program
    .command('disk-args')
    .description('print the QEMU arguments for a virtio-blk disk served by an export (one shell-quoted line)')
    .argument('<export>', 'export name')
    .option(
      '--id <node-id>',
      'the -blockdev node name and device id prefix (default: the export name); with --libvirt the device alias ua-ID',
    )
    .option('--libvirt', "print libvirt's <disk type='network'> element instead (domain XML)")
    .option('--dev <vdX>', 'with --libvirt: the virtio target device (default vda)')
    .option('--json', 'print {args, command} (with --libvirt: {xml, notes}) as JSON');
  defineAction(args, done, async ([name], opts, cli) => {
    if (opts['dev'] !== undefined && !opts['libvirt']) throw new UsageError('--dev goes with --libvirt');
    if (opts['libvirt']) {
      const dev = opts['dev'] as string | undefined;
      const x = await cli.client.exportLibvirtXml(name as string, opts['id'] as string | undefined, dev);
      printLibvirt(x, opts['json'] === true);
      return 0;
    }
    const d = await cli.client.diskArgs(name as string, opts['id'] as string | undefined);
    print(opts['json'] ? formatJson(d) : `${d.command}\n`);
    return 0;
  });
}
