/**
 * `npm run bench`: runs the benchmark scenarios, each side by side with its
 * peer in the same run, writes bench/results/<scenario>-<time>.json and the
 * summary table in BENCHMARKS.md.
 *
 *   node dist/bench/run.js [--seconds S] [--repeat N] [--pin] [--only stream,vde,tap,vhost,nbd,qos,linkqos,overlay,latency]
 */
import { parseArgs } from 'node:util';
import { latencyScenario } from './latency.js';
import { linkQosScenario } from './link-qos.js';
import { nbdScenario } from './nbd.js';
import { overlayScenario } from './overlay.js';
import { qosScenario } from './qos.js';
import { streamScenario } from './stream.js';
import { tapScenario } from './tap.js';
import type { ScenarioResult } from './types.js';
import { writeResult } from './util.js';
import { vdeScenario } from './vde.js';
import { vhostScenario } from './vhost.js';

const root = new URL('../..', import.meta.url).pathname;

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    repeat: { type: 'string', default: '3' },
    pin: { type: 'boolean', default: false },
    only: { type: 'string', default: 'stream,vde,tap,vhost,nbd,qos,linkqos,overlay,latency' },
  },
});
const seconds = Number(values.seconds);
const repeat = Number(values.repeat);
if (!(seconds > 0) || !Number.isInteger(repeat) || repeat < 1) {
  console.error('usage: run.js [--seconds S>0] [--repeat N>=1] [--pin]');
  process.exit(2);
}

const only = new Set(values.only.split(','));
const pin = values.pin === true;
const results: ScenarioResult[] = [];
if (only.has('stream')) results.push(await streamScenario({ root, seconds, repeat, pin }));
// The VDE comparison is always pinned: the switch under test alone on one core, generator and sink on the other.
if (only.has('vde')) results.push(await vdeScenario({ root, seconds, repeat, pin: true }));
if (only.has('tap')) results.push(await tapScenario({ root, seconds, repeat, pin }));
if (only.has('vhost')) results.push(await vhostScenario({ root, seconds, repeat, pin }));
if (only.has('nbd')) results.push(await nbdScenario({ repeat }));
// QoS rates are measured over 5 s at least (the rate-limit target is stated over 5 s).
if (only.has('qos')) results.push(await qosScenario({ root, seconds: Math.max(5, seconds) }));
if (only.has('linkqos')) results.push(await linkQosScenario({ root, seconds: Math.max(5, seconds) }));
if (only.has('overlay')) results.push(await overlayScenario({ root, seconds, repeat, mtu: 1500 }));
if (only.has('latency')) results.push(await latencyScenario({ root, count: 2000 }));

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
for (const r of results) writeResult(root, r, stamp);
