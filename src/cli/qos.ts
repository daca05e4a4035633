/** `vmlink qos request|show`: what a VM asks of its port, and what it gets. */
import type { Command } from 'commander';
import type { QosView } from '../api/client.js';
import { formatRate, parseRate } from '../config/qos-schema.js';
import { parseSize } from '../config/storage-schema.js';
import { QOS_CLASSES } from '../qos/names.js';
import { choiceArg, intArg, UsageError } from './args.js';
import { defineAction } from './context.js';
import { formatJson, formatTable, print } from './output.js';

/** A rate flag, checked here so a typo is a usage error; sent as typed (the daemon parses it again). */
function rateArg(flag: string, text: string): string {
  const r = parseRate(text);
  if (typeof r === 'string') throw new UsageError(`${flag} ${r}`);
  return text;
}

/**
 * `--capacity`, `--latency-cap`, `--burst` of `link add` as the `qos` of the
 * request body, or undefined when none is given.
 */
export function linkQosArgs(opts: Record<string, unknown>): Record<string, unknown> | undefined {
  const q: Record<string, unknown> = {};
  if (opts['capacity'] !== undefined) q['capacity'] = rateArg('--capacity', String(opts['capacity']));
  if (opts['latencyCap'] !== undefined) q['latency_cap'] = rateArg('--latency-cap', String(opts['latencyCap']));
  if (opts['burst'] !== undefined) {
    const b = parseSize(String(opts['burst']));
    if (typeof b === 'string') throw new UsageError(`--burst ${b}`);
    q['burst'] = b;
  }
  if (Object.keys(q).length === 0) return undefined;
  if (q['capacity'] === undefined) throw new UsageError('--latency-cap and --burst shape a link: give --capacity too');
  return q;
}

/** The table of one shaped egress's flows. */
function flowTable(e: NonNullable<QosView['ports'][number]['egress']>): string {
  return formatTable(
    [
      { header: 'SOURCE' },
      { header: 'CLASS' },
      { header: 'WEIGHT', align: 'right' },
      { header: 'MIN', align: 'right' },
      { header: 'RATE', align: 'right' },
      { header: 'FRAMES', align: 'right' },
      { header: 'DROPS', align: 'right' },
      { header: 'QUEUED', align: 'right' },
    ],
    e.flows.map((f) => [
      f.source,
      f.class,
      String(f.weight),
      f.min ? formatRate(f.min) : '-',
      formatRate(f.rate),
      String(f.frames),
      String(f.drops),
      String(f.queued),
    ]),
  );
}

/** `qos show` as text: one line per port, then one table per shaped port and per shaped link. */
export function formatQos(v: QosView): string {
  const rate = (bits: number) => formatRate(bits);
  const policy = (p: Record<string, unknown>) =>
    Object.entries(p)
      .map(([k, x]) => `${k}=${String(x)}`)
      .join(' ') || '-';
  let out = formatTable(
    [
      { header: 'PORT' },
      { header: 'POLICY' },
      { header: 'RX', align: 'right' },
      { header: 'TX', align: 'right' },
      { header: 'POLICED', align: 'right' },
      { header: 'QUEUE-FULL', align: 'right' },
    ],
    v.ports.map((p) => [
      p.name,
      policy(p.policy),
      rate(p.rx_rate),
      rate(p.tx_rate),
      String(p.drops.police),
      String(p.drops.queue_full),
    ]),
  );
  for (const p of v.ports) {
    if (!p.egress) continue;
    const e = p.egress;
    out += `\nshaped egress of ${p.name}: capacity ${rate(e.capacity)}, latency cap ${rate(e.latency_cap)}, reserved ${rate(e.reserved)}\n`;
    out += flowTable(e);
  }
  for (const l of v.links ?? []) {
    const e = l.egress;
    out +=
      `\nshaped link ${l.name} (${l.networks.join(', ') || 'no network'}): capacity ${rate(e.capacity)}, ` +
      `latency cap ${rate(e.latency_cap)}, reserved ${rate(e.reserved)}, sent ${rate(l.tx_rate)}\n`;
    out += flowTable(e);
  }
  return out;
}

export function addQosCommands(program: Command, done: (code: number) => void): void {
  const qos = program.command('qos').description('quality of service: rates, reservations, classes (docs/qos.md)');
  const request = qos
    .command('request')
    .description('ask for QoS on a port: admitted and applied, or refused with the reason (nothing changed)')
    .argument('<port>', 'port name')
    .option('--min <rate>', 'reservation: guaranteed minimum, e.g. 200mbit')
    .option('--max <rate>', 'rate limit (ingress policing), e.g. 1gbit')
    .option('--burst <bytes>', 'policing burst, e.g. 256K')
    .option('--weight <n>', 'DWRR weight 1-1000 on shaped ports')
    .option('--class <class>', `highest class, and the class of unmarked frames: ${QOS_CLASSES.join(', ')}`)
    .option('--no-trust', 'ignore the guest PCP/DSCP marks')
    .option('--json', 'print the API answer as JSON');
  defineAction(request, done, async ([port], opts, cli) => {
    const body: Record<string, unknown> = {};
    if (opts['min'] !== undefined) body['min'] = rateArg('--min', String(opts['min']));
    if (opts['max'] !== undefined) body['max'] = rateArg('--max', String(opts['max']));
    if (opts['burst'] !== undefined) {
      const b = parseSize(String(opts['burst']));
      if (typeof b === 'string') throw new UsageError(`--burst ${b}`);
      body['burst'] = b;
    }
    if (opts['weight'] !== undefined) body['weight'] = intArg('--weight', String(opts['weight']), 1, 1000);
    if (opts['class'] !== undefined) body['class'] = choiceArg('--class', String(opts['class']), QOS_CLASSES);
    if (opts['trust'] === false) body['trust'] = false;
    if (Object.keys(body).length === 0)
      throw new UsageError('give at least one of --min, --max, --burst, --weight, --class, --no-trust');
    const p = await cli.client.qosRequest(port as string, body);
    const policy = Object.entries(p.policy).map(([k, x]) => `${k}=${String(x)}`);
    print(opts['json'] ? formatJson({ port: p }) : `admitted: port ${p.name} ${policy.join(' ')}\n`);
    return 0;
  });
  const show = qos
    .command('show')
    .description('per port and class: configured versus measured rates (last second) and drops')
    .option('--json', 'print the API answer as JSON');
  defineAction(show, done, async (_args, opts, cli) => {
    const v = await cli.client.qos();
    print(opts['json'] ? formatJson(v) : formatQos(v));
    return 0;
  });
}
